"""Wire shapes of OpenAI's Responses API (`POST /v1/responses`), text only.

A request becomes the chat job /v1/chat/completions queues (a ChatRequest, plus the
`instructions` it was given, so a later turn can leave them out as OpenAI does). Unlike
/v1/chat/completions, a field this face does not know is a 400 naming it, as OpenAI's own
Responses endpoint answers: a client that sends `tools` or `background` must hear that they
did nothing. Answers are built by responses_reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.core.errors import CorralError
from service.http.openai.types import InvalidParam, param
from service.jobs.records import Job, JobStatus
from service.jobs.requests import ChatRequest, check_schema
from service.models.modelfile import INT32

# Request fields read:
#   model                  model name (404 model_not_found if absent)
#   input                  a string (one user message) or message items: {"role", "content"}
#                          with content a string or input_text / output_text parts
#   instructions           a system message put first; not carried to a next turn
#   previous_response_id   "resp_<job id>": that turn's messages and answer come first
#   max_output_tokens      cap on generated tokens (Ollama num_predict)
#   temperature, top_p     sampling, 0..2 and 0..1; default 1 and 1 (OpenAI's defaults)
#   stream                 Server-Sent Events, response.created ... response.completed
#   text                   {"format": {"type": "text" | "json_object" | "json_schema", ...}}
#   truncation             "auto" (default here, as Ollama) or "disabled": too long is a 400
#   metadata, store, user, parallel_tool_calls, tool_choice ("auto"/"none"), reasoning,
#   include, stream_options, safety_identifier, prompt_cache_key, service_tier,
#   max_tool_calls         accepted and echoed; they change nothing here (every job is stored)
#   tools, background, conversation, prompt, top_logprobs: refused with a 400 when set
ECHOED = ("metadata", "store", "user", "parallel_tool_calls", "tool_choice", "reasoning",
          "include", "stream_options", "safety_identifier", "prompt_cache_key",
          "service_tier", "max_tool_calls")
READ = ("model", "input", "instructions", "previous_response_id", "max_output_tokens",
        "temperature", "top_p", "stream", "text", "truncation")
REFUSED = {"tools": "tools on /v1/responses are not supported yet",
           "background": "background responses are not supported",
           "conversation": "conversations are not supported (use previous_response_id)",
           "prompt": "prompt templates are not supported",
           "top_logprobs": "logprobs are not supported"}
ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
TEXT_PARTS = ("input_text", "output_text")
PREFIX = "resp_"


@dataclass
class ResponseChat(ChatRequest):
    """The chat job of one /v1/responses request."""

    instructions: str | None = None  # the system message `instructions` put first, if any


@dataclass
class ResponsesRequest:
    """A /v1/responses request translated: the job to queue and what the answer echoes."""

    job: ResponseChat  # what the worker runs (messages still without an earlier turn's)
    stream: bool  # Server-Sent Events, or one Response object
    previous: str | None  # previous_response_id, to be looked up before queueing
    echo: dict[str, Any] = field(default_factory=dict)  # request fields the Response repeats


def _check_fields(body: dict[str, Any]) -> None:
    """400 for a field this face does not know, or one it knows but cannot honour."""
    for name, value in body.items():
        if name in REFUSED:
            if value not in (None, False, [], 0):
                raise InvalidParam(name, f"invalid field '{name}': {REFUSED[name]}")
        elif name not in READ and name not in ECHOED:
            raise InvalidParam(name, f"unknown field '{name}' (not a /v1/responses field "
                               "corral reads)")


def _bounded(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = param(body, name, float)
    if value is not None and not low <= value <= high:
        raise InvalidParam(name, f"invalid field '{name}': must be between {low:g} and {high:g}")
    return value


def _text(where: str, content: Any, role: str) -> str:
    """A message's text: a string, or its text parts joined (images and files are refused)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        parts = [p.get("text") if isinstance(p, dict) and p.get("type") in TEXT_PARTS else None
                 for p in content]
        if all(isinstance(p, str) for p in parts):
            return "".join(parts)
    raise InvalidParam(where, f"invalid field '{where}': expected a string or input_text "
                       f"parts for a {role} message (images, audio and files are not supported)")


def _item(i: int, item: Any) -> dict[str, str]:
    """One input item: a message, typed "message" or untyped (OpenAI's easy input message)."""
    where = f"input[{i}]"
    if not isinstance(item, dict):
        raise InvalidParam(where, f"invalid field '{where}': expected a message object")
    if item.get("type", "message") != "message":
        raise InvalidParam(f"{where}.type", f"invalid field '{where}.type': only message "
                           f"items are supported, not {item.get('type')!r}")
    role = item.get("role")
    role = ROLES.get(role) if isinstance(role, str) else None  # a dict is no role, nor a key
    if role is None:
        raise InvalidParam(f"{where}.role", f"invalid field '{where}.role': expected user, "
                           "system, developer or assistant")
    return {"role": role, "content": _text(f"{where}.content", item.get("content"), role)}


