"""What every worker has loaded, kept in Redis so /api/ps can answer for all of them.

Each worker writes one key, `corral:worker:<hostname>:<pid>:<instance>`, holding its loaded
models as JSON, refreshed by a heartbeat and expiring after a few seconds without one: a
worker that dies drops out of /api/ps on its own. Entries already have Ollama's /api/ps shape
(api.ProcessModelResponse), with `worker` added to say where the model is.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import redis

PREFIX = "corral:worker:"
FOREVER_AT = "2318-08-02T00:00:00Z"  # what Ollama shows for keep_alive < 0 (max duration)


def worker_key(worker_id: str) -> str:
    return PREFIX + worker_id


def entry(name: str, digest: str, size: int, details: dict[str, Any],
          expires_at: datetime | None, *, context_length: int, worker: str) -> dict[str, Any]:
    """One loaded model as /api/ps lists it; expires_at None means kept forever."""
    return {
        "name": name,
        "model": name,
        "size": size,
        "digest": digest,
        "details": details,
        "expires_at": FOREVER_AT if expires_at is None else iso(expires_at),
        "size_vram": 0,  # corral's workers decode on the CPU
        "context_length": context_length,
        "worker": worker,
    }


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def publish(client: redis.Redis, worker_id: str, models: list[dict[str, Any]],
            ttl: float) -> None:
    """Replace this worker's list; it disappears after `ttl` seconds unless published again."""
    body = json.dumps({"worker": worker_id, "models": models})
    client.set(worker_key(worker_id), body, px=max(1, int(ttl * 1000)))


def alive(client: redis.Redis, worker_id: str) -> bool:
    """Whether `worker_id` published within its TTL (a dead worker's key expires)."""
    return bool(client.exists(worker_key(worker_id)))


def withdraw(client: redis.Redis, worker_id: str) -> None:
    client.delete(worker_key(worker_id))


def loaded(client: redis.Redis) -> list[dict[str, Any]]:
    """Every model loaded on any live worker, the longest still to stay first (as Ollama)."""
    keys = list(client.scan_iter(match=PREFIX + "*", count=200))
    models: list[dict[str, Any]] = []
    for raw in client.mget(keys) if keys else []:
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            models.extend(json.loads(raw).get("models") or [])
        except (ValueError, AttributeError):
            continue
    return sorted(models, key=lambda m: m.get("expires_at") or "", reverse=True)
