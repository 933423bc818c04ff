"""Tell the fleet (service.jobs.fleet) what this worker has loaded.

A daemon thread looks at the pool every second and publishes when anything changed, and at
least every few seconds so the key outlives its TTL only while the worker lives. Handlers
also calls `publish()` right after it loads or unloads, so a client that sees a request end
and then asks /api/ps sees the result of that request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from service.core.settings import CENTURY
from service.jobs import fleet
from workers.model_pool import Loaded

log = logging.getLogger(__name__)

INTERVAL = 1.0  # seconds between looks at the pool
TTL = 10.0  # seconds a published list outlives the last heartbeat


class Heartbeat:
    """Publishes what a worker's pool holds; `close()` withdraws it.

    `loaded()` lists the pool's models and `details(name)` describes one for /api/ps (looked
    up once per loaded model); keep_alive and context_length are the worker's settings.
    """

    def __init__(self, client: redis.Redis, loaded: Callable[[], list[Loaded]],
                 details: Callable[[str], dict[str, Any]], *, worker_id: str, keep_alive: float,
                 context_length: int,
                 about: Callable[[], dict[str, Any]] | None = None) -> None:
        self.client = client
        self.worker_id = worker_id
        self._loaded = loaded
        self._describe = details
        self._about = about  # what the worker says of itself (host, node, slots, jobs held)
        self.keep_alive = keep_alive
        self.context_length = context_length
        self._details: dict[str, dict[str, Any]] = {}
        self._last: tuple = ()
        self._published = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by nudge() and close(): look at once
        self._thread = threading.Thread(target=self._run, name="corral-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Publish at once, then every INTERVAL, until closed; nothing may end this loop, or
        /api/ps would lose the worker's models for the rest of its life, and a cancel would take
        the worker for dead (the fleet key is how service.jobs.fleet.alive tells)."""
        while True:
            try:
                stale = time.monotonic() - self._published > TTL / 3
                self.publish(only_if_changed=not stale)
            except (redis.RedisError, OSError):
                log.warning("could not publish loaded models", exc_info=True)
            except Exception:
                log.exception("publishing loaded models failed")
            self._wake.wait(INTERVAL)
            self._wake.clear()
            if self._stop.is_set():
                return

    def nudge(self) -> None:
        """Publish soon, from the heartbeat's thread (a job took or left a slot: routing,
        service.jobs.routing, should know within milliseconds, not a second)."""
        self._wake.set()

    def publish(self, only_if_changed: bool = False) -> None:
        """Write what the pool holds now (skipped when nothing changed, if asked)."""
        with self._lock:
            loaded = self._loaded()
            about = self._about() if self._about is not None else None
            state = (tuple((m.key, m.users, m.expires_at) for m in loaded), repr(about))
            if only_if_changed and state == self._last:
                return
            models = [entry for m in loaded if (entry := self._safe_entry(m)) is not None]
            fleet.publish(self.client, self.worker_id, models, TTL, about)
            self._last, self._published = state, time.monotonic()

    def _safe_entry(self, loaded: Loaded) -> dict[str, Any] | None:
        """One model's entry, or None (logged) if it cannot be described: one bad entry must
        not take the others off /api/ps."""
        try:
            return self._entry(loaded)
        except Exception:
            log.exception("could not describe loaded model %s", loaded.key)
            return None

    def _entry(self, loaded: Loaded) -> dict[str, Any]:
        name = loaded.info.get("name", loaded.key)
        return fleet.entry(
            name,
            loaded.info.get("digest") or loaded.key.rpartition("@")[2],
            int(getattr(loaded.engine, "size_bytes", 0) or 0),
            self._details_of(loaded.key, name),
            self._expires_at(loaded, self.keep_alive),
            context_length=self.context_length,
            worker=self.worker_id,
        )

    def _details_of(self, key: str, name: str) -> dict[str, Any]:
        if key not in self._details:
            details = self._describe(name)
            if not details:
                return {}
            self._details[key] = details
        return self._details[key]

    @staticmethod
    def _expires_at(loaded: Loaded, keep_alive: float) -> datetime | None:
        """Wall-clock expiry: in use counts as now + keep_alive (Ollama); None is forever."""
        if loaded.expires_at is not None:
            return _after(loaded.expires_at - time.monotonic())
        if loaded.users > 0 and keep_alive >= 0:
            return _after(keep_alive)
        return None

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(2)
        try:
            fleet.withdraw(self.client, self.worker_id)
        except (redis.RedisError, OSError):
            pass


def _after(seconds: float) -> datetime | None:
    """Now plus `seconds`, or None (forever) past a century: a pool may hold any float (1e308,
    inf, NaN), and a datetime stops at the year 9999."""
    if not math.isfinite(seconds) or seconds > CENTURY:
        return None
    return datetime.now(UTC) + timedelta(seconds=seconds)
