"""The embed path every face shares: /api/embed, /api/embeddings and /v1/embeddings.

Each queues one `embed` job; the worker pools and L2-normalises every vector
(workers/kinds/embed.py) and sends them back in the job's `done` event.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.core.errors import InvalidRequest
from service.http.relay import follow, outcome
from service.jobs.kinds import JobKind
from service.jobs.requests import EmbedRequest


def embed(req: EmbedRequest) -> dict[str, Any]:
    """Queue an embed job, wait for it, and return its done data with the vectors shortened."""
    done = outcome(follow(JobKind.EMBED, req).events)
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
