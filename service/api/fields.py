"""Read a request's JSON body and query arguments field by field, naming the field in every
error."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import request

from service.errors import InvalidRequest

_MISSING = object()


def json_body() -> dict[str, Any]:
    """The request's JSON object; 400 if it is not valid JSON or not an object."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("invalid JSON body: expected an object")
    return body


def query_int(name: str, default: int, low: int, high: int,
              error: Callable[[str], Exception] = InvalidRequest) -> int:
    """An integer query argument within low..high; error(message) when it is not one."""
    try:
        value = int(request.args.get(name, default))
    except ValueError:
        raise error(f"invalid parameter '{name}': expected an integer") from None
    if not low <= value <= high:
        raise error(f"invalid parameter '{name}': expected {low} to {high}")
    return value


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
             list: "an array", dict: "an object"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = _MISSING,
          *, required: bool = False) -> Any:
    """Return body[name] checked against `kind`; None/absent gives `default` unless required."""
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"missing required field '{name}'")
        return None if default is _MISSING else default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python; JSON true is never a valid number here.
    if isinstance(value, bool) and bool not in kinds:
        raise InvalidRequest(f"invalid field '{name}': expected {_type_name(kind)}")
    if float in kinds and isinstance(value, int):
        return value
    if not isinstance(value, kinds):
        raise InvalidRequest(f"invalid field '{name}': expected {_type_name(kind)}")
    return value
