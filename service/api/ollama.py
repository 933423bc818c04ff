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


def _submit(kind: JobKind, model_name: str, job_request: dict):
    """Check the model exists, then queue the job on the model's device queue."""
    ctx = services()
    ctx.store.resolve(model_name)
    return ctx, ctx.queue.submit(kind, model_name, job_request, queue=ctx.default_queue)


@bp.post("/generate")
def generate():
    req = types.GenerateRequest.from_json(json_body())
    ctx, job = _submit(JobKind.GENERATE, req.model, req.to_job())
    events = open_events(ctx, job)
    if req.stream:
        return ndjson(events, partial(types.generate_chunk, req.model),
                      partial(types.generate_final, req.model),
                      on_abort=partial(request_cancel, ctx.redis, job.id))
    text, done = collect(events)
    return jsonify(types.generate_final(req.model, text, done))


@bp.post("/chat")
def chat():
    req = types.ChatRequest.from_json(json_body())
    ctx, job = _submit(JobKind.CHAT, req.model, req.to_job())
    events = open_events(ctx, job)
    if req.stream:
        return ndjson(events, partial(types.chat_chunk, req.model),
                      partial(types.chat_final, req.model),
                      on_abort=partial(request_cancel, ctx.redis, job.id))
    text, done = collect(events)
    return jsonify(types.chat_final(req.model, text, done))


@bp.get("/tags")
def tags():
    return jsonify({"models": [types.model_entry(m) for m in services().store.list()]})


@bp.get("/version")
def version():
    return jsonify({"version": __version__})
