"""Check a JSON schema (a `format`, a `response_format`, a tool's parameters) before it is
queued, so a schema the worker could not turn into a grammar is a 400 naming its part.
"""

from __future__ import annotations

from typing import Any

from service.core.errors import InvalidRequest

MAX_SCHEMA_DEPTH = 32  # nested subschemas; real output formats are a few levels deep
SCHEMA_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")
_SUBSCHEMA = ("items", "additionalProperties", "not", "contains")  # key -> one schema
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")  # name -> schema
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")  # key -> [schema, ...]


def check_schema(schema: Any, where: str, depth: int = 0) -> None:
    """Refuse a JSON schema the worker's grammar builder would choke on, naming the part.

    The grammar itself is built in the worker (the service never imports llama_cpp); what
    can be seen here without it is checked here: every (sub)schema is an object (or true /
    false), and every `type` is a JSON Schema type or a list of them. Nesting is capped, so a
    deep schema is a 400 here rather than a RecursionError here or in the worker.
    """
    if depth > MAX_SCHEMA_DEPTH:
        raise InvalidRequest(f"invalid field '{where}': nested deeper than {MAX_SCHEMA_DEPTH}")
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise InvalidRequest(f"invalid field '{where}': a JSON schema must be an object")
    kinds = schema.get("type")
    for kind in kinds if isinstance(kinds, list) else [] if kinds is None else [kinds]:
        if kind not in SCHEMA_TYPES:
            raise InvalidRequest(f"invalid field '{where}.type': {kind!r} is not a JSON Schema "
                                 f"type (one of {', '.join(SCHEMA_TYPES)})")
    for key in _SUBSCHEMA:
        if isinstance(schema.get(key), list):  # draft 4's tuple form of `items`
            _check_list(schema[key], f"{where}.{key}", depth + 1)
        elif key in schema:
            check_schema(schema[key], f"{where}.{key}", depth + 1)
    for key in _SUBSCHEMA_MAPS:
        if key in schema:
            _check_map(schema[key], f"{where}.{key}", depth + 1)
    for key in _SUBSCHEMA_LISTS:
        if key in schema:
            _check_list(schema[key], f"{where}.{key}", depth + 1)
    required = schema.get("required")
    if required is not None and not (isinstance(required, list)
                                     and all(isinstance(r, str) for r in required)):
        raise InvalidRequest(f"invalid field '{where}.required': expected an array of strings")


def _check_map(value: Any, where: str, depth: int) -> None:
    if not isinstance(value, dict):
        raise InvalidRequest(f"invalid field '{where}': expected an object of schemas")
    for name, schema in value.items():
        check_schema(schema, f"{where}.{name}", depth)


def _check_list(value: Any, where: str, depth: int) -> None:
    if not isinstance(value, list):
        raise InvalidRequest(f"invalid field '{where}': expected an array of schemas")
    for i, schema in enumerate(value):
        check_schema(schema, f"{where}[{i}]", depth)
