"""What a kind's handler may use, handed to it by the worker's Runtime.

Handlers (workers/kinds/) take a JobContext instead of the Runtime, so they depend on the
parts they use and not on the process container that dispatches them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from service.core.settings import Settings
from service.jobs.records import JobStatus, JobStore
from service.models.store import ModelStore
from workers.arrivals import Arrivals
from workers.cores import usable_cores
from workers.model_pool import ModelPool


class Streams:
    """The sequences running in this worker by job id, so a cancel message can stop one."""

    def __init__(self) -> None:
        self._by_job: dict[str, Any] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def running(self, job_id: str, stream: Any) -> Iterator[None]:
        """Make `stream` cancellable by its job id while the block runs."""
        with self._lock:
            self._by_job[job_id] = stream
        try:
            yield
        finally:
            with self._lock:
                self._by_job.pop(job_id, None)

    def cancel(self, job_id: str) -> None:
        """Stop the job's sequence if it runs here; its slot frees within one decode step."""
        with self._lock:
            stream = self._by_job.get(job_id)
        if stream is not None:
            stream.cancel()


@dataclass
class JobContext:
    """The worker's parts a job may touch."""

    settings: Settings
    hostname: str
    worker_id: str  # the owner of this worker's leases, as the fleet knows it
    redis: redis.Redis
    jobs: JobStore
    store: ModelStore
    pool: ModelPool
    streams: Streams
    loaded_changed: Callable[[], None]  # tell the fleet at once what is loaded now
    arrivals: Arrivals = field(default_factory=Arrivals)  # jobs not yet at their engine
    threads: Callable[[], int] = usable_cores  # this worker's share of the host (workers/cores)

    def finish(self, job_id: str, status: JobStatus, **record: Any) -> bool:
        """Record the end of a job this worker holds; False if it no longer holds it (its
        lease lapsed and the job went to another worker), and then nothing is sent."""
        return self.jobs.finish(job_id, status, lease_owner=self.worker_id, **record)
