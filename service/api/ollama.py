"""The Ollama-compatible inference face: /api/generate, /api/chat, /api/tags, /api/version."""

from __future__ import annotations

from functools import partial

from flask import Blueprint, jsonify

from service import __version__
from service.api import ollama_types as types
from service.api.fields import json_body
from service.api.relay import collect, ndjson, open_events
from service.app import services
from service.control import request_cancel
from service.jobs import JobKind

bp = Blueprint("ollama", __name__, url_prefix="/api")


def _run(kind: JobKind, req, chunk, final):
    """Queue the job on the model's device queue, then stream it or answer once it is done."""
    ctx = services()
    ctx.store.resolve(req.model)
    job = ctx.queue.submit(kind, req.model, req.to_job(), queue=ctx.default_queue)
    events = open_events(ctx, job)
    chunk, final = partial(chunk, req.model), partial(final, req.model)
    if req.stream:
        return ndjson(events, chunk, final, on_abort=partial(request_cancel, ctx.redis, job.id))
    text, done = collect(events)
    return jsonify(final(text, done))


@bp.post("/generate")
def generate():
    req = types.GenerateRequest.from_json(json_body())
    return _run(JobKind.GENERATE, req, types.generate_chunk, types.generate_final)


@bp.post("/chat")
def chat():
    req = types.ChatRequest.from_json(json_body())
    return _run(JobKind.CHAT, req, types.chat_chunk, types.chat_final)


@bp.get("/tags")
def tags():
    return jsonify({"models": [types.model_entry(m) for m in services().store.list()]})


@bp.get("/version")
def version():
    return jsonify({"version": __version__})
