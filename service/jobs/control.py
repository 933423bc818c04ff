"""Messages to every worker at once: cancel a running job, unload a model.

A job's own events travel on its channel (service.jobs.events); these go on one broadcast
channel that each worker's Runtime listens to, so the API need not know which worker holds
a job or a model.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

CHANNEL = "corral:control"
log = logging.getLogger(__name__)


def cancel_key(job_id: str) -> str:
    """Set when a job is cancelled, so a worker that starts it a moment later still sees it."""
    return f"corral:job:{job_id}:cancel"


def request_cancel(client: redis.Redis, job_id: str) -> None:
    """Ask whichever worker runs `job_id` to stop it within one decode step."""
    client.set(cancel_key(job_id), 1, ex=24 * 3600)
    send(client, "cancel", job=job_id)


def send(client: redis.Redis, op: str, **data: Any) -> int:
    """Broadcast one control message; return how many workers were listening."""
    return int(client.publish(CHANNEL, json.dumps({"op": op, **data})))


class Listener:
    """A daemon thread that calls handlers[op](message) for each control message."""

    def __init__(self, client: redis.Redis, handlers: dict[str, Callable[[dict], None]]) -> None:
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(CHANNEL)
        self._handlers = handlers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="corral-control", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._pubsub.get_message(timeout=0.5)
            except (redis.ConnectionError, ValueError):
                if self._stop.is_set():
                    return
                continue
            if message is None:
                continue
            try:
                body = json.loads(message["data"])
                handler = self._handlers.get(body.get("op"))
                if handler is not None:
                    handler(body)
            except Exception:  # one bad message must not stop the listener
                log.exception("control message failed: %r", message)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._pubsub.close()
