"""OpenAI's inference endpoints at /v1: models, chat completions, completions, embeddings.

Requests become the same jobs the Ollama face queues (openai.types translates them), and
answers are relayed from the job's events as OpenAI objects: whole, or as Server-Sent Events
ending in `data: [DONE]`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify

from service.core.errors import CorralError, InvalidRequest, ModelNotFound
from service.http import access
from service.http.embeddings import embed
from service.http.inputs import json_body
from service.http.openai import types
from service.http.relay import (
    LOST_MID_STREAM,
    SSE_HEADERS,
    Following,
    collect,
    follow,
    refused_before_output,
    streamed,
)
from service.http.services import services
from service.jobs.events import retrying
from service.jobs.kinds import JobKind

bp = Blueprint("completions", __name__)


@bp.get("/models")
def list_models():
    models = [m for m in services().store.list() if access.principal().may_use(str(m.name))]
    return jsonify({"object": "list", "data": [types.model_object(m) for m in models]})


@bp.get("/models/<path:name>")
def get_model(name: str):
    try:
        access.check_model(name)
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
    following = follow(kind, parsed.job)
    reply = types.Reply(f"{prefix}-{following.job.id}", parsed.job.model, int(time.time()),
                        chat=kind is JobKind.CHAT)
    if parsed.stream:
        return _sse(refused_before_output(following), reply, parsed.include_usage)
    text, done = collect(following.events)
    return jsonify(reply.whole(text, done))


def _objects(following: Following, reply: types.Reply, include_usage: bool
             ) -> Iterator[dict[str, Any]]:
    """The stream's objects: text chunks, the finish_reason chunk, then usage if asked."""
    first = True
    for event in following.events:
        if retrying(event) and not first:  # text went out already (see relay.ndjson)
            following.cancel()
            yield types.error_body(CorralError(LOST_MID_STREAM))
            return
        if event.type == "token":
            yield reply.chunk(event.data["text"], first, event.data.get("logprobs"))
            first = False
        elif event.type == "thinking" and reply.chat:
            yield reply.reasoning_chunk(event.data["text"], first)
            first = False
        elif event.type == "tool_calls":
            yield reply.calls_chunk(event.data["tool_calls"], first)
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


def _sse(following: Following, reply: types.Reply, include_usage: bool) -> Response:
    """Stream as OpenAI does: `data: {...}` blocks, then `data: [DONE]` unless the job failed.

    With include_usage every chunk carries `"usage": null` and the last one the totals.
    """

    def blocks() -> Iterator[str]:
        for obj in _objects(following, reply, include_usage):
            if include_usage and "error" not in obj:
                obj.setdefault("usage", None)
            yield f"data: {json.dumps(obj)}\n\n"
            if "error" in obj:
                return
        yield "data: [DONE]\n\n"

    return streamed(blocks(), "text/event-stream", following.cancel, SSE_HEADERS)
