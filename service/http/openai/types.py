"""Wire shapes of the OpenAI-compatible API (`/v1/*`), as OpenAI's API reference defines them.

Requests are translated into the job requests the Ollama face reads (service.jobs.requests),
so the worker sees the same job JSON whichever face queued it; option defaults follow Ollama's
OpenAI layer (temperature 1 and top_p 1, OpenAI's own defaults). /v1/completions is templated
like /api/generate, as Ollama does. Every bad field is a 400 naming it in `param`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core import fields
from service.core.errors import CorralError, InvalidRequest, ModelNotFound
from service.jobs.images import from_image_url
from service.jobs.requests import ChatRequest, EmbedRequest, GenerateRequest, message_thinking
from service.jobs.schemas import check_schema
from service.jobs.tools import (
    message_tool_fields,
    name_tool_turns,
    read_tool_choice,
    read_tools,
)
from service.models.modelfile import INT32, RANGES

# Request fields read (any other, e.g. `user`, is ignored, as Ollama does):
#   model                  model name, as GET /v1/models lists it (404 model_not_found if absent)
#   messages               chat: [{"role", "content"}]; content a string or text parts; an
#                          assistant's tool_calls and a tool turn's tool_call_id are kept
#   prompt                 completions: a string (or a list of exactly one)
#   stream                 SSE chunks ending in `data: [DONE]`; default false
#   stream_options         {"include_usage": true}: a last chunk with usage and empty choices
#   max_tokens             cap on generated tokens (Ollama num_predict); max_completion_tokens wins
#   temperature, top_p     sampling, 0..2 and 0..1; default 1 and 1 (OpenAI's defaults)
#   frequency_penalty      -2..2; presence_penalty likewise
#   seed                   fixed sampling seed: the same request gives the same answer
#   stop                   a string or a list of strings; the answer ends before the first one
#   n                      choices to return; only 1 is supported
#   response_format        {"type": "json_object"} or json_schema: becomes the job's `format`
#   reasoning_effort       chat: none, minimal, low, medium, high, xhigh (or reasoning.effort):
#                          Ollama's `think` (400 if the model cannot think, unless "none")
#   logprobs               chat: true for each token's logprob; completions: 0-5, the legacy
#                          form (that many alternatives per token, and the chosen token)
#   top_logprobs           chat: 0-20 alternatives per token; only with logprobs true
#   tools                  function tools (service.jobs.tools); a model whose template
#                          shows no tools answers as a plain chat
#   tool_choice            "none", "auto", "required" or {"type": "function", "function": {"name"}}
#   suffix                 fill-in-the-middle, for models with the insert capability
#   input                  embeddings: a non-empty string or list of them
#   encoding_format        embeddings: "float" or "base64" (little-endian float32)
#   dimensions             embeddings: keep the first N dimensions, re-normalised

FINISH_REASONS = {"stop": "stop", "length": "length"}  # worker done_reason -> finish_reason
FINGERPRINT = "fp_corral"


class InvalidParam(InvalidRequest):
    """A 400 that names the offending request field, for the error object's `param`."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def param(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None,
         *, required: bool = False) -> Any:
    """fields.field, with the field's name kept on the error."""
    try:
        return fields.field(body, name, kind, default, required=required)
    except InvalidRequest as exc:
        raise InvalidParam(name, exc.message) from None


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = param(body, name, float)
    if value is not None and not low <= value <= high:
        raise InvalidParam(name, f"invalid field '{name}': must be between {low:g} and {high:g}")
    return value


def _stop(body: dict[str, Any]) -> list[str] | None:
    """`stop`: one string or a list of strings where generation ends (not included)."""
    value = param(body, "stop", (str, list))
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if not all(isinstance(s, str) and s for s in stops):
        raise InvalidParam("stop", "invalid field 'stop': expected a string or a list of strings")
    return list(stops)


