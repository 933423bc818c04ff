"""What every worker has loaded, kept in Redis so /api/ps can answer for all of them.

Each worker writes one key, `corral:worker:<hostname>:<pid>:<instance>`, holding its loaded
models as JSON, refreshed by a heartbeat and expiring after a few seconds without one: a
worker that dies drops out of /api/ps on its own. Entries already have Ollama's /api/ps shape
(api.ProcessModelResponse), with `worker` added to say where the model is.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import redis

PREFIX = "corral:worker:"
SEEN = "corral:seen:"  # what a worker said of itself, kept a grace period past its last beat
GRACE = 60.0  # seconds a silent worker is still listed, as dead, before it is dropped
FOREVER_AT = "2318-08-02T00:00:00Z"  # what Ollama shows for keep_alive < 0 (max duration)


def new_worker_id() -> str:
    """A name for this worker process in the fleet and on every lease it holds:
    host:pid:random, so a restarted worker is never taken for the one that died."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


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
            ttl: float, about: dict[str, Any] | None = None) -> None:
    """Replace this worker's list; it disappears after `ttl` seconds unless published again.

    `about` (host, node, device, queues, slots, jobs held) goes beside it under a key that
    outlives the heartbeat by GRACE, so `corral workers` can show a worker that went silent
    as dead for a while instead of it vanishing at once."""
    body = {"worker": worker_id, "models": models}
    with client.pipeline(transaction=False) as pipe:
        pipe.set(worker_key(worker_id), json.dumps(body), px=max(1, int(ttl * 1000)))
        if about is not None:
            seen = {**body, "about": about, "heartbeat_at": datetime.now(UTC).timestamp()}
            pipe.set(SEEN + worker_id, json.dumps(seen), px=int(GRACE * 1000))
        pipe.execute()


def alive(client: redis.Redis, worker_id: str) -> bool:
    """Whether `worker_id` published within its TTL (a dead worker's key expires)."""
    return bool(client.exists(worker_key(worker_id)))


def withdraw(client: redis.Redis, worker_id: str) -> None:
    """A worker stopping says so: it leaves the fleet at once, not after the grace period."""
    client.delete(worker_key(worker_id), SEEN + worker_id)


def workers(client: redis.Redis) -> list[dict[str, Any]]:
    """Every worker heard from within GRACE: what it said of itself, the models it holds,
    how long since its last beat, and whether it is alive (its heartbeat key still stands)."""
    keys = sorted(client.scan_iter(match=SEEN + "*", count=200))
    now = datetime.now(UTC).timestamp()
    found: list[dict[str, Any]] = []
    for raw in client.mget(keys) if keys else []:
        try:
            seen = json.loads(raw) if raw is not None else None
            worker_id = seen["worker"]
        except (ValueError, TypeError, KeyError):
            continue  # expired between SCAN and MGET, or not ours
        found.append({"worker": worker_id, **(seen.get("about") or {}),
                      "models": [m.get("name") for m in seen.get("models") or []],
                      "heartbeat_age": round(max(0.0, now - seen["heartbeat_at"]), 1),
                      "alive": alive(client, worker_id)})
    return found


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
