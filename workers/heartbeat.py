"""Tell the fleet (service.fleet) what this worker has loaded.

A daemon thread looks at the pool every second and publishes when anything changed, and at
least every few seconds so the key outlives its TTL only while the worker lives. The runner
also calls `publish()` right after it loads or unloads, so a client that sees a request end
and then asks /api/ps sees the result of that request.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from service import fleet
from service.errors import CorralError

log = logging.getLogger(__name__)

INTERVAL = 1.0  # seconds between looks at the pool
TTL = 10.0  # seconds a published list outlives the last heartbeat


class Heartbeat:
    """Publishes one Runtime's loaded models; `close()` withdraws them."""

    def __init__(self, runtime: Any, client: redis.Redis) -> None:
        self.runtime = runtime
        self.client = client
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._details: dict[str, dict[str, Any]] = {}
        self._last: tuple = ()
        self._published = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="corral-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            try:
                stale = time.monotonic() - self._published > TTL / 3
                self.publish(only_if_changed=not stale)
            except (redis.RedisError, OSError):
                log.warning("could not publish loaded models", exc_info=True)

    def publish(self, only_if_changed: bool = False) -> None:
        """Write what the pool holds now (skipped when nothing changed, if asked)."""
        with self._lock:
            loaded = self.runtime.pool.loaded()
            state = tuple((m.key, m.users, m.expires_at) for m in loaded)
            if only_if_changed and state == self._last:
                return
            models = [self._entry(m) for m in loaded]
            fleet.publish(self.client, self.worker_id, models, TTL)
            self._last, self._published = state, time.monotonic()

    def _entry(self, loaded: Any) -> dict[str, Any]:
        name = loaded.info.get("name", loaded.key)
        settings = self.runtime.settings
        return fleet.entry(
            name,
            loaded.info.get("digest") or loaded.key.rpartition("@")[2],
            int(getattr(loaded.engine, "size_bytes", 0) or 0),
            self._details_of(loaded.key, name),
            self._expires_at(loaded, settings.keep_alive),
            context_length=settings.num_ctx,
            worker=self.worker_id,
        )

    def _details_of(self, key: str, name: str) -> dict[str, Any]:
        if key not in self._details:
            try:
                self._details[key] = self.runtime.store.resolve(name).details()
            except (CorralError, OSError, ValueError):
                return {}
        return self._details[key]

    @staticmethod
    def _expires_at(loaded: Any, keep_alive: float) -> datetime | None:
        """Wall-clock expiry: in use counts as now + keep_alive (Ollama); None is forever."""
        now = datetime.now(UTC)
        if loaded.expires_at is not None:
            return now + timedelta(seconds=loaded.expires_at - time.monotonic())
        if loaded.users > 0:
            return now + timedelta(seconds=max(keep_alive, 0))
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        try:
            fleet.withdraw(self.client, self.worker_id)
        except (redis.RedisError, OSError):
            pass
