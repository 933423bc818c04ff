"""Read a request's JSON body and query arguments, naming the field in every error."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import request

from service.core.errors import InvalidRequest


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
