"""The Ollama embeddings face: /api/embed (a batch of inputs) and the legacy /api/embeddings.

Both queue one `embed` job through service.http.embeddings, as /v1/embeddings does, so all
three answer from the same vectors.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from service.core.fields import field
from service.http.embeddings import embed
from service.http.inputs import json_body
from service.jobs.requests import EmbedRequest

bp = Blueprint("embed", __name__)


def _durations(done: dict[str, Any]) -> dict[str, int]:
    keys = ("total_duration", "load_duration", "prompt_eval_count")
    return {k: int(done.get(k) or 0) for k in keys}


@bp.post("/embed")
def embed_batch():
    req = EmbedRequest.from_json(json_body())
    done = embed(req)
    return jsonify({"model": req.model, "embeddings": done.get("embeddings", []),
                    **_durations(done)})


@bp.post("/embeddings")
def embed_legacy():
    """The older single-prompt endpoint: `prompt` in, one `embedding` out ([] for "")."""
    body = json_body()
    prompt = field(body, "prompt", str, "")
    req = EmbedRequest.from_json({**body, "input": prompt})
    done = embed(req)
    vectors = done.get("embeddings", [])
    return jsonify({"embedding": vectors[0] if vectors else []})