def _max_tokens(body: dict[str, Any]) -> int | None:
    """`max_completion_tokens` (newer) or `max_tokens`: the cap on generated tokens."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = param(body, name, int)
        if value is not None:
            if not 1 <= value <= INT32:  # the same C int as the Ollama face's num_predict
                raise InvalidParam(name, f"invalid field '{name}': must be between 1 and {INT32}")
            return value
    return None


def _format(body: dict[str, Any]) -> str | dict | None:
    """`response_format`: text, json_object ("json"), or json_schema (its `schema`)."""
    value = param(body, "response_format", dict)
    if value is None or value.get("type") in (None, "text"):
        return None
    if value.get("type") == "json_object":
        return "json"
    wrapper = value.get("json_schema")
    schema = wrapper.get("schema") if isinstance(wrapper, dict) else None
    if value.get("type") == "json_schema" and isinstance(schema, dict):
        try:
            check_schema(schema, "response_format.json_schema.schema")
        except InvalidRequest as exc:
            raise InvalidParam("response_format", exc.message) from None
        return schema
    raise InvalidParam("response_format", "invalid field 'response_format': expected type "
                       "text, json_object, or json_schema with a json_schema.schema object")


def _seed(body: dict[str, Any]) -> int | None:
    """`seed`: any integer the Ollama face's seed option takes (a 64-bit one)."""
    value = param(body, "seed", int)
    low, high = RANGES["seed"]
    if value is not None and not low <= value <= high:
        raise InvalidParam("seed", "invalid field 'seed': expected a 64-bit integer")
    return value


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """The Ollama options the sampling fields map to."""
    if param(body, "n", int, 1) != 1:
        raise InvalidParam("n", "invalid field 'n': only 1 choice is supported")
    options: dict[str, Any] = {
        "temperature": _number(body, "temperature", 0, 2),
        "top_p": _number(body, "top_p", 0, 1),
        "frequency_penalty": _number(body, "frequency_penalty", -2, 2),
        "presence_penalty": _number(body, "presence_penalty", -2, 2),
        "seed": _seed(body),
        "num_predict": _max_tokens(body),
        "stop": _stop(body),
    }
    options = {k: v for k, v in options.items() if v is not None}
    return {"temperature": 1.0, "top_p": 1.0, **options}


def _include_usage(body: dict[str, Any]) -> bool:
    options = param(body, "stream_options", dict, {})
    value = options.get("include_usage", False)
    if not isinstance(value, bool):
        raise InvalidParam("stream_options", "invalid field 'stream_options.include_usage': "
                           "expected a boolean")
    return value


def _content(i: int, content: Any) -> tuple[str, list[str]]:
    """A message's text and images: a string, or a content array's text parts joined and its
    `image_url` parts (data: URLs) as base64, which a model with a vision projector answers
    and the model check refuses by name for one without (service.jobs.images), rather than
    dropping them."""
    if content is None or isinstance(content, str):
        return content or "", []
    param = f"messages[{i}].content"
    if not isinstance(content, list):
        raise InvalidParam(param, f"invalid field '{param}': expected a string or parts")
    texts, images = [], []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            images.append(_translated(from_image_url, part, f"{param}[{k}]",
                                      param=f"{param}[{k}]"))
        else:
            raise InvalidParam(f"{param}[{k}]", f"invalid field '{param}[{k}]': expected a "
                               "text or image_url part (audio and files are not supported)")
    return "".join(texts), images


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """`messages`: the conversation; `developer` is OpenAI's newer name for `system`."""
    messages = param(body, "messages", list, required=True)
    if not messages:
        raise InvalidParam("messages", "invalid field 'messages': expected at least one message")
    parsed = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        role = "system" if role == "developer" else role
        if role not in ("system", "user", "assistant", "tool"):
            raise InvalidParam(f"messages[{i}].role", f"invalid field 'messages[{i}].role': "
                               "expected system, developer, user, assistant or tool")
        where = f"messages[{i}]"
        text, images = _content(i, message.get("content"))
        parsed.append({"role": role, "content": text, **({"images": images} if images else {}),
                       **_translated(message_thinking, message, "reasoning_content", where,
                                     param=f"{where}.reasoning_content"),
                       **_translated(message_tool_fields, message, where, param=where)})
    return name_tool_turns(parsed)


