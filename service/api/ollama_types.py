"""Wire shapes of the Ollama-compatible API (`/api/*`), as Ollama's api/types.go defines them.

Requests are parsed into dataclasses that validate every field (400 naming the field);
responses are built by small functions so every handler emits identical shapes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from service.api.fields import field as read
from service.errors import InvalidRequest
from service.modelfile import coerce_options
from service.settings import parse_duration

ROLES = ("system", "user", "assistant", "tool")


def _keep_alive(body: dict[str, Any]) -> float | None:
    """keep_alive: a duration string ("5m"), seconds, 0 (unload now) or negative (forever)."""
    value = read(body, "keep_alive", (str, int, float))
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError:
        raise InvalidRequest(f"invalid field 'keep_alive': {value!r} is not a duration") from None


def _format(body: dict[str, Any]) -> str | dict | None:
    value = read(body, "format", (str, dict))
    if isinstance(value, str) and value not in ("", "json"):
        raise InvalidRequest("invalid field 'format': expected \"json\" or a JSON schema")
    return value or None


@dataclass
class GenerateRequest:
    """POST /api/generate."""

    model: str  # model name, e.g. "smollm2:135m"
    prompt: str = ""  # the prompt; empty only loads (or with keep_alive 0 unloads) the model
    system: str | None = None  # overrides the model's SYSTEM
    template: str | None = None  # overrides the model's TEMPLATE (Go template syntax)
    raw: bool = False  # send the prompt as is, no template
    stream: bool = True  # NDJSON chunks, or one object when false
    format: str | dict | None = None  # "json" constrains output to JSON
    options: dict[str, Any] = field(default_factory=dict)  # runtime options (temperature, ...)
    keep_alive: float | None = None  # seconds to keep the model loaded after this request

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> GenerateRequest:
        return cls(
            model=read(body, "model", str, required=True),
            prompt=read(body, "prompt", str, ""),
            system=read(body, "system", str),
            template=read(body, "template", str),
            raw=read(body, "raw", bool, False),
            stream=read(body, "stream", bool, True),
            format=_format(body),
            options=coerce_options(read(body, "options", dict, {})),
            keep_alive=_keep_alive(body),
        )

    def to_job(self) -> dict[str, Any]:
        """The JSON the worker receives (through the job row, not the broker)."""
        return asdict(self)


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = read(body, "messages", list, [])
    parsed = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"invalid field 'messages[{i}]': expected an object")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(f"invalid field 'messages[{i}].role': expected one of {ROLES}")
        content = message.get("content", "")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise InvalidRequest(f"invalid field 'messages[{i}].content': expected a string")
        parsed.append({"role": role, "content": content})
    return parsed


@dataclass
class ChatRequest:
    """POST /api/chat."""

    model: str  # model name
    messages: list[dict[str, Any]] = field(default_factory=list)  # [{"role", "content"}]
    stream: bool = True  # NDJSON chunks, or one object when false
    format: str | dict | None = None  # "json" constrains output to JSON
    options: dict[str, Any] = field(default_factory=dict)  # runtime options
    keep_alive: float | None = None  # seconds to keep the model loaded after this request

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ChatRequest:
        return cls(
            model=read(body, "model", str, required=True),
            messages=_messages(body),
            stream=read(body, "stream", bool, True),
            format=_format(body),
            options=coerce_options(read(body, "options", dict, {})),
            keep_alive=_keep_alive(body),
        )

    def to_job(self) -> dict[str, Any]:
        return asdict(self)


def timestamp() -> str:
    """RFC 3339 with nanosecond-style precision and Z, as Ollama's created_at."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def metrics(data: dict[str, Any]) -> dict[str, int]:
    """The final object's counters and durations (nanoseconds), as the worker measured them."""
    keys = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
            "eval_count", "eval_duration")
    return {k: int(data.get(k) or 0) for k in keys}


def generate_chunk(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "created_at": timestamp(), "response": text, "done": False}


def generate_final(model: str, text: str, done: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "created_at": timestamp(), "response": text, "done": True,
            "done_reason": done.get("done_reason", "stop"), **metrics(done)}


def chat_chunk(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "created_at": timestamp(),
            "message": {"role": "assistant", "content": text}, "done": False}


def chat_final(model: str, text: str, done: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "created_at": timestamp(),
            "message": {"role": "assistant", "content": text}, "done": True,
            "done_reason": done.get("done_reason", "stop"), **metrics(done)}


def model_entry(model) -> dict[str, Any]:
    """One model in GET /api/tags."""
    name = model.name.display()
    return {
        "name": name,
        "model": name,
        "modified_at": model.modified_at.isoformat().replace("+00:00", "Z"),
        "size": model.size,
        "digest": model.digest,
        "details": model.details(),
    }
