"""Wire shapes of OpenAI's Responses API (`POST /v1/responses`): text, reasoning and tools.

A request becomes the chat job /v1/chat/completions queues (a ChatRequest, plus the
`instructions` it was given, so a later turn can leave them out as OpenAI does, and what the
Response echoes, so GET /v1/responses/{id} can answer later). Unlike /v1/chat/completions, a
field this face does not know is a 400 naming it, as OpenAI's own Responses endpoint answers:
a client that sends `background` must hear that it did nothing. Tools come in the Responses
shape (flat: {"type": "function", "name", "parameters"}), calls and their results as
`function_call` and `function_call_output` items; they are read into the job's (Ollama's)
shapes by service.jobs.tools. Answers are built by responses_reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.core.errors import CorralError, InvalidRequest
from service.http.openai.types import MAX_TOP_LOGPROBS, InvalidParam, param, think_of
from service.jobs.records import Job, JobStatus
from service.jobs.requests import ChatRequest, check_schema
from service.jobs.tools import message_tool_fields, name_tool_turns, read_tool_choice, read_tools
from service.models.modelfile import INT32

# Request fields read:
#   model                  model name (404 model_not_found if absent)
#   input                  a string (one user message) or items: messages {"role", "content"}
#                          with content a string or input_text / output_text parts;
#                          function_call {"call_id", "name", "arguments"} and
#                          function_call_output {"call_id", "output"} (a tool round trip);
#                          reasoning {"content" or "summary"} (an earlier turn's thinking)
#   instructions           a system message put first; not carried to a next turn
#   previous_response_id   "resp_<job id>": that turn's messages and answer come first
#   tools, tool_choice     function tools (flat shape) and "auto" / "none" / "required" /
#                          {"type": "function", "name"}; other tool types are a 400
#   reasoning              {"effort"}: thinking on (low/medium/high) or off ("none")
#   top_logprobs, include  "message.output_text.logprobs" in include: each token's logprob,
#                          with top_logprobs (0-20) alternatives
#   max_output_tokens      cap on generated tokens (Ollama num_predict)
#   temperature, top_p     sampling, 0..2 and 0..1; default 1 and 1 (OpenAI's defaults)
#   stream                 Server-Sent Events, response.created ... response.completed
#   store                  false: GET /v1/responses/{id} and previous_response_id find it not
#   text                   {"format": {"type": "text" | "json_object" | "json_schema", ...}}
#   truncation             "auto" (default here, as Ollama) or "disabled": too long is a 400
#   metadata, user, parallel_tool_calls, stream_options, safety_identifier,
#   prompt_cache_key, service_tier, max_tool_calls   accepted and echoed; they change nothing
#   background, conversation, prompt: refused with a 400 when set
ECHOED = ("metadata", "user", "parallel_tool_calls", "stream_options", "safety_identifier",
          "prompt_cache_key", "service_tier", "max_tool_calls")
READ = ("model", "input", "instructions", "previous_response_id", "max_output_tokens",
        "temperature", "top_p", "stream", "text", "truncation", "tools", "tool_choice",
        "reasoning", "top_logprobs", "include", "store")
REFUSED = {"background": "background responses are not supported",
           "conversation": "conversations are not supported (use previous_response_id)",
           "prompt": "prompt templates are not supported"}
INCLUDES = ("message.output_text.logprobs", "reasoning.encrypted_content",
            "message.input_image.image_url", "computer_call_output.output.image_url",
            "file_search_call.results", "web_search_call.action.sources",
            "web_search_call.results", "code_interpreter_call.outputs")
LOGPROBS = "message.output_text.logprobs"
ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
TEXT_PARTS = ("input_text", "output_text")
PREFIX = "resp_"


@dataclass
class ResponseChat(ChatRequest):
    """The chat job of one /v1/responses request."""

    instructions: str | None = None  # the system message `instructions` put first, if any
    earlier: int = 0  # messages after the instructions that an earlier response stood for
    echo: dict[str, Any] = field(default_factory=dict)  # what the Response repeats


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


def _message(where: str, item: dict[str, Any]) -> dict[str, Any]:
    """A message item, typed "message" or untyped (OpenAI's easy input message)."""
    role = item.get("role")
    role = ROLES.get(role) if isinstance(role, str) else None  # a dict is no role, nor a key
    if role is None:
        raise InvalidParam(f"{where}.role", f"invalid field '{where}.role': expected user, "
                           "system, developer or assistant")
    return {"role": role, "content": _text(f"{where}.content", item.get("content"), role)}


def _call(where: str, item: dict[str, Any]) -> dict[str, Any]:
    """A function_call item (an earlier answer's call) as a job's tool call."""
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidParam(f"{where}.call_id", f"invalid field '{where}.call_id': expected "
                           "the call's id")
    call = {"id": call_id, "function": {"name": item.get("name"),
                                        "arguments": item.get("arguments")}}
    fields = _flat(message_tool_fields, {"role": "assistant", "tool_calls": [call]},
                   where, rename=(f"{where}.tool_calls[0].function.", f"{where}."))
    return fields["tool_calls"][0]


def _output(where: str, item: dict[str, Any]) -> dict[str, Any]:
    """A function_call_output item: the tool turn answering the call it names."""
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidParam(f"{where}.call_id", f"invalid field '{where}.call_id': expected "
                           "the id of the call this answers")
    return {"role": "tool", "content": _text(f"{where}.output", item.get("output"), "tool"),
            "tool_call_id": call_id}


def _reasoning(where: str, item: dict[str, Any]) -> str:
    """A reasoning item's text: its reasoning_text content, else its summary."""
    for key, kind in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(key)
        if parts is None:
            continue
        if not isinstance(parts, list) or not all(
                isinstance(p, dict) and p.get("type") == kind and isinstance(p.get("text"), str)
                for p in parts):
            raise InvalidParam(f"{where}.{key}", f"invalid field '{where}.{key}': expected "
                               f"{kind} parts")
        if parts:
            return "".join(p["text"] for p in parts)
    return ""


def _items(value: list[Any]) -> list[dict[str, Any]]:
    """Input items as chat messages. An answer's items come back in the order it gave them
    (reasoning, message, function calls): they make one assistant turn, as they were one."""
    messages: list[dict[str, Any]] = []
    thinking = ""  # a reasoning item's text, for the assistant turn that follows it

    def assistant() -> dict[str, Any]:
        nonlocal thinking
        if not messages or messages[-1]["role"] != "assistant" or thinking:
            messages.append({"role": "assistant", "content": ""})
        if thinking:
            messages[-1]["thinking"], thinking = thinking, ""
        return messages[-1]

    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidParam(where, f"invalid field '{where}': expected an item object")
        kind = item.get("type", "message")
        if kind == "message":
            message = _message(where, item)
            if message["role"] == "assistant":
                turn = assistant()
                turn["content"] += message["content"]
            else:
                messages.append(message)
        elif kind == "function_call":
            assistant().setdefault("tool_calls", []).append(_call(where, item))
        elif kind == "function_call_output":
            messages.append(_output(where, item))
        elif kind == "reasoning":
            thinking += _reasoning(where, item)
        else:
            raise InvalidParam(f"{where}.type", f"invalid field '{where}.type': expected "
                               "message, function_call, function_call_output or reasoning "
                               f"items, not {kind!r}")
    return name_tool_turns(messages)


def _input(body: dict[str, Any]) -> list[dict[str, Any]]:
    """`input`: one user message as a string, or a non-empty list of items."""
    value = param(body, "input", (str, list), required=True)
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not value:
        raise InvalidParam("input", "invalid field 'input': expected at least one item")
    return _items(value)


def _flat(read, value: Any, *args: Any, rename: tuple[str, str]) -> Any:
    """Call a reader of service.jobs.tools on the nested shape built from a flat one; its
    400 names the field as the client sent it (`rename`: nested prefix -> flat prefix)."""
    try:
        return read(value, *args)
    except InvalidRequest as exc:
        message = exc.message.replace(*rename)
        where = message.split("'")[1] if message.count("'") >= 2 else rename[1].rstrip(".")
        raise InvalidParam(where, message) from None


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """`tools`: function tools in the Responses shape ({"type": "function", "name",
    "description", "parameters", "strict"}); built-in tools (web_search, ...) are a 400."""
    value = param(body, "tools", list, [])
    nested = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise InvalidParam(where, f"invalid field '{where}': expected a tool object")
        if tool.get("type") != "function":
            raise InvalidParam(f"{where}.type", f"invalid field '{where}.type': only function "
                               f"tools are supported, not {tool.get('type')!r}")
        nested.append({"type": "function", "function": {
            k: tool[k] for k in ("name", "description", "parameters") if k in tool}})
    return _flat(read_tools, nested, rename=(".function.", "."))


def _tool_choice(body: dict[str, Any], tools: list[dict[str, Any]]) -> str | dict[str, Any]:
    """`tool_choice`: "auto", "none", "required", or {"type": "function", "name"}."""
    value = body.get("tool_choice")
    if isinstance(value, dict):
        if value.get("type") != "function":
            raise InvalidParam("tool_choice", "invalid field 'tool_choice': expected auto, "
                               'none, required or {"type": "function", "name": ...}')
        value = {"type": "function", "function": {"name": value.get("name")}}
    return _flat(read_tool_choice, value, tools, rename=("tool_choice.function.",
                                                        "tool_choice."))


def _logprobs(body: dict[str, Any]) -> tuple[bool, int]:
    """`include` with message.output_text.logprobs, and `top_logprobs` (0-20)."""
    include = param(body, "include", list, [])
    for i, name in enumerate(include):
        if name not in INCLUDES:
            raise InvalidParam(f"include[{i}]", f"invalid field 'include[{i}]': expected one "
                               "of " + ", ".join(INCLUDES))
    top = param(body, "top_logprobs", int)
    if top is not None and not 0 <= top <= MAX_TOP_LOGPROBS:
        raise InvalidParam("top_logprobs", "invalid field 'top_logprobs': must be between 0 "
                           f"and {MAX_TOP_LOGPROBS}")
    return LOGPROBS in include or bool(top), top or 0


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


def _echo(body: dict[str, Any], tools: list[dict[str, Any]],
          choice: str | dict[str, Any]) -> dict[str, Any]:
    """What the Response repeats of the request, checked where a wrong type would mislead."""
    metadata = param(body, "metadata", dict, {})
    if not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidParam("metadata", "invalid field 'metadata': values must be strings")
    given = param(body, "tools", list, [])
    flat_tools = [{"type": "function", "name": t["function"]["name"],
                   "description": t["function"]["description"] or None,
                   "parameters": t["function"]["parameters"],
                   "strict": g.get("strict", True) is not False}
                  for t, g in zip(tools, given, strict=True)]
    if isinstance(choice, dict):
        choice = {"type": "function", "name": choice["function"]["name"]}
    return {"metadata": metadata, "store": param(body, "store", bool, True),
            "user": param(body, "user", str), "tool_choice": choice, "tools": flat_tools,
            "parallel_tool_calls": param(body, "parallel_tool_calls", bool, True),
            "instructions": param(body, "instructions", str),
            "max_output_tokens": param(body, "max_output_tokens", int),
            "previous_response_id": param(body, "previous_response_id", str),
            "text": {"format": param(body, "text", dict, {}).get("format") or {"type": "text"}},
            "reasoning": param(body, "reasoning", dict, {"effort": None, "summary": None}),
            "top_logprobs": param(body, "top_logprobs", int, 0)}


def responses_request(body: dict[str, Any]) -> ResponsesRequest:
    """POST /v1/responses."""
    _check_fields(body)
    truncation = param(body, "truncation", str, "auto")
    if truncation not in ("auto", "disabled"):
        raise InvalidParam("truncation", "invalid field 'truncation': expected auto or disabled")
    instructions = param(body, "instructions", str)
    system = [{"role": "system", "content": instructions}] if instructions is not None else []
    options = _options(body)
    tools = _tools(body)
    choice = _tool_choice(body, tools)
    logprobs, top = _logprobs(body)
    echo = {**_echo(body, tools, choice), "temperature": options["temperature"],
            "top_p": options["top_p"], "truncation": truncation}
    job = ResponseChat(model=param(body, "model", str, required=True),
                       messages=system + _input(body), format=_format(body), options=options,
                       truncate=truncation == "auto", instructions=instructions,
                       tools=tools, tool_choice=choice, think=think_of(body),
                       logprobs=logprobs, top_logprobs=top, echo=echo)
    return ResponsesRequest(job, param(body, "stream", bool, False),
                            echo["previous_response_id"], echo)


def job_id(response_id: str) -> str:
    """The job behind a response id: "resp_<job id>"."""
    return response_id.removeprefix(PREFIX) if response_id.startswith(PREFIX) else ""


def earlier_turn(previous: Job) -> list[dict[str, Any]]:
    """The messages a previous response stands for: its own (less its instructions, which
    OpenAI does not carry over) and its answer, reasoning and calls included; 400 if it has
    no answer to build on."""
    if previous.status not in (JobStatus.SUCCEEDED, JobStatus.CANCELLED):
        state = "has not finished" if not JobStatus(previous.status).finished else "failed"
        raise InvalidParam("previous_response_id", "invalid field 'previous_response_id': "
                           f"that response {state}")
    messages = list(previous.request.get("messages") or [])
    if previous.request.get("instructions") is not None and messages:
        messages = messages[1:]
    text, done = previous.answer()
    answer = {"role": "assistant", "content": text}
    if done.get("thinking"):
        answer["thinking"] = done["thinking"]
    if done.get("tool_calls"):  # the worker's calls, in the shape a request gives them
        answer.update(message_tool_fields({"role": "assistant",
                                           "tool_calls": done["tool_calls"]}, "output"))
    return [*messages, answer]


def input_messages(job: Job) -> list[dict[str, Any]]:
    """The messages a response's own request gave: not its instructions, nor the earlier
    turn that previous_response_id put before them."""
    skip = (1 if job.request.get("instructions") is not None else 0) + \
        int(job.request.get("earlier") or 0)
    return list(job.request.get("messages") or [])[skip:]


def stored(job: Job | None) -> bool:
    """A response that may be read again: a chat job from this face (its request has
    `instructions`, None or not), made with store on and not deleted since."""
    if job is None or job.kind != "chat" or "instructions" not in job.request:
        return False
    echo = job.request.get("echo") or {}
    return echo.get("store", True) is not False and not job.request.get("deleted")
