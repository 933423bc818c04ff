"""Places for the jobs a worker holds, one gate for batch lines and one for interactive
requests: a slot's worth each, and a few waiting in the engine ready for the next free slot.

A worker has task threads for both gates' places. Without them a batch's lines took every
thread (Celery hands a message to any free thread), and a chat sent meanwhile was not even
received until a line ended: 5.4 to 7.3 s to its first token. Now a worker holds at most
`limit` jobs of each kind; when it holds that many it stops consuming that kind's queues
(Celery's cancel_consumer, addressed to itself), and starts again when one ends, so what it
cannot start soon stays in the queue for the fleet's other workers. A job that slipped in
before the stop (Celery takes as many messages at once as it has threads) is not held: the
Runtime sends its message back to its queue, its row still queued. So an interactive request
always finds a thread, and the engine gives it a slot at once (workers/scheduler.py).

The queue is taken again only once every message sent back is in it: a gate that reopened
while a priority-9 job was still on its way back took the priority-5 job behind it first (a
test caught it under load).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def places(num_parallel: int, *, batch: bool) -> int:
    """Jobs of one kind a worker holds at once, for `num_parallel` decode slots.

    Interactive requests: one per slot and half a slot's worth waiting in the engine, so a
    slot whose job ends starts the next at its next step; few, so that what this worker
    cannot start soon stays queued for the fleet's others.

    Batch lines: one per slot and two more per slot waiting. A batch's lines have like
    lengths and end together, and a slot refilled through the queue (the gate restarts
    consuming, the message comes, the job is claimed) stood idle meanwhile: with half a
    slot's worth waiting, 4 slots were 3.0 busy on average during a batch of 16-token lines,
    3.9 with one per slot waiting, 4.0 with two, and the batch ran at 86, 106 and 119
    tokens/s (2 cores, SmolLM2-135M, one run each).
    """
    if batch:
        return 3 * num_parallel
    return num_parallel + max(1, num_parallel // 2)


class Gate:
    """Counts the jobs of one kind this worker holds; `pause`/`resume` stop and restart taking
    more (they are called outside the lock, and a failure is logged: check() tries again)."""

    def __init__(self, limit: int, pause: Callable[[], None], resume: Callable[[], None]):
        self.limit = limit
        self._pause, self._resume = pause, resume
        self.held = 0
        self.paused = False
        self.returning = 0  # jobs refused and not yet back in their queue
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        """Hold one more line if there is room (at the limit, stop taking more); False if
        there is none, and the caller gives the line back."""
        with self._lock:
            if self.held >= self.limit:
                self.returning += 1  # the caller calls returned() once it is sent back
                return False
            self.held += 1
            stop = self.held >= self.limit and not self.paused
            self.paused = self.paused or stop
        if stop:
            self._call(self._pause, "stop")
        return True

    def leave(self) -> None:
        """A line ended: make room, and take batch messages again if they were stopped."""
        with self._lock:
            self.held -= 1
        self.check()

    def returned(self) -> None:
        """A refused job is back in its queue (or could not be sent: the sweep resends it)."""
        with self._lock:
            self.returning -= 1
        self.check()

    def check(self, reassert: bool = False) -> None:
        """Restart taking messages if they are stopped with room free. With `reassert` (the
        Runtime's once-a-second call) the state is sent again whatever it was: stop and
        restart are broadcasts that may arrive out of order, or not at all (Redis away), and a
        queue left stopped with room free would stall a batch."""
        with self._lock:
            go = self.paused and self.held < self.limit and self.returning == 0
            self.paused = self.paused and not go
            again = reassert and not go
            stopped = self.paused
        if go and not self._call(self._resume, "restart"):
            with self._lock:
                self.paused = True
        elif again:
            self._call(self._pause if stopped else self._resume, "re-send the state of")

    @staticmethod
    def _call(action: Callable[[], None], what: str) -> bool:
        try:
            action()
        except Exception:  # Redis away: the lines still wait here; check() tries again
            log.warning("could not %s taking jobs", what, exc_info=True)
            return False
        return True
