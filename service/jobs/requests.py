"""What each job kind asks for, read from a request body in Ollama's field names.

The Ollama face, the native /jobs face and a batch file's lines all hand a body to one of
these classes; the OpenAI face builds them from its own fields. Every bad field is a 400
naming it. `to_job()` is the JSON a worker receives (through the job row, not the broker).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from service.core import fields
from service.core.errors import InvalidRequest
from service.core.settings import parse_keep_alive
from service.jobs.schemas import check_schema
from service.jobs.tools import message_tool_fields, name_tool_turns, read_tool_choice, read_tools
from service.models.modelfile import coerce_options
from service.models.names import parse_name
from service.models.registry import is_url

ROLES = ("system", "user", "assistant", "tool")
MAX_SOURCE = 255  # the job row's model column holds a pull's source


def keep_alive(body: dict[str, Any]) -> float | None:
    """keep_alive: a duration string ("5m"), seconds, 0 (unload now) or negative (forever);
    beyond a century is forever too (settings.parse_keep_alive says why)."""
    value = fields.field(body, "keep_alive", (str, int, float))
    if value is None:
        return None
    try:
        return parse_keep_alive(value)
    except ValueError:
        raise InvalidRequest(f"invalid field 'keep_alive': {value!r} is not a duration") from None


def common(body: dict[str, Any]) -> dict[str, Any]:
    """The fields every model request shares: model, options and keep_alive."""
    return {"model": fields.field(body, "model", str, required=True),
            "options": coerce_options(fields.field(body, "options", dict, {})),
            "keep_alive": keep_alive(body)}


def _format(body: dict[str, Any]) -> str | dict | None:
    value = fields.field(body, "format", (str, dict))
    if isinstance(value, str) and value not in ("", "json"):
        raise InvalidRequest("invalid field 'format': expected \"json\" or a JSON schema")
    if isinstance(value, dict):
        check_schema(value, "format")
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
    truncate: bool = True  # a prompt too long for the context loses its start; false: a 400

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> GenerateRequest:
        return cls(
            **common(body),
            prompt=fields.field(body, "prompt", str, ""),
            system=fields.field(body, "system", str),
            template=fields.field(body, "template", str),
            raw=fields.field(body, "raw", bool, False),
            stream=fields.field(body, "stream", bool, True),
            format=_format(body),
            truncate=fields.field(body, "truncate", bool, True),
        )

    def to_job(self) -> dict[str, Any]:
        return asdict(self)


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = fields.field(body, "messages", list, [])
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
        parsed.append({"role": role, "content": content,
                       **message_tool_fields(message, f"messages[{i}]")})
    return name_tool_turns(parsed)


@dataclass
class ChatRequest:
    """POST /api/chat."""

    model: str  # model name
    messages: list[dict[str, Any]] = field(default_factory=list)  # [{"role", "content"}]
    tools: list[dict[str, Any]] = field(default_factory=list)  # functions the model may call
    # "auto" (the model decides), "none", "required", or {"type": "function", "function":
    # {"name"}}; beyond Ollama, which has no tool_choice (see service.jobs.tools)
    tool_choice: str | dict[str, Any] = "auto"
    stream: bool = True  # NDJSON chunks, or one object when false
    format: str | dict | None = None  # "json" constrains output to JSON
    options: dict[str, Any] = field(default_factory=dict)  # runtime options
    keep_alive: float | None = None  # seconds to keep the model loaded after this request
    truncate: bool = True  # a prompt too long for the context loses its start; false: a 400

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ChatRequest:
        tools = read_tools(body.get("tools"))
        return cls(
            **common(body),
            messages=_messages(body),
            tools=tools,
            tool_choice=read_tool_choice(body.get("tool_choice"), tools),
            stream=fields.field(body, "stream", bool, True),
            format=_format(body),
            truncate=fields.field(body, "truncate", bool, True),
        )

    def to_job(self) -> dict[str, Any]:
        return asdict(self)


def _inputs(body: dict[str, Any]) -> list[str]:
    """`input`: one string or a list of strings; "" or [] embeds nothing (only loads the model)."""
    value = fields.field(body, "input", (str, list), "")
    if isinstance(value, str):
        return [value] if value else []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise InvalidRequest(f"invalid field 'input[{i}]': expected a non-empty string")
    return list(value)


def dimensions(body: dict[str, Any]) -> int | None:
    """`dimensions`: keep the first N dimensions of each vector; at least 1."""
    value = fields.field(body, "dimensions", int)
    if value is not None and value < 1:
        raise InvalidRequest("invalid field 'dimensions': must be at least 1")
    return value


@dataclass
class EmbedRequest:
    """POST /api/embed (and what /api/embeddings and /v1/embeddings are translated into)."""

    model: str  # model name
    input: list[str] = field(default_factory=list)  # texts to embed; one vector each, in order
    truncate: bool = True  # cut a too-long input to the context; false makes it a 400 instead
    dimensions: int | None = None  # keep the first N dimensions (re-normalised); None keeps all
    options: dict[str, Any] = field(default_factory=dict)  # runtime options, checked as elsewhere
    keep_alive: float | None = None  # seconds to keep the model loaded after this request

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> EmbedRequest:
        return cls(
            **common(body),
            input=_inputs(body),
            truncate=fields.field(body, "truncate", bool, True),
            dimensions=dimensions(body),
        )

    def to_job(self) -> dict[str, Any]:
        """The worker reads input, truncate and keep_alive; dimensions are cut by the API."""
        return {"input": self.input, "truncate": self.truncate, "options": self.options,
                "keep_alive": self.keep_alive}


@dataclass
class PullRequest:
    """POST /api/pull (Ollama's PullRequest): the model's name or a GGUF file's URL."""

    model: str  # a registry name, hf.co/<user>/<repo>[:<quant>] or https://…/file.gguf
    insecure: bool = False  # allow plain-HTTP registries
    stream: bool = True  # progress lines, or only the final one

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PullRequest:
        name = fields.field(body, "model", str) or fields.field(body, "name", str)
        if not name:
            raise InvalidRequest("missing required field 'model'")
        if len(name) > MAX_SOURCE:
            raise InvalidRequest(f"invalid field 'model': longer than {MAX_SOURCE} characters")
        if not is_url(name):
            parse_name(name)  # a bad name is a 400 now, not a failed job later
        return cls(model=name, insecure=fields.field(body, "insecure", bool, False),
                   stream=fields.field(body, "stream", bool, True))

    def to_job(self) -> dict[str, Any]:
        return {"model": self.model, "insecure": self.insecure}
