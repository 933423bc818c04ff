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
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)


class Arrivals:
    """The ids of jobs this worker has received and whose sequences are not yet submitted."""

    def __init__(self, expected: Callable[[], Iterable[str]] | None = None) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self.expected = expected  # ids of jobs queued for this worker a moment ago

    def arrived(self, job_id: str) -> None:
        with self._lock:
            self._ids.add(job_id)

    def settled(self, job_id: str) -> None:
        """The job submitted its sequence, or ended without one; idempotent."""
        with self._lock:
            self._ids.discard(job_id)

    def __len__(self) -> int:
        return len(self._ids)

    def pending(self) -> int:
        """Jobs received and not yet submitted, with those queued for this worker just now."""
        with self._lock:
            ids = set(self._ids)
        if self.expected is not None:
            try:
                ids.update(self.expected())
            except Exception:  # the database is away: gather what was received
                log.debug("counting queued jobs failed", exc_info=True)
        return len(ids)

    def on_received(self, app: Any):
        """A handler for Celery's task_received signal that counts `app`'s tasks (the task
        id is the job id), from the moment the consumer takes the message."""

        def received(sender: Any = None, request: Any = None, **_kwargs: Any) -> None:
            if getattr(sender, "app", None) is app and request is not None:
                self.arrived(request.id)

        return received
