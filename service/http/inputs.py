"""Read a request's JSON body and query arguments, naming the field in every error."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from service.core.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from service.http.services import services

# What `curl -d` sends (Ollama's docs post JSON that way), and what a client sends that names
# no type at all: read as JSON unless a browser sent it (see json_body).
LENIENT_TYPES = frozenset({"application/x-www-form-urlencoded", ""})
# Deeper bodies are refused: the code a body reaches recurses once or more per level (a
# dataclass's asdict() twice), so a JSON schema 500 levels deep in `format` would end in a
# RecursionError. No real request (a tool or format schema included) nests near this.
MAX_DEPTH = 100


def json_body() -> dict[str, Any]:
    """The request's JSON object; 413 past CORRAL_MAX_REQUEST_BYTES, 415 if it is not sent as
    JSON, 400 if it is not valid JSON or not an object. An empty body is {}.

    Only application/json and */*+json are JSON, except that a form type or no Content-Type
    is read as JSON too when the request has neither Origin nor Sec-Fetch-Site: that is what
    `curl -d '{...}'` sends, and it is how Ollama's docs call the API. A browser always sends
    one of those two headers, and a page can send the form type (or text/plain) cross-site
    without a CORS preflight, so from a browser only a JSON type counts: such a body needed
    the preflight the CORS allowlist answers.
    """
    raw = _read_body(services().settings.max_request_bytes)
    if not raw.strip():
        return {}
    _check_media_type()
    body = _parse(raw)
    if not _shallow(body, MAX_DEPTH):
        raise InvalidRequest(_too_deep())
    if not isinstance(body, dict):
        raise InvalidRequest("invalid JSON body: expected an object")
    return body


def _read_body(limit: int) -> bytes:
    """The raw body; 413 when it is over `limit` (before reading it, when it says its size)."""
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(_too_large(limit))
    # A chunked body states no length: Werkzeug then reads up to max_content_length and stops
    # there without an error, so read one byte past the limit to see that there is more.
    request.max_content_length = limit + 1
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise PayloadTooLarge(_too_large(limit)) from None
    if len(raw) > limit:
        raise PayloadTooLarge(_too_large(limit))
    return raw


def _too_large(limit: int) -> str:
    return f"request body too large: more than {limit} bytes (CORRAL_MAX_REQUEST_BYTES)"


def _check_media_type() -> None:
    """415 unless the body is sent as JSON (or leniently, see json_body)."""
    mimetype = request.mimetype  # lower case, without parameters such as charset
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return
    from_browser = "Origin" in request.headers or "Sec-Fetch-Site" in request.headers
    if mimetype in LENIENT_TYPES and not from_browser:
        return
    sent = f"Content-Type '{request.content_type}'" if mimetype else "no Content-Type"
    raise UnsupportedMediaType(f"invalid request body: {sent}; send it as application/json")


def _parse(raw: bytes) -> Any:
    """Decode JSON; 400 naming the body for bad syntax, bad UTF-8 or absurd nesting."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"invalid JSON body: {exc}") from None
    except RecursionError:
        raise InvalidRequest(_too_deep()) from None


def _shallow(value: Any, limit: int) -> bool:
    """True if no array or object in `value` is nested more than `limit` deep.

    Level by level rather than recursively, since recursion is what deep input breaks.
    """
    level = [value] if isinstance(value, dict | list) else []
    for _ in range(limit):
        level = [child for node in level
                 for child in (node.values() if isinstance(node, dict) else node)
                 if isinstance(child, dict | list)]
        if not level:
            return True
    return False


def _too_deep() -> str:
    return f"invalid JSON body: nested deeper than {MAX_DEPTH} levels"


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


MAX_IDEMPOTENCY_KEY = 255  # the jobs and batches tables' idempotency_key columns


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header: None when absent or empty (an empty key names
    nothing to repeat), 400 when longer than the column that stores it."""
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(f"invalid header 'Idempotency-Key': longer than "
                             f"{MAX_IDEMPOTENCY_KEY} characters")
    return key