def _translated(read, *args, param: str) -> Any:
    """Call a reader of service.jobs.tools, its 400 naming `param` as OpenAI's errors do."""
    try:
        return read(*args)
    except InvalidRequest as exc:
        raise InvalidParam(param, exc.message) from None


@dataclass
class Parsed:
    """A /v1 request translated: the Ollama request to queue and how to answer."""

    job: ChatRequest | GenerateRequest  # what the worker runs
    stream: bool  # SSE chunks ending in `data: [DONE]`, or one JSON object
    include_usage: bool  # with stream: a last chunk with usage and no choices


def chat_request(body: dict[str, Any]) -> Parsed:
    """POST /v1/chat/completions."""
    tools = _translated(read_tools, body.get("tools"), param="tools")
    choice = _translated(read_tool_choice, body.get("tool_choice"), tools, param="tool_choice")
    logprobs, top = _chat_logprobs(body)
    job = ChatRequest(model=param(body, "model", str, required=True), messages=_messages(body),
                      tools=tools, tool_choice=choice, format=_format(body),
                      options=_options(body), think=think_of(body), logprobs=logprobs,
                      top_logprobs=top)
    stream = param(body, "stream", bool, False)
    return Parsed(job, stream, stream and _include_usage(body))


MAX_TOP_LOGPROBS = 20  # chat's top_logprobs
MAX_LEGACY_LOGPROBS = 5  # /v1/completions' logprobs


def _chat_logprobs(body: dict[str, Any]) -> tuple[bool, int]:
    """`logprobs` and `top_logprobs` (0-20), which OpenAI refuses without logprobs true."""
    logprobs = param(body, "logprobs", bool, False)
    top = param(body, "top_logprobs", int)
    if top is not None and not logprobs:
        raise InvalidParam("top_logprobs", "invalid field 'top_logprobs': requires "
                           "'logprobs' to be true")
    if top is not None and not 0 <= top <= MAX_TOP_LOGPROBS:
        raise InvalidParam("top_logprobs", "invalid field 'top_logprobs': must be between 0 "
                           f"and {MAX_TOP_LOGPROBS}")
    return logprobs, top or 0


def _legacy_logprobs(body: dict[str, Any]) -> int | None:
    """/v1/completions' `logprobs`: alternatives per token, 0-5; absent or null for none."""
    value = param(body, "logprobs", int)
    if value is not None and not 0 <= value <= MAX_LEGACY_LOGPROBS:
        raise InvalidParam("logprobs", "invalid field 'logprobs': must be between 0 and "
                           f"{MAX_LEGACY_LOGPROBS}")
    return value


# OpenAI's efforts and the tiers clients add, as Ollama's thinkFromReasoningEffort maps them
EFFORTS: dict[str, bool | str] = {"none": False, "minimal": "low", "low": "low",
                                  "medium": "medium", "high": "high", "max": "max",
                                  "xhigh": "max", "ultra": "max"}


def think_of(body: dict[str, Any]) -> bool | str | None:
    """`reasoning_effort` (or Ollama's `reasoning: {"effort"}`) as the job's `think`."""
    name, effort = "reasoning_effort", param(body, "reasoning_effort", str)
    reasoning = param(body, "reasoning", dict)
    if reasoning is not None:
        name, effort = "reasoning.effort", reasoning.get("effort")
    if effort is None or effort == "":
        return None
    if not isinstance(effort, str) or effort not in EFFORTS:
        raise InvalidParam(name, f"invalid field '{name}': expected one of "
                           + ", ".join(EFFORTS))
    return EFFORTS[effort]


def _prompt(body: dict[str, Any]) -> str:
    """`prompt`: a string, or a list holding exactly one string."""
    value = param(body, "prompt", (str, list), required=True)
    if isinstance(value, list):
        if len(value) != 1 or not isinstance(value[0], str):
            raise InvalidParam("prompt", "invalid field 'prompt': expected a string "
                               "(token arrays and several prompts are not supported)")
        value = value[0]
    return value


