"""The OpenAI-compatible face at /v1: models, chat completions, completions and embeddings.

Requests become the same jobs the Ollama face queues (openai_types translates them), and
answers are relayed from the job's events as OpenAI objects: whole, or as Server-Sent Events
ending in `data: [DONE]`. Errors leave in OpenAI's shape, `{"error": {"message", "type",
"param", "code"}}`, so OpenAI's clients raise their own exception classes (BadRequestError,
NotFoundError, ...); the app-wide `{"error": "..."}` would not parse as one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify
from werkzeug.exceptions import HTTPException

from service.api import openai_types as types
from service.api.fields import json_body
from service.api.ollama_embed import embed
from service.api.relay import collect, open_events
from service.app import services
from service.errors import CorralError, InvalidRequest, ModelNotFound
from service.events import Event
from service.jobs import JobKind

log = logging.getLogger(__name__)

bp = Blueprint("openai", __name__, url_prefix="/v1")


@bp.errorhandler(CorralError)
def corral_error(exc: CorralError):
    return jsonify(types.error_body(exc)), exc.status, exc.headers


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    error = CorralError(exc.description or exc.name)
    error.status = exc.code or 500
    return jsonify(types.error_body(error)), error.status


@bp.errorhandler(Exception)
def unexpected(exc: Exception):
    log.exception("unhandled error")
    error = CorralError(f"internal error: {type(exc).__name__}: {exc}")
    return jsonify(types.error_body(error)), 500


@bp.get("/models")
def list_models():
    models = services().store.list()
    return jsonify({"object": "list", "data": [types.model_object(m) for m in models]})


@bp.get("/models/<path:name>")
def get_model(name: str):
    try:
        model = services().store.resolve(name)
    except InvalidRequest:  # a name that cannot exist is, to OpenAI's clients, just absent
        raise ModelNotFound(name) from None
    return jsonify(types.model_object(model))


@bp.post("/chat/completions")
def chat_completions():
    return _answer(JobKind.CHAT, types.chat_request(json_body()), "chatcmpl")


@bp.post("/completions")
def completions():
    return _answer(JobKind.GENERATE, types.completion_request(json_body()), "cmpl")


@bp.post("/embeddings")
def embeddings():
    req, encoding = types.embedding_request(json_body())
    return jsonify(types.embedding_list(req.model, embed(req), encoding))


def _answer(kind: JobKind, parsed: types.Parsed, prefix: str):
    """Queue the job, then answer whole or as SSE once a worker has taken it."""
    ctx = services()
    ctx.store.resolve(parsed.job.model)
    job = ctx.queue.submit(kind, parsed.job.model, parsed.job.to_job(),
                           queue=ctx.default_queue)
    events = open_events(ctx, job)
    reply = types.Reply(f"{prefix}-{job.id}", parsed.job.model, int(time.time()),
                        chat=kind is JobKind.CHAT)
    if parsed.stream:
        return _sse(events, reply, parsed.include_usage)
    text, done = collect(events)
    return jsonify(reply.whole(text, done))


def _objects(events: Iterator[Event], reply: types.Reply, include_usage: bool
             ) -> Iterator[dict[str, Any]]:
    """The stream's objects: text chunks, the finish_reason chunk, then usage if asked."""
    first = True
    for event in events:
        if event.type == "token":
            yield reply.chunk(event.data["text"], first)
            first = False
        elif event.type == "done":
            yield reply.last(event.data, first)
            if include_usage:
                yield reply.usage_chunk(event.data)
            return
        elif event.type == "error":
            failure = CorralError(event.data.get("error", "job failed"))
            yield types.error_body(failure)
            return


def _sse(events: Iterator[Event], reply: types.Reply, include_usage: bool) -> Response:
    """Stream as OpenAI does: `data: {...}` blocks, then `data: [DONE]` unless the job failed.

    With include_usage every chunk carries `"usage": null` and the last one the totals.
    """

    def blocks() -> Iterator[str]:
        for obj in _objects(events, reply, include_usage):
            if include_usage and "error" not in obj:
                obj.setdefault("usage", None)
            yield f"data: {json.dumps(obj)}\n\n"
            if "error" in obj:
                return
        yield "data: [DONE]\n\n"

    return Response(blocks(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
