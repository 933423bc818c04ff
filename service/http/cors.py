"""Cross-origin access as Ollama allows it: local origins always, CORRAL_ORIGINS in addition.

Browser front ends (Open WebUI and the like) call the API from another origin; without these
headers the browser blocks them. Only listed origins are echoed back, never "*".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from flask import Flask, Response, request

_LOCAL = re.compile(r"^(https?://(localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\])(:\d+)?"
                    r"|app://.*|file://.*|tauri://.*|vscode-webview://.*)$")


def allowed(origin: str, extra: Iterable[str]) -> bool:
    """True if `origin` is local or matches one of CORRAL_ORIGINS (which may end in *)."""
    if _LOCAL.match(origin):
        return True
    for pattern in extra:
        if pattern == "*" or origin == pattern or (
                pattern.endswith("*") and origin.startswith(pattern[:-1])):
            return True
    return False


def install(app: Flask, extra: Iterable[str]) -> None:
    """Answer preflight requests and add CORS headers for allowed origins."""
    extra = tuple(extra)

    @app.before_request
    def preflight():
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and origin and allowed(origin, extra):
            return Response(status=204)
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and allowed(origin, extra):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, HEAD, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, User-Agent")
        return response
