"""The answers of `POST /v1/responses`: a Response object, and the events of its stream.

Shapes follow the official client's models (openai.types.responses): every field a Response
requires is present. An answer's output is a list of items: a `reasoning` item for a thinking
model's reasoning, a `message` for its text, and a `function_call` per tool call, in the order
the model wrote them. A stream goes response.created, response.in_progress, then per item
response.output_item.added, its deltas (response.reasoning_text.delta,
response.output_text.delta inside a content part, response.function_call_arguments.delta)
and their .done events, response.output_item.done, and last response.completed
(response.incomplete when max_output_tokens cut the answer or the job was cancelled;
response.failed when the job failed), each event with its sequence_number.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from service.core.errors import CorralError

# worker done_reason -> (Response status, incomplete_details)
STATUSES = {"stop": ("completed", None),
            "length": ("incomplete", {"reason": "max_output_tokens"}),
            "cancel": ("cancelled", None)}
LAST_EVENT = {"completed": "response.completed", "incomplete": "response.incomplete",
              "cancelled": "response.incomplete", "failed": "response.failed"}


def usage(done: dict[str, Any]) -> dict[str, Any]:
    """Token counts as the job row records them; reasoning is counted with the output."""
    prompt, completion = int(done.get("prompt_eval_count") or 0), int(done.get("eval_count") or 0)
    return {"input_tokens": prompt, "output_tokens": completion,
            "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": int(done.get("cached_tokens") or 0)},
            "output_tokens_details": {"reasoning_tokens": 0}}


def _part(text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def _reasoning_part(text: str) -> dict[str, Any]:
    return {"type": "reasoning_text", "text": text}


def function_call(call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    """A job's tool call as a function_call item; its id follows the call's."""
    function = call["function"]
    return {"type": "function_call", "id": "fc_" + call["id"].removeprefix("call_"),
            "call_id": call["id"], "name": function["name"],
            "arguments": json.dumps(function["arguments"], ensure_ascii=False),
            "status": status}


@dataclass
class Item:
    """An output item being streamed: which kind, where, and its text so far."""

    kind: str  # "reasoning" or "message"
    index: int  # output_index
    id: str
    parts: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class ResponseReply:
    """Builds every object of one response: they share its id, model, time and echoes."""

    job_id: str  # the job behind it: the response is "resp_<job id>", its message "msg_<job id>"
    model: str  # the model name as requested
    echo: dict[str, Any]  # request fields the Response repeats (responses_types._echo)
    created_at: int = field(default_factory=lambda: int(time.time()))
    sequence: int = 0  # the next event's sequence_number
    output: list[dict[str, Any]] = field(default_factory=list)  # finished items, streamed
    open: Item | None = None  # the item whose deltas are being streamed

    @property
    def id(self) -> str:
        return f"resp_{self.job_id}"

    def response(self, status: str, output: list[dict[str, Any]] | None = None,
                 done: dict[str, Any] | None = None, *, incomplete: dict | None = None,
                 error: dict | None = None, completed_at: int | None = None) -> dict[str, Any]:
        """The Response object in `status`; usage once the job is done."""
        finished = status in ("completed", "incomplete", "cancelled")
        if finished and completed_at is None:
            completed_at = int(time.time())
        return {"id": self.id, "object": "response", "created_at": self.created_at,
                "status": status, "background": False, "error": error,
                "incomplete_details": incomplete, "model": self.model, "output": output or [],
                "usage": usage(done) if done is not None else None,
                "completed_at": completed_at if finished else None, "tools": [], **self.echo}

    def _id(self, prefix: str) -> str:
        """An item's id: "msg_<job id>", "rs_<job id>"; a second of a kind gets a suffix."""
        taken = sum(1 for item in self.output if item["id"].startswith(prefix + "_"))
        return f"{prefix}_{self.job_id}" + (f"_{taken + 1}" if taken else "")

    @staticmethod
    def message(item_id: str, text: str, status: str,
                logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A message item (status in_progress, completed or incomplete)."""
        content = [_part(text, logprobs)] if status != "in_progress" else []
        return {"type": "message", "id": item_id, "status": status, "role": "assistant",
                "content": content}

    @staticmethod
    def reasoning(item_id: str, text: str, status: str) -> dict[str, Any]:
        """A reasoning item: the thinking as reasoning_text content, no summary."""
        content = [_reasoning_part(text)] if status != "in_progress" else []
        return {"type": "reasoning", "id": item_id, "summary": [], "content": content,
                "encrypted_content": None, "status": status}

    def items(self, text: str, done: dict[str, Any], status: str) -> list[dict[str, Any]]:
        """A whole answer's items: reasoning, then the message (unless the answer is only
        calls), then the calls."""
        items = []
        if done.get("thinking"):
            items.append(self.reasoning(f"rs_{self.job_id}", done["thinking"], "completed"))
        calls = done.get("tool_calls") or []
        if text.strip() or not calls:
            items.append(self.message(f"msg_{self.job_id}", text, status, done.get("logprobs")))
        return items + [function_call(call) for call in calls]

    def whole(self, text: str, done: dict[str, Any], *, completed_at: int | None = None
              ) -> dict[str, Any]:
        """The non-streamed answer of a finished job."""
        status, incomplete = STATUSES.get(done.get("done_reason", "stop"), ("completed", None))
        item_status = "completed" if status == "completed" else "incomplete"
        return self.response(status, self.items(text, done, item_status), done,
                             incomplete=incomplete, completed_at=completed_at)

    # ---- streaming -----------------------------------------------------------------------
    def event(self, kind: str, **data: Any) -> str:
        """One SSE block; `data` is JSON whose `type` is the event's name."""
        body = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(body)}\n\n"

    def opening(self) -> list[str]:
        """The events before any output: the response, created and in progress."""
        started = self.response("in_progress")
        return [self.event("response.created", response=started),
                self.event("response.in_progress", response=started)]

    def _where(self, item: Item) -> dict[str, Any]:
        return {"item_id": item.id, "output_index": item.index, "content_index": 0}

    def _open(self, kind: str) -> list[str]:
        """Start a reasoning or message item (closing the one before it, if of another kind)."""
        if self.open is not None and self.open.kind == kind:
            return []
        events = self._close()
        item = Item(kind, len(self.output), self._id("rs" if kind == "reasoning" else "msg"))
        self.open = item
        build = self.reasoning if kind == "reasoning" else self.message
        events.append(self.event("response.output_item.added", output_index=item.index,
                                 item=build(item.id, "", "in_progress")))
        if kind == "message":
            events.append(self.event("response.content_part.added", **self._where(item),
                                     part=_part("")))
        return events

    def _close(self, status: str = "completed") -> list[str]:
        """Finish the open item: its text's .done event, its part's, then the item's."""
        item, self.open = self.open, None
        if item is None:
            return []
        where = self._where(item)
        if item.kind == "reasoning":
            whole = self.reasoning(item.id, item.text, "completed")
            events = [self.event("response.reasoning_text.done", **where, text=item.text)]
        else:
            whole = self.message(item.id, item.text, status, item.logprobs)
            events = [self.event("response.output_text.done", **where, text=item.text,
                                 logprobs=item.logprobs),
                      self.event("response.content_part.done", **where,
                                 part=whole["content"][0])]
        self.output.append(whole)
        events.append(self.event("response.output_item.done", output_index=item.index,
                                 item=whole))
        return events

    def thinking(self, text: str) -> list[str]:
        """A piece of reasoning, in the reasoning item (opened by the first)."""
        events = self._open("reasoning")
        self.open.parts.append(text)
        return [*events, self.event("response.reasoning_text.delta",
                                    **self._where(self.open), delta=text)]

    def delta(self, text: str, logprobs: list[dict[str, Any]] | None = None) -> list[str]:
        """A piece of the answer's text, in the message item (opened by the first)."""
        events = self._open("message")
        self.open.parts.append(text)
        self.open.logprobs.extend(logprobs or [])
        return [*events, self.event("response.output_text.delta", **self._where(self.open),
                                    delta=text, logprobs=logprobs or [])]

    def calls(self, calls: list[dict[str, Any]]) -> list[str]:
        """Tool calls, each a function_call item whose arguments come as one delta."""
        events = self._close()
        for call in calls:
            whole = function_call(call)
            index = len(self.output)
            where = {"item_id": whole["id"], "output_index": index}
            events += [
                self.event("response.output_item.added", output_index=index,
                           item={**function_call(call, "in_progress"), "arguments": ""}),
                self.event("response.function_call_arguments.delta", **where,
                           delta=whole["arguments"]),
                self.event("response.function_call_arguments.done", **where,
                           name=whole["name"], arguments=whole["arguments"]),
                self.event("response.output_item.done", output_index=index, item=whole)]
            self.output.append(whole)
        return events

    def closing(self, done: dict[str, Any]) -> list[str]:
        """The events after the last output: the open item finished (an empty message if
        nothing came at all), then the response."""
        status, incomplete = STATUSES.get(done.get("done_reason", "stop"), ("completed", None))
        if not self.output and self.open is None:
            events = self._open("message")
        else:
            events = []
        events += self._close("completed" if status == "completed" else "incomplete")
        whole = self.response(status, self.output, done, incomplete=incomplete)
        return [*events, self.event(LAST_EVENT[whole["status"]], response=whole)]

    def failed(self, failure: CorralError) -> str:
        """response.failed: the job failed, or had to start over after output went out."""
        if self.open is not None:
            item, self.open = self.open, None
            build = self.reasoning if item.kind == "reasoning" else self.message
            self.output.append(build(item.id, item.text, "incomplete"))
        error = {"code": "server_error", "message": failure.message}
        return self.event("response.failed", response=self.response("failed", self.output,
                                                                    error=error))
