"""The errors corral reports to its users, each with the HTTP status it maps to.

One Flask handler turns a CorralError into `{"error": "..."}`; the CLI turns it into a
click.ClickException. Anything else that escapes is a bug and is logged, not shown.
"""

from __future__ import annotations


class CorralError(Exception):
    """Base class: a message for the user and the HTTP status that carries it."""

    status = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class SettingsError(CorralError):
    """An environment variable has a value corral cannot use."""


class InvalidRequest(CorralError):
    """The request is malformed: bad JSON, a missing field, a field of the wrong type."""

    status = 400


class Unauthorized(CorralError):
    """The request needs an API key and brought none, or one that is unknown or revoked."""

    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="corral"'})


class Forbidden(CorralError):
    """The request came through a door kept shut: a foreign Host or Origin, or a key whose
    role or model allowlist does not cover it."""

    status = 403


class PayloadTooLarge(CorralError):
    """The request body is larger than the service reads (CORRAL_MAX_REQUEST_BYTES)."""

    status = 413


class UnsupportedMediaType(CorralError):
    """The body's Content-Type is not one the endpoint reads (not JSON where JSON is read)."""

    status = 415


class ModelNotFound(CorralError):
    """No model of that name is in the store."""

    status = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found, try pulling it first")
        self.name = name


class NotFound(CorralError):
    """Some other named thing (a job, a blob) does not exist."""

    status = 404


class Conflict(CorralError):
    """The request contradicts the current state, e.g. cancelling a finished job."""

    status = 409


class QueueFull(CorralError):
    """Too many requests are already waiting."""

    status = 503


class ServiceUnavailable(CorralError):
    """No worker took the job in time, or a backing service is down."""

    status = 503


class JobFailed(CorralError):
    """The worker reported an error while running the job (e.g. the model failed to load)."""

    status = 500
