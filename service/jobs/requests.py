"""What each job kind asks for, read from a request body in Ollama's field names.

The Ollama face, the native /jobs face and a batch file's lines all hand a body to one of
these classes; the OpenAI face builds them from its own fields. Every bad field is a 400
naming it. `to_job()` is the JSON a worker receives (through the job row, not the broker).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from service.core import fields
from service.core.errors import InvalidRequest
from service.core.settings import parse_keep_alive
from service.jobs.images import check_images, count_images, read_images
from service.jobs.schemas import check_schema
from service.jobs.tools import message_tool_fields, name_tool_turns, read_tool_choice, read_tools
from service.models.capabilities import INSERT, THINKING
from service.models.modelfile import coerce_options
from service.models.names import parse_name
from service.models.registry import is_url
from service.models.store import Model
from service.models.template import parsed

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


THINK_LEVELS = ("low", "medium", "high", "max")  # Ollama's ThinkValue strings


def think(body: dict[str, Any]) -> bool | str | None:
    """`think`: true or false, or a level ("low", "medium", "high"; Ollama's "max" too);
    absent leaves the template's default."""
    value = body.get("think")
    if value is None or isinstance(value, bool) or value in THINK_LEVELS:
        return value
    raise InvalidRequest("invalid field 'think': expected true, false, \"low\", \"medium\" "
                         "or \"high\"")


def check_think(value: bool | str | None, model: Model, name: str | None = None) -> None:
    """Refuse thinking asked of a model that cannot think, with Ollama's 400 naming the model
    as the request did (`name`); `think: false` is accepted by every model."""
    if value:
        _require(THINKING, model, name)


def check_insert(suffix: str | None, model: Model, name: str | None = None) -> None:
    """Refuse a `suffix` for a model whose template cannot place it, with Ollama's 400."""
    if suffix:
        _require(INSERT, model, name)


def _require(capability: str, model: Model, name: str | None) -> None:
    if capability not in model.capabilities():
        shown = name or model.name.display()
        raise InvalidRequest(f"{json.dumps(shown)} does not support {capability}")


def check_capabilities(job: dict[str, Any], model: Model, name: str | None = None) -> None:
    """Refuse what the request asks that the model cannot do (thinking, images), each with a
    400 naming the model: checked by the API before queueing, and by the worker for batch
    lines, which reach no API check."""
    check_think(job.get("think"), model, name)
    check_insert(job.get("suffix"), model, name)
    check_images(count_images(job), model, name)


def _template(body: dict[str, Any]) -> str | None:
    """`template`: parsed here, so a syntax error or an unknown function is a 400 naming the
    field before the job is queued, not a failed job."""
    text = fields.field(body, "template", str)
    if text:
        try:
            parsed(text)
        except InvalidRequest as exc:
            raise InvalidRequest(f"invalid field 'template': {exc.message}") from None
    return text


MAX_TOP_LOGPROBS = 20  # Ollama's and OpenAI's limit


def top_logprobs(body: dict[str, Any]) -> int:
    """`top_logprobs`: how many of the likeliest tokens to list at each position, 0-20 (Ollama
    ignores it unless `logprobs` is true, and so does corral)."""
    value = fields.field(body, "top_logprobs", int, 0)
    if not 0 <= value <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(f"invalid field 'top_logprobs': must be between 0 and "
                             f"{MAX_TOP_LOGPROBS}")
    return value


@dataclass
class GenerateRequest:
    """POST /api/generate."""

    model: str  # model name, e.g. "smollm2:135m"
    prompt: str = ""  # the prompt; empty only loads (or with keep_alive 0 unloads) the model
    suffix: str = ""  # text after the gap (fill-in-the-middle); 400 unless the model inserts
    system: str | None = None  # overrides the model's SYSTEM
    template: str | None = None  # overrides the model's TEMPLATE (Go template syntax)
    raw: bool = False  # send the prompt as is, no template
    stream: bool = True  # NDJSON chunks, or one object when false
    format: str | dict | None = None  # "json" constrains output to JSON
    options: dict[str, Any] = field(default_factory=dict)  # runtime options (temperature, ...)
    keep_alive: float | None = None  # seconds to keep the model loaded after this request
    truncate: bool = True  # a prompt too long for the context loses its start; false: a 400
    think: bool | str | None = None  # thinking on/off or a level; 400 if the model cannot
    logprobs: bool = False  # each output token's log probability (the model's, pre-sampling)
    top_logprobs: int = 0  # with logprobs: the N likeliest tokens at each position (0-20)
    images: list[str] = field(default_factory=list)  # base64 images (service.jobs.images)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> GenerateRequest:
        return cls(
            **common(body),
            prompt=fields.field(body, "prompt", str, ""),
            suffix=fields.field(body, "suffix", str, ""),
            system=fields.field(body, "system", str),
            template=_template(body),
            raw=fields.field(body, "raw", bool, False),
            stream=fields.field(body, "stream", bool, True),
            format=_format(body),
            truncate=fields.field(body, "truncate", bool, True),
            think=think(body),
            logprobs=fields.field(body, "logprobs", bool, False),
            top_logprobs=top_logprobs(body),
            images=read_images(body.get("images"), "images"),
        )

    def to_job(self) -> dict[str, Any]:
        return asdict(self)


def message_thinking(message: dict[str, Any], key: str, where: str) -> dict[str, str]:
    """An earlier assistant turn's reasoning (Ollama's `thinking`, OpenAI's
    `reasoning_content`), kept as `thinking` so a template shows it where it writes
    .Thinking; absent or empty gives nothing."""
    value = message.get(key)
    if value is None or value == "":
        return {}
    if not isinstance(value, str):
        raise InvalidRequest(f"invalid field '{where}.{key}': expected a string")
    return {"thinking": value}


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
        images = read_images(message.get("images"), f"messages[{i}].images")
        parsed.append({"role": role, "content": content,
                       **({"images": images} if images else {}),
                       **message_thinking(message, "thinking", f"messages[{i}]"),
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
    think: bool | str | None = None  # thinking on/off or a level; 400 if the model cannot
    logprobs: bool = False  # each output token's log probability (the model's, pre-sampling)
    top_logprobs: int = 0  # with logprobs: the N likeliest tokens at each position (0-20)

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
            think=think(body),
            logprobs=fields.field(body, "logprobs", bool, False),
            top_logprobs=top_logprobs(body),
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


def _transfer_fields(body: dict[str, Any], *, urls: bool) -> dict[str, Any]:
    """The fields of a pull or push: the model (Ollama's older `name` too), checked now so a
    bad name is a 400 and not a failed job later; a pull may also name a URL."""
    name = fields.field(body, "model", str) or fields.field(body, "name", str)
    if not name:
        raise InvalidRequest("missing required field 'model'")
    if len(name) > MAX_SOURCE:
        raise InvalidRequest(f"invalid field 'model': longer than {MAX_SOURCE} characters")
    if not (urls and is_url(name)):
        parse_name(name)
    return {"model": name, "insecure": fields.field(body, "insecure", bool, False),
            "stream": fields.field(body, "stream", bool, True)}


@dataclass
class PullRequest:
    """POST /api/pull (Ollama's PullRequest): the model's name or a GGUF file's URL."""

    model: str  # a registry name, hf.co/<user>/<repo>[:<quant>] or https://…/file.gguf
    insecure: bool = False  # allow plain-HTTP registries
    stream: bool = True  # progress lines, or only the final one

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PullRequest:
        return cls(**_transfer_fields(body, urls=True))

    def to_job(self) -> dict[str, Any]:
        return {"model": self.model, "insecure": self.insecure}


@dataclass
class PushRequest:
    """POST /api/push (Ollama's PushRequest): a stored model, sent to the registry its name
    names (`host/namespace/model:tag`)."""

    model: str  # the stored model's name, which is where it goes
    insecure: bool = False  # allow plain-HTTP registries
    stream: bool = True  # progress lines, or only the final one

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PushRequest:
        return cls(**_transfer_fields(body, urls=False))

    def to_job(self) -> dict[str, Any]:
        return {"model": self.model, "insecure": self.insecure}


@dataclass
class QuantizeRequest:
    """POST /api/create with `quantize`: the model a worker writes once it has quantized the
    source weights; the rest of its manifest was read from the create request by the API."""

    model: str  # the new model's name
    source: str  # the digest of the full-precision weights in the store
    quantize: str  # the file type to write (service.models.quantize.TARGETS)
    manifest: dict[str, Any] = field(default_factory=dict)  # template, system, parameters,
    # license, messages and adapters ([{"digest", "size"}]) for ModelStore.create
    stream: bool = True  # progress lines, or only the final one

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> QuantizeRequest:
        return cls(model=fields.field(body, "model", str, required=True),
                   source=fields.field(body, "source", str, required=True),
                   quantize=fields.field(body, "quantize", str, required=True),
                   manifest=fields.field(body, "manifest", dict, {}))

    def to_job(self) -> dict[str, Any]:
        return {"model": self.model, "source": self.source, "quantize": self.quantize,
                "manifest": self.manifest}
