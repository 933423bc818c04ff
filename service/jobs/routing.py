"""Where a job's message goes: to a worker that holds its model with a slot free, else to the
shared queue of its device, where any worker may take it (and load the model).

Every worker consumes the shared queues it serves (`cpu`, `gpu`, their batch twins) and one
queue of its own (`own_queue`), which it names in the fleet registry (service.jobs.fleet).
The API reads the registry, at most every FRESH_S, and sends an interactive job to the own
queue of a live worker that serves the job's device queue, already holds its model and has
the most slots free; each choice takes a slot off that view, so a burst of requests spreads
over the workers instead of piling onto the first, and a view with no slot free is read again
(at most every AGAIN_S), since a worker publishes each slot it frees at once. So a second
worker loads a model only when the first is full or gone. Celery stays the transport:
routing only picks the name of the queue a message is sent to; the job's row keeps its
shared queue.

A routed message can be stranded: its worker may die before it takes it. So a routed job is
recorded with a pickup deadline (its resend time, lease_expires_at, as a handed-back job has):
if no worker has claimed it by then, the lease sweep (service.jobs.leases) sends it again,
routed afresh. A message sent twice is dropped by the claim.

Batch lines are not routed: nobody waits on one line, and spreading a batch over every
worker is what a batch wants.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from service.core.errors import CorralError
from service.jobs import fleet
from service.jobs.kinds import JobKind
from service.models.names import ModelName, parse_name

log = logging.getLogger(__name__)

FRESH_S = 0.5  # how long one read of the fleet registry serves
AGAIN_S = 0.05  # ... when it shows no free slot for a job (workers publish each slot freed)
ANY = "any"  # a job's device: whichever worker holds its model
ROUTED = frozenset({JobKind.GENERATE.value, JobKind.CHAT.value, JobKind.EMBED.value})


def own_queue(worker_id: str) -> str:
    """The queue only this worker consumes ("vm:123:ab12cd" → "w.vm.123.ab12cd"): Redis list
    names with no ':' (kombu's priority separator) and nothing Celery's -Q would split."""
    return "w." + re.sub(r"[^A-Za-z0-9_.-]", ".", worker_id)


@dataclass
class Seat:
    """One live worker as routing sees it."""

    queue: str  # its own queue
    serves: frozenset[str]  # the shared queues it consumes
    models: frozenset[ModelName]
    free: int


class Router:
    """Chooses a worker's own queue for a job, or None for its shared queue."""

    def __init__(self, client: redis.Redis, *, fresh: float = FRESH_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = client
        self.fresh = fresh
        self._clock = clock
        self._seats: list[Seat] = []
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def choose(self, kind: str, model: str, queue: str) -> str | None:
        """The own queue of the live worker serving `queue` (or any, for ANY) that holds
        `model` with the most free slots, or None (no such worker: the job goes to `queue`,
        shared)."""
        if kind not in ROUTED:
            return None
        name = _name(model)
        if name is None:
            return None
        with self._lock:
            seats = self._free(name, queue, self.fresh)
            if not seats:  # a slot freed since the last read? look again, not too often
                seats = self._free(name, queue, AGAIN_S)
            if not seats:
                return None
            best = max(seats, key=lambda s: s.free)
            best.free -= 1  # until the next read, as if the job had started there
            return best.queue

    def _free(self, name: ModelName, queue: str, fresh: float) -> list[Seat]:
        return [s for s in self._view(fresh) if (queue == ANY or queue in s.serves)
                and name in s.models and s.free > 0]

    def _view(self, fresh: float) -> list[Seat]:
        now = self._clock()
        if now - self._read_at >= fresh:
            try:
                self._seats = [s for w in fleet.workers(self.redis) if (s := _seat(w))]
            except (redis.RedisError, OSError):
                log.debug("could not read the fleet; jobs go to their shared queues",
                          exc_info=True)
                self._seats = []
            self._read_at = now
        return self._seats


def _seat(worker: dict) -> Seat | None:
    """A fleet entry as a Seat; None for a dead worker or one without an own queue."""
    if not worker.get("alive") or not worker.get("own_queue"):
        return None
    models = frozenset(n for m in worker.get("models") or [] if (n := _name(m)) is not None)
    return Seat(worker["own_queue"], frozenset(worker.get("queues") or []), models,
                int(worker.get("free_slots") or 0))


def _name(model: str | None) -> ModelName | None:
    try:
        return parse_name(model or "")
    except (CorralError, ValueError):
        return None
