"""The answers of `POST /v1/responses`: a Response object, and the events of its stream.

Shapes follow the official client's models (openai.types.responses): every field a Response
requires is present, and a stream goes response.created, response.in_progress,
response.output_item.added, response.content_part.added, response.output_text.delta (one per
chunk), response.output_text.done, response.content_part.done, response.output_item.done,
then response.completed (response.incomplete when max_output_tokens cut the answer or the
job was cancelled; response.failed when the job failed), each with its sequence_number.
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
    """Token counts as the job row records them; nothing is cached or reasoned here."""
    prompt, completion = int(done.get("prompt_eval_count") or 0), int(done.get("eval_count") or 0)
    return {"input_tokens": prompt, "output_tokens": completion,
            "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


@dataclass
class ResponseReply:
    """Builds every object of one response: they share its id, model, time and echoes."""

    job_id: str  # the job behind it: the response is "resp_<job id>", its message "msg_<job id>"
    model: str  # the model name as requested
    echo: dict[str, Any]  # request fields the Response repeats (responses_types._echo)
    created_at: int = field(default_factory=lambda: int(time.time()))
    sequence: int = 0  # the next event's sequence_number

    @property
    def id(self) -> str:
        return f"resp_{self.job_id}"

    @property
    def item_id(self) -> str:
        return f"msg_{self.job_id}"

    def response(self, status: str, output: list[dict[str, Any]] | None = None,
                 done: dict[str, Any] | None = None, *, incomplete: dict | None = None,
                 error: dict | None = None) -> dict[str, Any]:
        """The Response object in `status`; usage once the job is done."""
        finished = status in ("completed", "incomplete", "cancelled")
        return {"id": self.id, "object": "response", "created_at": self.created_at,
                "status": status, "background": False, "error": error,
                "incomplete_details": incomplete, "model": self.model, "output": output or [],
                "tools": [], "usage": usage(done) if done is not None else None,
                "completed_at": int(time.time()) if finished else None, **self.echo}

    def message(self, text: str, status: str) -> dict[str, Any]:
        """The output message item (status in_progress, completed or incomplete)."""
        content = [_part(text)] if status != "in_progress" else []
        return {"type": "message", "id": self.item_id, "status": status, "role": "assistant",
                "content": content}

    def whole(self, text: str, done: dict[str, Any]) -> dict[str, Any]:
        """The non-streamed answer of a finished job."""
        status, incomplete = STATUSES.get(done.get("done_reason", "stop"), ("completed", None))
        item_status = "completed" if status == "completed" else "incomplete"
        return self.response(status, [self.message(text, item_status)], done,
                             incomplete=incomplete)

    def event(self, kind: str, **data: Any) -> str:
        """One SSE block; `data` is JSON whose `type` is the event's name."""
        body = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(body)}\n\n"

    def opening(self) -> list[str]:
        """The events before any text: the response, then its message and its text part."""
        started = self.response("in_progress")
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        return [self.event("response.created", response=started),
                self.event("response.in_progress", response=started),
                self.event("response.output_item.added", output_index=0,
                           item=self.message("", "in_progress")),
                self.event("response.content_part.added", **where, part=_part(""))]

    def delta(self, text: str) -> str:
        return self.event("response.output_text.delta", item_id=self.item_id, output_index=0,
                          content_index=0, delta=text, logprobs=[])

    def closing(self, text: str, done: dict[str, Any]) -> list[str]:
        """The events after the last text: the part, the item and the response, finished."""
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        whole = self.whole(text, done)
        return [self.event("response.output_text.done", **where, text=text, logprobs=[]),
                self.event("response.content_part.done", **where, part=_part(text)),
                self.event("response.output_item.done", output_index=0,
                           item=whole["output"][0]),
                self.event(LAST_EVENT[whole["status"]], response=whole)]

    def failed(self, text: str, failure: CorralError) -> str:
        """response.failed: the job failed, or had to start over after text went out."""
        output = [self.message(text, "incomplete")] if text else []
        error = {"code": "server_error", "message": failure.message}
        return self.event("response.failed", response=self.response("failed", output,
                                                                    error=error))
