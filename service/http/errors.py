"""Every error leaves as JSON with its status: never an HTML page, never a stack trace.

The app answers `{"error": "..."}`; the OpenAI face answers OpenAI's error object instead,
so OpenAI's clients raise their own exception classes (BadRequestError, NotFoundError, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, jsonify
from werkzeug.exceptions import HTTPException

from service.core.errors import CorralError

log = logging.getLogger(__name__)

Shape = Callable[[CorralError], dict[str, Any]]


def plain(exc: CorralError) -> dict[str, Any]:
    """corral's own error shape."""
    return {"error": exc.message}


def install(target: Flask | Blueprint, shape: Shape = plain) -> None:
    """Answer CorralErrors, HTTP errors and anything unexpected in `shape` on `target`."""

    def corral_error(exc: CorralError):
        return jsonify(shape(exc)), exc.status, exc.headers

    def http_error(exc: HTTPException):
        error = CorralError(exc.description or exc.name)
        error.status = exc.code or 500
        return jsonify(shape(error)), error.status

    def unexpected(exc: Exception):
        log.exception("unhandled error")
        error = CorralError(f"internal error: {type(exc).__name__}: {exc}")
        return jsonify(shape(error)), 500

    target.register_error_handler(CorralError, corral_error)
    target.register_error_handler(HTTPException, http_error)
    target.register_error_handler(Exception, unexpected)
