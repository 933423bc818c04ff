"""The pull job: download a model into this worker's store, streaming progress as events.

Runs on a worker like a generation, so `/api/pull` relays its progress the way it relays
tokens, and a pull survives the HTTP client going away. The download itself is
service.registry, which knows nothing of jobs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from service.events import Publisher
from service.jobs import Job, JobStatus
from service.registry import Endpoints, pull

if TYPE_CHECKING:
    from workers.runner import Runtime


def run_pull(runtime: Runtime, job: Job, events: Publisher) -> None:
    """Pull `job.model`; each progress update is a `progress` event, then `done`."""
    started = time.perf_counter_ns()
    name = pull(
        job.model,
        runtime.store,
        lambda update: events.emit("progress", **update),
        insecure=bool(job.request.get("insecure")),
        endpoints=Endpoints.from_settings(runtime.settings),
    )
    stored = name.display()
    metrics = {"total_duration": time.perf_counter_ns() - started}
    runtime.jobs.finish(job.id, JobStatus.SUCCEEDED, output=stored, metrics=metrics)
    events.emit("done", model=stored, **metrics)
