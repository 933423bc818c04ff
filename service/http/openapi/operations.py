"""Building blocks of the document's operations: bodies, parameters and answers.

Every face's errors are `{"error": "..."}` (components.schemas.Error) except /v1's, which are
OpenAI's error object (OpenAIError). Every route may answer 401 (an API key is needed and
missing, unknown or revoked), 403 (the front door refuses a foreign Host or Origin, or the
key's role or model allowlist does not cover it) and 503 with Retry-After (Redis cannot be
reached); a route that
reads a JSON body may answer 400, 413 and 415 too (service.http.inputs.json_body).
"""

from __future__ import annotations

from typing import Any

from service.http.openapi.schemas import Schema, ref

Operation = dict[str, Any]

ALWAYS = (401, 403, 503)
BODY = (400, 413, 415)
REASONS = {400: "bad input: the message names the field", 401: "an API key is needed: none "
           "was sent, or it is unknown or revoked", 403: "refused: a foreign Host or Origin, "
           "or a key whose role or model allowlist does not cover this",
           404: "no such model, job, batch, file or blob",
           409: "the state does not allow it (e.g. cancelling a finished job)",
           413: "the body is larger than CORRAL_MAX_REQUEST_BYTES (or CORRAL_MAX_UPLOAD)",
           415: "the body is not sent as JSON", 503: "Redis cannot be reached, the queue is "
           "full, or no worker took the job in time (Retry-After may say when to retry)"}


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def answer(description: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, **({"content": content} if content else {})}


def streamed(schema: Schema, media: str = "application/x-ndjson",
             each: Schema | None = None) -> dict[str, Any]:
    """An answer that is JSON when `stream` is false and a stream of lines (or SSE events,
    each described by `each`) otherwise."""
    return {**json_content(schema), media: {"schema": each or {"type": "string"}}}


def operation(summary: str, tag: str, ok: dict[str, dict[str, Any]], *,
              errors: tuple[int, ...] = (), body: dict[str, Any] | None = None,
              parameters: list[Schema] = (), error_schema: str = "Error") -> Operation:
    """One operation: its answers (status → answer) and the errors it may give."""
    statuses = set(errors) | set(ALWAYS) | (set(BODY) if body and _json_body(body) else set())
    responses = {str(status): answer_ for status, answer_ in ok.items()}
    for status in sorted(statuses):
        responses[str(status)] = answer(REASONS[status], json_content(ref(error_schema)))
    op: Operation = {"summary": summary, "tags": [tag], "responses": responses}
    if body is not None:
        op["requestBody"] = body
    if parameters:
        op["parameters"] = list(parameters)
    return op


def _json_body(body: dict[str, Any]) -> bool:
    return "application/json" in body.get("content", {})


def json_body(schema: Schema, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": json_content(schema)}


def path_param(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


def query(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def header(name: str, description: str) -> Schema:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string"}}