def _input(body: dict[str, Any]) -> list[dict[str, str]]:
    """`input`: one user message as a string, or a non-empty list of message items."""
    value = param(body, "input", (str, list), required=True)
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not value:
        raise InvalidParam("input", "invalid field 'input': expected at least one item")
    return [_item(i, item) for i, item in enumerate(value)]


def _format(body: dict[str, Any]) -> str | dict | None:
    """`text.format`: text (free), json_object ("json") or json_schema (its `schema`)."""
    text = param(body, "text", dict, {})
    value = text.get("format")
    if value is None or isinstance(value, dict) and value.get("type") == "text":
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "json_object":
        return "json"
    if kind != "json_schema":
        raise InvalidParam("text.format", "invalid field 'text.format': expected type text, "
                           "json_object or json_schema")
    if not isinstance(value.get("name"), str) or not isinstance(value.get("schema"), dict):
        raise InvalidParam("text.format", "invalid field 'text.format': a json_schema format "
                           "needs a `name` string and a `schema` object")
    try:
        check_schema(value["schema"], "text.format.schema")
    except CorralError as exc:
        raise InvalidParam("text.format.schema", exc.message) from None
    return value["schema"]


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """The Ollama options of the sampling fields; OpenAI's defaults where none is given."""
    limit = param(body, "max_output_tokens", int)
    if limit is not None and not 1 <= limit <= INT32:
        raise InvalidParam("max_output_tokens", "invalid field 'max_output_tokens': must be "
                           f"between 1 and {INT32}")
    options = {"temperature": _bounded(body, "temperature", 0, 2),
               "top_p": _bounded(body, "top_p", 0, 1), "num_predict": limit}
    return {"temperature": 1.0, "top_p": 1.0, **{k: v for k, v in options.items() if v is not None}}


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    """What the Response repeats of the request, checked where a wrong type would mislead."""
    metadata = param(body, "metadata", dict, {})
    if not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidParam("metadata", "invalid field 'metadata': values must be strings")
    choice = param(body, "tool_choice", (str, dict), "auto")
    if choice not in ("auto", "none"):
        raise InvalidParam("tool_choice", "invalid field 'tool_choice': only auto and none "
                           "(tools on /v1/responses are not supported yet)")
    return {"metadata": metadata, "store": param(body, "store", bool, True),
            "user": param(body, "user", str), "tool_choice": choice,
            "parallel_tool_calls": param(body, "parallel_tool_calls", bool, True),
            "instructions": param(body, "instructions", str),
            "max_output_tokens": param(body, "max_output_tokens", int),
            "previous_response_id": param(body, "previous_response_id", str),
            "text": {"format": param(body, "text", dict, {}).get("format") or {"type": "text"}},
            "reasoning": param(body, "reasoning", dict, {"effort": None, "summary": None})}


def responses_request(body: dict[str, Any]) -> ResponsesRequest:
    """POST /v1/responses."""
    _check_fields(body)
    truncation = param(body, "truncation", str, "auto")
    if truncation not in ("auto", "disabled"):
        raise InvalidParam("truncation", "invalid field 'truncation': expected auto or disabled")
    instructions = param(body, "instructions", str)
    system = [{"role": "system", "content": instructions}] if instructions is not None else []
    options = _options(body)
    job = ResponseChat(model=param(body, "model", str, required=True),
                       messages=system + _input(body), format=_format(body), options=options,
                       truncate=truncation == "auto", instructions=instructions)
    echo = {**_echo(body), "temperature": options["temperature"], "top_p": options["top_p"],
            "truncation": truncation}
    return ResponsesRequest(job, param(body, "stream", bool, False),
                            echo["previous_response_id"], echo)


def job_id(response_id: str) -> str:
    """The job behind a response id: "resp_<job id>"."""
    return response_id.removeprefix(PREFIX) if response_id.startswith(PREFIX) else ""


def earlier_turn(previous: Job) -> list[dict[str, Any]]:
    """The messages a previous response stands for: its own (less its instructions, which
    OpenAI does not carry over) and its answer; 400 if it has no answer to build on."""
    if previous.status not in (JobStatus.SUCCEEDED, JobStatus.CANCELLED):
        state = "has not finished" if not JobStatus(previous.status).finished else "failed"
        raise InvalidParam("previous_response_id", "invalid field 'previous_response_id': "
                           f"that response {state}")
    messages = list(previous.request.get("messages") or [])
    if previous.request.get("instructions") is not None and messages:
        messages = messages[1:]
    return [*messages, {"role": "assistant", "content": previous.output or ""}]