def completion_request(body: dict[str, Any]) -> Parsed:
    """POST /v1/completions."""
    top = _legacy_logprobs(body)
    job = GenerateRequest(model=param(body, "model", str, required=True), prompt=_prompt(body),
                          suffix=param(body, "suffix", str) or "",
                          options=_options(body), logprobs=top is not None, top_logprobs=top or 0)
    stream = param(body, "stream", bool, False)
    return Parsed(job, stream, stream and _include_usage(body))


def embedding_request(body: dict[str, Any]) -> tuple[EmbedRequest, str]:
    """POST /v1/embeddings: (the Ollama embed request, encoding_format "float" or "base64")."""
    value = param(body, "input", (str, list), required=True)
    inputs = [value] if isinstance(value, str) else value
    if not inputs or not all(isinstance(s, str) and s for s in inputs):
        raise InvalidParam("input", "invalid field 'input': expected a non-empty string or list "
                           "of non-empty strings (token arrays are not supported)")
    encoding = param(body, "encoding_format", str, "float")
    if encoding not in ("float", "base64"):
        raise InvalidParam("encoding_format", "invalid field 'encoding_format': expected "
                           "float or base64")
    dimensions = param(body, "dimensions", int)
    if dimensions is not None and dimensions < 1:
        raise InvalidParam("dimensions", "invalid field 'dimensions': must be at least 1")
    model = param(body, "model", str, required=True)
    return EmbedRequest(model=model, input=list(inputs), dimensions=dimensions), encoding


# ---- responses ---------------------------------------------------------------------------

def error_body(exc: CorralError) -> dict[str, Any]:
    """OpenAI's error object; `param` names the field when one is at fault."""
    missing_model = isinstance(exc, ModelNotFound)
    param = "model" if missing_model else getattr(exc, "param", None)
    code = "model_not_found" if missing_model else None
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    return {"error": {"message": exc.message, "type": kind, "param": param, "code": code}}


