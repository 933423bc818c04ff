"""The Ollama embeddings face: /api/embed (a batch of inputs) and the legacy /api/embeddings.

Both queue one `embed` job; the worker pools and L2-normalises every vector (workers/embed.py)
and sends them back in the job's `done` event. The OpenAI face's /v1/embeddings runs through
`embed()` here too, so all three answer from the same vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flask import Blueprint, jsonify

from service.api.fields import field as read
from service.api.fields import json_body
from service.api.ollama_types import _keep_alive
from service.api.relay import open_events, outcome
from service.app import services
from service.errors import InvalidRequest
from service.jobs import JobKind
from service.modelfile import coerce_options

bp = Blueprint("ollama_embed", __name__, url_prefix="/api")


def _inputs(body: dict[str, Any]) -> list[str]:
    """`input`: one string or a list of strings; "" or [] embeds nothing (only loads the model)."""
    value = read(body, "input", (str, list), "")
    if isinstance(value, str):
        return [value] if value else []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise InvalidRequest(f"invalid field 'input[{i}]': expected a non-empty string")
    return list(value)


def _dimensions(body: dict[str, Any]) -> int | None:
    value = read(body, "dimensions", int)
    if value is not None and value < 1:
        raise InvalidRequest("invalid field 'dimensions': must be at least 1")
    return value


@dataclass
class EmbedRequest:
    """POST /api/embed (and what /api/embeddings and /v1/embeddings are translated into)."""

    model: str  # model name
    input: list[str] = field(default_factory=list)  # texts to embed; one vector each, in order
    truncate: bool = True  # cut a too-long input to the context; false makes it a 400 instead
    dimensions: int | None = None  # keep the first N dimensions (re-normalised); None keeps all
    options: dict[str, Any] = field(default_factory=dict)  # runtime options, checked as elsewhere
    keep_alive: float | None = None  # seconds to keep the model loaded after this request

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> EmbedRequest:
        return cls(
            model=read(body, "model", str, required=True),
            input=_inputs(body),
            truncate=read(body, "truncate", bool, True),
            dimensions=_dimensions(body),
            options=coerce_options(read(body, "options", dict, {})),
            keep_alive=_keep_alive(body),
        )

    def to_job(self) -> dict[str, Any]:
        """The JSON the worker receives (workers/embed.py reads input, truncate, keep_alive)."""
        return {"input": self.input, "truncate": self.truncate, "options": self.options,
                "keep_alive": self.keep_alive}


def embed(req: EmbedRequest) -> dict[str, Any]:
    """Queue an embed job, wait for it, and return its done data with the vectors shortened."""
    ctx = services()
    ctx.store.resolve(req.model)
    job = ctx.queue.submit(JobKind.EMBED, req.model, req.to_job(), queue=ctx.default_queue)
    done = outcome(open_events(ctx, job))
    if req.dimensions is not None:
        done["embeddings"] = [shorten(v, req.dimensions) for v in done.get("embeddings", [])]
    return done


def shorten(vector: list[float], dimensions: int) -> list[float]:
    """Keep the first `dimensions` values and scale them back to unit length (as Ollama does)."""
    if dimensions > len(vector):
        raise InvalidRequest(f"invalid field 'dimensions': the model's vectors have "
                             f"{len(vector)} dimensions")
    head = np.asarray(vector[:dimensions], dtype=np.float64)
    norm = np.linalg.norm(head)
    return (head / norm if norm > 0 else head).astype(np.float32).tolist()


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
    prompt = read(body, "prompt", str, "")
    req = EmbedRequest.from_json({**body, "input": prompt})
    done = embed(req)
    vectors = done.get("embeddings", [])
    return jsonify({"embedding": vectors[0] if vectors else []})
