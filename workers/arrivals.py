"""Jobs on their way to an engine: received by this worker, not yet submitted.

Requests sent at one instant reach a worker a few milliseconds apart: Celery hands each
message to a thread, which claims its row, renders its prompt and tokenizes before it submits.
An idle engine that started decoding the first at once would make the rest wait a whole
prefill step behind it (measured: 4 simultaneous requests got their first token at 84, 179,
181 and 183 ms). The engine asks this count before it starts from idle, and waits a moment
while it is above zero, so arrivals that are already in the worker are prefilled together in
one step, as llama-server's do; a lone request waits for nothing.

Received is not soon enough: on a machine whose cores all decode, Celery's consumer took
about 7 ms per message, so the later ones were not yet received when the first had been
submitted. So jobs still queued in the database for this worker's queues, created a moment
ago, count too (`expected`): each is a message on its way. In a fleet another worker may take
one; the engine then waited for nothing, for at most its gather time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)


EXPECTED_S = 0.05  # how long one look at the database's queued jobs serves
SETTLED_KEPT = 256  # recently settled ids, so a stale look does not count them


class Arrivals:
    """The ids of jobs this worker has received and whose sequences are not yet submitted."""

    def __init__(self, expected: Callable[[], Iterable[str]] | None = None) -> None:
        self._ids: set[str] = set()
        self._settled: deque[str] = deque(maxlen=SETTLED_KEPT)
        self._lock = threading.Lock()
        self.expected = expected  # ids of jobs queued for this worker a moment ago
        self._looked: tuple[float, set[str]] = (-EXPECTED_S, set())

    def arrived(self, job_id: str) -> None:
        with self._lock:
            self._ids.add(job_id)
            if job_id in self._settled:  # taken again (handed back after a loss)
                self._settled.remove(job_id)

    def settled(self, job_id: str) -> None:
        """The job submitted its sequence, or ended without one; idempotent."""
        with self._lock:
            self._ids.discard(job_id)
            self._settled.append(job_id)

    def __len__(self) -> int:
        return len(self._ids)

    def pending(self) -> int:
        """Jobs received and not yet submitted, with those queued for this worker just now.

        An engine asks every few milliseconds while it gathers: the database is asked at most
        once per EXPECTED_S, and jobs settled since are taken off what it said."""
        with self._lock:
            ids = self._ids | self._queued()
            return len(ids.difference(self._settled))

    def _queued(self) -> set[str]:
        """What `expected` said, asked again once the last answer is EXPECTED_S old."""
        when, ids = self._looked
        now = time.monotonic()
        if self.expected is not None and now - when >= EXPECTED_S:
            try:
                ids = set(self.expected())
            except Exception:  # the database is away: gather what was received
                log.debug("counting queued jobs failed", exc_info=True)
                ids = set()
            self._looked = (now, ids)
        return ids

    def on_received(self, app: Any):
        """A handler for Celery's task_received signal that counts `app`'s tasks (the task
        id is the job id), from the moment the consumer takes the message."""

        def received(sender: Any = None, request: Any = None, **_kwargs: Any) -> None:
            if getattr(sender, "app", None) is app and request is not None:
                self.arrived(request.id)

        return received
