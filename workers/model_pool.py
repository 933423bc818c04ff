"""Which models a worker keeps loaded: LRU beyond CORRAL_MAX_LOADED_MODELS, keep_alive expiry.

The loader is passed in (as Ollama's scheduler takes newServerFn), so this logic is tested
with stand-ins in milliseconds while the real engine is tested against the real model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.core.settings import FOREVER


class LoadedEngine(Protocol):
    size_bytes: int

    def active(self) -> int: ...

    def close(self) -> None: ...


@dataclass
class Loaded:
    """One loaded model and the bookkeeping that decides when it goes."""

    key: str
    engine: Any
    users: int = 0
    last_used: float = 0.0
    expires_at: float | None = None  # None: in use, or kept forever
    info: dict[str, Any] = field(default_factory=dict)


class ModelPool:
    """Hand out loaded engines by key, loading and evicting as needed. Thread-safe."""

    def __init__(
        self,
        loader: Callable[[Any], Any],
        *,
        max_loaded: int,
        default_keep_alive: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self.max_loaded = max_loaded
        self.default_keep_alive = default_keep_alive
        self._clock = clock
        self._models: dict[str, Loaded] = {}
        self._loading: set[str] = set()
        self._cond = threading.Condition()

    def acquire(
        self,
        key: str,
        spec: Any,
        info: dict[str, Any] | None = None,
        loader: Callable[[Any], Any] | None = None,
    ) -> tuple[Any, int]:
        """Return (engine, load nanoseconds) for `key`, loading `spec` if needed.

        `loader` overrides the pool's own for this key, so one pool (one memory budget) can
        hold different kinds of loaded object, e.g. a model's embedding context.
        """
        with self._cond:
            while True:
                self._reap_locked()
                loaded = self._models.get(key)
                if loaded is not None:
                    loaded.users += 1
                    loaded.expires_at = None
                    loaded.last_used = self._clock()
                    return loaded.engine, 0
                if key not in self._loading and self._make_room_locked():
                    self._loading.add(key)
                    break
                self._cond.wait(timeout=1.0)
        return self._load(key, spec, info or {}, loader or self._loader)

    def _load(
        self, key: str, spec: Any, info: dict[str, Any], loader: Callable[[Any], Any]
    ) -> tuple[Any, int]:
        started = time.perf_counter_ns()
        try:
            engine = loader(spec)
        except BaseException:
            with self._cond:
                self._loading.discard(key)
                self._cond.notify_all()
            raise
        load_ns = time.perf_counter_ns() - started
        with self._cond:
            self._loading.discard(key)
            self._models[key] = Loaded(key, engine, users=1, last_used=self._clock(), info=info)
            self._cond.notify_all()
        return engine, load_ns

    def _make_room_locked(self) -> bool:
        """Evict the least recently used idle model if the pool is full; False if all are busy."""
        while len(self._models) + len(self._loading) >= self.max_loaded:
            idle = [m for m in self._models.values() if m.users == 0]
            if not idle:
                return False
            victim = min(idle, key=lambda m: m.last_used)
            self._unload_locked(victim.key)
        return True

    def release(self, key: str, keep_alive: float | None = None) -> None:
        """Give an engine back; it stays loaded for keep_alive seconds (0 unloads now)."""
        keep = self.default_keep_alive if keep_alive is None else keep_alive
        with self._cond:
            loaded = self._models.get(key)
            if loaded is None:
                return
            loaded.users -= 1
            loaded.last_used = self._clock()
            if loaded.users == 0:
                if keep == 0:
                    self._unload_locked(key)
                else:
                    loaded.expires_at = None if keep == FOREVER else self._clock() + keep
            self._cond.notify_all()

    def unload(self, key: str) -> bool:
        """Unload now if idle (or mark to unload when its users finish); True if it was loaded."""
        with self._cond:
            loaded = self._models.get(key)
            if loaded is None:
                return False
            if loaded.users == 0:
                self._unload_locked(key)
            else:
                loaded.expires_at = self._clock()
            return True

    def reap(self) -> None:
        """Unload every idle model whose keep_alive has passed."""
        with self._cond:
            self._reap_locked()

    def _reap_locked(self) -> None:
        now = self._clock()
        for loaded in list(self._models.values()):
            expired = loaded.expires_at is not None and loaded.expires_at <= now
            if loaded.users == 0 and expired:
                self._unload_locked(loaded.key)

    def _unload_locked(self, key: str) -> None:
        loaded = self._models.pop(key)
        loaded.engine.close()
        self._cond.notify_all()

    def loaded(self) -> list[Loaded]:
        """A snapshot of what is loaded, most recently used first."""
        with self._cond:
            return sorted(self._models.values(), key=lambda m: m.last_used, reverse=True)

    def close(self) -> None:
        with self._cond:
            for key in list(self._models):
                self._unload_locked(key)
