"""Read a JSON object field by field, naming the field in every error.

Request bodies reach the domain as plain dicts (from the HTTP face, from a batch file's line),
so the one reader lives here, where both may use it without importing Flask.
"""

from __future__ import annotations

from typing import Any

from service.core.errors import InvalidRequest

_MISSING = object()
_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
          list: "an array", dict: "an object"}


def type_name(kind: type | tuple[type, ...]) -> str:
    """How an error names the JSON type(s) a field expects: "a string or an array"."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_NAMES.get(k, k.__name__) for k in kinds)


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
        raise InvalidRequest(f"invalid field '{name}': expected {type_name(kind)}")
    if float in kinds and isinstance(value, int):
        return value
    if not isinstance(value, kinds):
        raise InvalidRequest(f"invalid field '{name}': expected {type_name(kind)}")
    return value