def usage(done: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(done.get("prompt_eval_count") or 0), int(done.get("eval_count") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def finish_reason(done: dict[str, Any]) -> str:
    if done.get("tool_calls"):
        return "tool_calls"
    return FINISH_REASONS.get(done.get("done_reason", "stop"), "stop")


def tool_calls(calls: list[dict[str, Any]], *, indexed: bool) -> list[dict[str, Any]]:
    """The job's calls as OpenAI's: arguments as JSON text; streamed ones carry their index,
    by which a client joins a call's deltas."""
    shaped = []
    for call in calls:
        function = call["function"]
        item = {"id": call["id"], "type": "function",
                "function": {"name": function["name"],
                             "arguments": json.dumps(function["arguments"], ensure_ascii=False)}}
        shaped.append({"index": function["index"], **item} if indexed else item)
    return shaped


@dataclass
class Reply:
    """Builds every object of one response; chunks share its id and created time."""

    id: str  # "chatcmpl-<job id>" or "cmpl-<job id>"
    model: str  # the model name as requested
    created: int  # unix seconds
    chat: bool  # chat.completion objects, or text_completion
    sent: int = 0  # characters of text whose logprobs went out (legacy text_offset)

    def _object(self, choices: list[dict[str, Any]], chunk: bool) -> dict[str, Any]:
        kind = "chat.completion" if self.chat else "text_completion"
        return {"id": self.id, "object": kind + (".chunk" if chunk and self.chat else ""),
                "created": self.created, "model": self.model,
                "system_fingerprint": FINGERPRINT, "choices": choices}

    def _choice(self, text: str | None, reason: str | None, *, first: bool = False,
                whole: bool = False, logprobs: list[dict] | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "logprobs": self._logprobs(logprobs),
                                  "finish_reason": reason}
        if not self.chat:
            return {**choice, "text": text or ""}
        message = {"role": "assistant"} if first or whole else {}
        if text is not None:
            message["content"] = text
        return {**choice, ("message" if whole else "delta"): message}

    def _logprobs(self, entries: list[dict] | None) -> dict[str, Any] | None:
        """A choice's `logprobs` for its tokens' entries: chat's {"content", "refusal"}, or
        the legacy lists of /v1/completions (see legacy_logprobs)."""
        if entries is None:
            return None
        if self.chat:
            return {"content": entries, "refusal": None}
        legacy = legacy_logprobs(entries, self.sent)
        self.sent += sum(len(e["token"]) for e in entries)
        return legacy

    def whole(self, text: str, done: dict[str, Any]) -> dict[str, Any]:
        """The non-streamed answer; with tool calls, content is null unless text came too."""
        choice = self._choice(text, finish_reason(done), whole=True,
                              logprobs=done.get("logprobs"))
        if done.get("tool_calls"):
            choice["message"]["content"] = text if text.strip() else None
            choice["message"]["tool_calls"] = tool_calls(done["tool_calls"], indexed=False)
        if self.chat and done.get("thinking"):
            choice["message"]["reasoning_content"] = done["thinking"]
        return {**self._object([choice], False), "usage": usage(done)}

    def reasoning_chunk(self, text: str, first: bool = False) -> dict[str, Any]:
        """A streamed piece of reasoning: `reasoning_content` in the delta, as llama-server
        and Ollama's OpenAI face send it (chat only; a completion has no field for it)."""
        choice = self._choice(None, None, first=first)
        choice["delta"]["reasoning_content"] = text
        return self._object([choice], True)

    def calls_chunk(self, calls: list[dict[str, Any]], first: bool = False) -> dict[str, Any]:
        """A streamed delta carrying whole tool calls (each with its index, id and name)."""
        choice = self._choice(None, None, first=first)
        choice["delta"]["tool_calls"] = tool_calls(calls, indexed=True)
        return self._object([choice], True)

    def chunk(self, text: str, first: bool = False, logprobs: list[dict] | None = None
              ) -> dict[str, Any]:
        """One streamed piece of text (the first chat chunk also carries the role), with its
        tokens' logprobs when the request asked."""
        return self._object([self._choice(text, None, first=first, logprobs=logprobs)], True)

    def last(self, done: dict[str, Any], first: bool = False) -> dict[str, Any]:
        """The chunk that carries finish_reason (and the role, if no text came before it)."""
        text = None if self.chat else ""
        return self._object([self._choice(text, finish_reason(done), first=first)], True)

    def usage_chunk(self, done: dict[str, Any]) -> dict[str, Any]:
        """stream_options.include_usage: the totals, with no choices."""
        return {**self._object([], True), "usage": usage(done)}


def legacy_logprobs(entries: list[dict], offset: int = 0) -> dict[str, Any]:
    """/v1/completions' logprobs: parallel lists of tokens, their logprobs, {token: logprob}
    of the alternatives plus the chosen token (OpenAI's up to logprobs+1), and each token's
    character offset, counted from the start of the generated text (corral templates the
    prompt, so the prompt's length is not the client's)."""
    offsets, at = [], offset
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    tops = [{t["token"]: t["logprob"] for t in e.get("top_logprobs", [])}
            | {e["token"]: e["logprob"]} for e in entries]
    return {"tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": tops, "text_offset": offsets}


def model_object(model) -> dict[str, Any]:
    """One entry of GET /v1/models."""
    return {"id": model.name.display(), "object": "model",
            "created": int(model.modified_at.timestamp()), "owned_by": model.name.namespace}


def embedding_list(model: str, done: dict[str, Any], encoding: str) -> dict[str, Any]:
    """The /v1/embeddings answer; base64 is little-endian float32, as OpenAI sends it."""
    def encode(vector: list[float]) -> list[float] | str:
        if encoding == "float":
            return vector
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()

    data = [{"object": "embedding", "index": i, "embedding": encode(v)}
            for i, v in enumerate(done.get("embeddings", []))]
    tokens = int(done.get("prompt_eval_count") or 0)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
