"""Pull jobs: download a model into this worker's store, streaming progress as events.

Runs on a worker like a generation, so `/api/pull` relays its progress the way it relays
tokens, and a pull survives the HTTP client going away. The download itself is
service.models.registry, which knows nothing of jobs.
"""

from __future__ import annotations

import time

from service.jobs.events import Publisher
from service.jobs.records import Job, JobStatus
from service.models.registry import Endpoints, pull
from workers.job_context import JobContext


def run(job: Job, ctx: JobContext, events: Publisher) -> None:
    """Pull `job.model`; each progress update is a `progress` event, then `done`."""
    started = time.perf_counter_ns()
    name = pull(
        job.model,
        ctx.store,
        lambda update: events.emit("progress", **update),
        insecure=bool(job.request.get("insecure")),
        endpoints=Endpoints.from_settings(ctx.settings),
    )
    stored = name.display()
    metrics = {"total_duration": time.perf_counter_ns() - started}
    if ctx.finish(job.id, JobStatus.SUCCEEDED, output=stored, metrics=metrics):
        events.emit("done", model=stored, **metrics)
