"""Every error leaves as JSON with its status: never an HTML page, never a stack trace.

The app answers `{"error": "..."}`; the OpenAI face answers OpenAI's error object instead,
so OpenAI's clients raise their own exception classes (BadRequestError, NotFoundError, ...).
A lost connection to Redis (down, or restarting under `corral serve`) is a 503 with
Retry-After, not a 500: the client can retry, and nothing in corral is broken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kombu.exceptions
import redis
from flask import Blueprint, Flask, jsonify
from werkzeug.exceptions import HTTPException

from service.core.errors import CorralError, ServiceUnavailable

log = logging.getLogger(__name__)

Shape = Callable[[CorralError], dict[str, Any]]

# Raised when Redis cannot be reached: redis-py's own errors (BusyLoadingError, while a
# restarted server loads its append-only file, is a ConnectionError), and kombu's
# OperationalError, which Celery's send_task raises in their place once its retries are spent.
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError)
RETRY_AFTER = "2"  # seconds: about what `corral serve` takes to bring Redis back


def plain(exc: CorralError) -> dict[str, Any]:
    """corral's own error shape."""
    return {"error": exc.message}


def install(target: Flask | Blueprint, shape: Shape = plain) -> None:
    """Answer CorralErrors, HTTP errors, an unreachable Redis (503) and anything unexpected
    in `shape` on `target`."""

    def corral_error(exc: CorralError):
        return jsonify(shape(exc)), exc.status, exc.headers

    def http_error(exc: HTTPException):
        error = CorralError(exc.description or exc.name)
        error.status = exc.code or 500
        return jsonify(shape(error)), error.status

    def unreachable(exc: Exception):
        log.warning("Redis is unreachable: %s: %s", type(exc).__name__, exc)
        return corral_error(ServiceUnavailable(
            "service unavailable: the job queue (Redis) cannot be reached; retry shortly",
            headers={"Retry-After": RETRY_AFTER}))

    def unexpected(exc: Exception):
        log.exception("unhandled error")
        error = CorralError(f"internal error: {type(exc).__name__}: {exc}")
        return jsonify(shape(error)), 500

    target.register_error_handler(CorralError, corral_error)
    target.register_error_handler(HTTPException, http_error)
    for error in UNREACHABLE:
        target.register_error_handler(error, unreachable)
    target.register_error_handler(Exception, unexpected)
