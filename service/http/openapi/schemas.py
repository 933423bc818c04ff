"""JSON Schemas of the wire shapes, derived from the types that read them where they exist.

A request dataclass of service.jobs.requests gives its fields, their JSON types and defaults
and (from the comment that ends each field's line) their descriptions; `options` comes from
the Modelfile's PARAMETER_TYPES and RANGES, a job row from its table's columns. What the
parsers accept beyond a dataclass's Python type (keep_alive as "5m", format as a schema) is
written once here, in WIRE.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import math
import tokenize
import types
import typing
from functools import cache
from typing import Any

import sqlalchemy as sa

from service.jobs.requests import ROLES
from service.models.modelfile import INT32, PARAMETER_TYPES, RANGES

Schema = dict[str, Any]

_JSON_TYPES: dict[type, Schema] = {str: {"type": "string"}, bool: {"type": "boolean"},
                                   int: {"type": "integer"}, float: {"type": "number"},
                                   list: {"type": "array"}, dict: {"type": "object"}}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def message() -> Schema:
    """One chat message, as /api/chat and /api/create read it."""
    return {"type": "object", "required": ["role"], "properties": {
        "role": {"type": "string", "enum": list(ROLES)},
        "content": nullable({"type": "string"}),
        # a thinking model's reasoning: in replies, and carried back in earlier turns
        "thinking": nullable({"type": "string"})}}


def options() -> Schema:
    """Runtime options: every known one with its JSON type and range; others are ignored."""
    properties = {}
    for name, kind in PARAMETER_TYPES.items():
        if kind is list:
            schema: Schema = {"type": "array", "items": {"type": "string"}}
        elif kind is bool:
            schema = {"type": "boolean"}
        else:
            schema = {"type": "integer" if kind is int else "number"}
            default = (-INT32 - 1, INT32) if kind is int else (-math.inf, math.inf)
            low, high = RANGES.get(name, default)
            schema |= {k: v for k, v in (("minimum", low), ("maximum", high))
                       if math.isfinite(v)}
        properties[name] = nullable(schema)
    return {"type": "object", "properties": properties,
            "description": "runtime options (temperature, num_predict, ...); unknown ones and "
                           "nulls are ignored, as Ollama does"}


# What a request field takes on the wire, where its dataclass type says less or otherwise.
WIRE: dict[str, Schema] = {
    "keep_alive": nullable({"anyOf": [{"type": "string"}, {"type": "number"}]}),
    "format": nullable({"anyOf": [{"type": "string", "enum": ["", "json"]},
                                  {"type": "object"}]}),
    "options": nullable(ref("Options")),
    "messages": nullable({"type": "array", "items": ref("Message")}),
    "input": nullable({"anyOf": [{"type": "string"},
                                 {"type": "array", "items": {"type": "string",
                                                             "minLength": 1}}]}),
    "dimensions": nullable({"type": "integer", "minimum": 1}),
}


def _python_type(hint: Any) -> Schema:
    """The JSON Schema of a field's Python type (str | None, list[str], dict[...])."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options_ = [_python_type(a) for a in args if a is not type(None)]
        schema = options_[0] if len(options_) == 1 else {"anyOf": options_}
        return nullable(schema) if type(None) in args else schema
    origin = typing.get_origin(hint) or hint
    return dict(_JSON_TYPES.get(origin, {}))


def _comments(cls: type) -> dict[str, str]:
    """Each field's trailing comment in the class's source: `name: type = x  # comment`."""
    found: dict[str, str] = {}
    line_names: dict[int, str] = {}
    source = inspect.getsource(cls)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        row = token.start[0]
        if token.type == tokenize.NAME and token.start[1] == 4 and row not in line_names:
            line_names[row] = token.string
        elif token.type == tokenize.COMMENT and row in line_names:
            found[line_names[row]] = token.string.lstrip("# ")
    return found


@cache
def request_schema(cls: type, required: tuple[str, ...] = ("model",)) -> Schema:
    """The JSON object a request dataclass reads: one property per field (WIRE where the wire
    takes more than the Python type says); nothing else is refused (unknown keys are ignored)."""
    hints = typing.get_type_hints(cls)
    described = _comments(cls)
    properties = {}
    for item in dataclasses.fields(cls):
        schema = dict(WIRE.get(item.name) or _python_type(hints[item.name]))
        if item.name not in required:
            schema = schema if "anyOf" in schema and {"type": "null"} in schema["anyOf"] \
                else nullable(schema)  # an absent or null field takes its default
        if item.default is not dataclasses.MISSING and item.default is not None:
            schema["default"] = item.default
        if item.name in described:
            schema["description"] = described[item.name]
        properties[item.name] = schema
    return {"type": "object", "required": list(required), "properties": properties,
            "description": inspect.getdoc(cls) or ""}


_COLUMN_TYPES: list[tuple[type, Schema]] = [
    (sa.Boolean, {"type": "boolean"}), (sa.Integer, {"type": "integer"}),
    (sa.Float, {"type": "number"}), (sa.DateTime, {"type": "string", "format": "date-time"}),
    (sa.String, {"type": "string"}), (sa.Text, {"type": "string"}), (sa.JSON, {})]


def table_schema(table: sa.Table, extra: dict[str, Schema] | None = None) -> Schema:
    """A row as its to_dict() sends it: one property per column, null where it may be."""
    properties = {}
    for column in table.columns:
        schema = next((dict(s) for t, s in _COLUMN_TYPES if isinstance(column.type, t)), {})
        properties[column.name] = nullable(schema) if column.nullable and schema else schema
    return {"type": "object", "required": ["id", "status"],
            "properties": {**properties, **(extra or {})}}

