"""What a chat request says about tools: the functions it offers, whether one must be called,
and the tool turns of its conversation, read into the job's (Ollama's) shapes.

The Ollama face's fields are the native ones; the OpenAI face sends its own through the same
readers (an assistant's `arguments` may be a JSON string, a tool turn names its call by
`tool_call_id`), so a worker sees one shape whichever face queued the job:

    tool        {"type": "function", "function": {"name", "description", "parameters"}}
    tool call   {"id"?, "type": "function", "function": {"name", "arguments": {...}}}
    tool turn   {"role": "tool", "content", "tool_name"?, "tool_call_id"?}
"""

from __future__ import annotations

import json
from typing import Any

from service.core.errors import InvalidRequest
from service.jobs.schemas import check_schema

CHOICES = ("none", "auto", "required")  # tool_choice strings; or {"type": "function", ...}
MAX_NAME = 256  # a function name; MCP-style names ("server.tool") run long, never this long
NO_PARAMETERS = {"type": "object", "properties": {}}


def _bad(where: str, expected: str) -> InvalidRequest:
    return InvalidRequest(f"invalid field '{where}': expected {expected}")


def read_tools(value: Any, where: str = "tools") -> list[dict[str, Any]]:
    """`tools`: function tools, each with a unique name and a JSON schema for its arguments."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(where, "an array of tools")
    tools = [_tool(item, f"{where}[{i}]") for i, item in enumerate(value)]
    names = [t["function"]["name"] for t in tools]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidRequest(f"invalid field '{where}[{i}].function.name': "
                                 f"{name!r} is offered twice")
    return tools


def _tool(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(where, "an object")
    if value.get("type", "function") != "function":
        raise InvalidRequest(f"invalid field '{where}.type': only \"function\" tools are "
                             "supported")
    function = value.get("function")
    if not isinstance(function, dict):
        raise _bad(f"{where}.function", "an object with a name")
    name = _name(function.get("name"), f"{where}.function.name")
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise _bad(f"{where}.function.description", "a string")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = NO_PARAMETERS
    elif not isinstance(parameters, dict):
        raise _bad(f"{where}.function.parameters", "a JSON schema object")
    check_schema(parameters, f"{where}.function.parameters")
    return {"type": "function", "function": {"name": name, "description": description or "",
                                             "parameters": parameters}}


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise _bad(where, f"a function name (a non-empty string of up to {MAX_NAME} characters)")
    return value


def read_tool_choice(value: Any, tools: list[dict[str, Any]],
                     where: str = "tool_choice") -> str | dict[str, Any]:
    """`tool_choice`: "none", "auto" (the default), "required" (some call), or
    {"type": "function", "function": {"name"}} (that call); what it names must be offered."""
    if value is None:
        return "auto"
    if isinstance(value, str):
        if value not in CHOICES:
            raise _bad(where, '"none", "auto", "required" or {"type": "function", ...}')
        if value == "required" and not tools:
            raise InvalidRequest(f"invalid field '{where}': \"required\" needs 'tools'")
        return value
    function = value.get("function") if isinstance(value, dict) else None
    if not isinstance(function, dict) or value.get("type", "function") != "function":
        raise _bad(where, '"none", "auto", "required" or {"type": "function", "function": '
                   '{"name": ...}}')
    name = _name(function.get("name"), f"{where}.function.name")
    if name not in {t["function"]["name"] for t in tools}:
        raise InvalidRequest(f"invalid field '{where}.function.name': {name!r} is not one of "
                             "the request's tools")
    return {"type": "function", "function": {"name": name}}


def forced_names(tools: list[dict[str, Any]], choice: str | dict[str, Any]) -> list[str]:
    """The functions one of which the answer must call: all for "required", the named one,
    or none (the model decides, or may not call at all)."""
    if isinstance(choice, dict):
        return [choice["function"]["name"]]
    return [t["function"]["name"] for t in tools] if choice == "required" else []


def message_tool_fields(message: dict[str, Any], where: str) -> dict[str, Any]:
    """The tool fields of one message: an assistant's `tool_calls`, a tool turn's `tool_name`
    and `tool_call_id`. Absent fields stay absent, so plain turns keep their plain shape."""
    extra: dict[str, Any] = {}
    calls = message.get("tool_calls")
    if calls is not None:
        if message.get("role") != "assistant":
            raise InvalidRequest(f"invalid field '{where}.tool_calls': only an assistant "
                                 "message calls tools")
        if not isinstance(calls, list):
            raise _bad(f"{where}.tool_calls", "an array of tool calls")
        if calls:
            extra["tool_calls"] = [_call(c, f"{where}.tool_calls[{i}]")
                                   for i, c in enumerate(calls)]
    for key in ("tool_name", "tool_call_id"):
        value = message.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise _bad(f"{where}.{key}", "a string")
            extra[key] = value
    return extra


def _call(value: Any, where: str) -> dict[str, Any]:
    function = value.get("function") if isinstance(value, dict) else None
    if not isinstance(function, dict):
        raise _bad(f"{where}.function", "an object with a name and arguments")
    call: dict[str, Any] = {"type": "function", "function": {
        "name": _name(function.get("name"), f"{where}.function.name"),
        "arguments": _arguments(function.get("arguments"), f"{where}.function.arguments")}}
    if isinstance(value.get("id"), str):
        call["id"] = value["id"]
    return call


def _arguments(value: Any, where: str) -> dict[str, Any]:
    """A call's arguments: an object (Ollama) or the JSON text of one (OpenAI)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _bad(where, "an object or the JSON text of one") from None
    if not isinstance(value, dict):
        raise _bad(where, "an object or the JSON text of one")
    return value


def name_tool_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each tool turn that names only its call (OpenAI's `tool_call_id`) the called
    function's `tool_name` too, which Ollama's templates show; the messages are changed."""
    called: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls", ()):
            if "id" in call:
                called[call["id"]] = call["function"]["name"]
        if message["role"] == "tool" and "tool_name" not in message:
            name = called.get(message.get("tool_call_id", ""))
            if name:
                message["tool_name"] = name
    return messages
