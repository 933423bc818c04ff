"""Wire shapes of the Ollama-compatible API's answers (`/api/*`), as Ollama's api/types.go
defines them; built by small functions so every handler emits identical shapes.

The requests are the job requests of service.jobs.requests: Ollama's field names are the
native ones.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def timestamp() -> str:
    """RFC 3339 with nanosecond-style precision and Z, as Ollama's created_at."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def metrics(data: dict[str, Any]) -> dict[str, int]:
    """The final object's counters and durations (nanoseconds), as the worker measured them."""
    keys = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
            "eval_count", "eval_duration")
    return {k: int(data.get(k) or 0) for k in keys}


def generate_chunk(model: str, text: str, thinking: str = "") -> dict[str, Any]:
    """A streamed piece of the answer, or of the reasoning (`thinking`, as Ollama's)."""
    extra = {"thinking": thinking} if thinking else {}
    return {"model": model, "created_at": timestamp(), "response": text, **extra, "done": False}


def generate_final(model: str, text: str, done: dict[str, Any]) -> dict[str, Any]:
    """The last line (streamed: no text) or the whole answer, with its reasoning."""
    extra = {"thinking": done["thinking"]} if done.get("thinking") else {}
    return {"model": model, "created_at": timestamp(), "response": text, **extra, "done": True,
            "done_reason": done.get("done_reason", "stop"), **metrics(done)}


def chat_chunk(model: str, text: str, thinking: str = "") -> dict[str, Any]:
    """A streamed piece of the answer, or of the reasoning (`message.thinking`)."""
    message = {"role": "assistant", "content": text, **({"thinking": thinking} if thinking else {})}
    return {"model": model, "created_at": timestamp(), "message": message, "done": False}


def chat_calls(model: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """A streamed line carrying tool calls: [{"id", "function": {"index", "name",
    "arguments": {...}}}], as Ollama streams them."""
    return {"model": model, "created_at": timestamp(),
            "message": {"role": "assistant", "content": "", "tool_calls": calls}, "done": False}


def chat_final(model: str, text: str, done: dict[str, Any]) -> dict[str, Any]:
    """The last line (streamed) or the whole answer; the latter carries the tool calls, and
    done_reason stays "stop" after calls, as Ollama's does."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if done.get("thinking"):
        message["thinking"] = done["thinking"]
    if done.get("tool_calls"):
        message["tool_calls"] = done["tool_calls"]
    return {"model": model, "created_at": timestamp(), "message": message, "done": True,
            "done_reason": done.get("done_reason", "stop"), **metrics(done)}


def model_entry(model) -> dict[str, Any]:
    """One model in GET /api/tags."""
    name = model.name.display()
    entry = {
        "name": name,
        "model": name,
        "modified_at": model.modified_at.isoformat().replace("+00:00", "Z"),
        "size": model.size,
        "digest": model.digest,
        "details": model.details(),
    }
    try:
        entry["capabilities"] = model.capabilities()
    except (ValueError, OSError):
        pass  # unreadable weights: listed without capabilities (omitempty), as /api/show fails
    return entry
