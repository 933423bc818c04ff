"""The Ollama inference face: /api/generate, /api/chat, /api/tags, /api/version."""

from __future__ import annotations

from functools import partial

from flask import Blueprint, jsonify

from service.core.version import __version__
from service.http import access
from service.http.inputs import json_body
from service.http.ollama import types
from service.http.relay import collect, follow, ndjson, with_logprobs
from service.http.services import services
from service.jobs.kinds import JobKind
from service.jobs.requests import ChatRequest, GenerateRequest

bp = Blueprint("generate", __name__)


def _run(kind: JobKind, req: GenerateRequest | ChatRequest, chunk, final, calls=None):
    """Queue the job on the model's device queue, then stream it or answer once it is done."""
    following = follow(kind, req)
    chunk, final = partial(chunk, req.model), partial(final, req.model)
    if req.stream:
        return ndjson(following, chunk, final, calls and partial(calls, req.model))
    text, done = collect(following.events)
    return jsonify(with_logprobs(final(text, done), done))


@bp.post("/generate")
def generate():
    req = GenerateRequest.from_json(json_body())
    return _run(JobKind.GENERATE, req, types.generate_chunk, types.generate_final)


@bp.post("/chat")
def chat():
    req = ChatRequest.from_json(json_body())
    return _run(JobKind.CHAT, req, types.chat_chunk, types.chat_final, types.chat_calls)


@bp.get("/tags")
def tags():
    models = [m for m in services().store.list() if access.principal().may_use(str(m.name))]
    return jsonify({"models": [types.model_entry(m) for m in models]})


@bp.get("/version")
@access.open_door
def version():
    return jsonify({"version": __version__})
