"""Push jobs: send a model from this worker's store to a registry, streaming progress as events.

Runs on a worker like a pull, so `/api/push` relays its progress the same way, the push goes
on if the HTTP client goes away, and it is in the job history. The upload itself is
service.models.push, which knows nothing of jobs.
"""

from __future__ import annotations

import time

from service.jobs.events import Publisher
from service.jobs.records import Job, JobStatus
from service.models.push import push
from service.models.registry import Endpoints
from workers.job_context import JobContext


def run(job: Job, ctx: JobContext, events: Publisher) -> None:
    """Push `job.model`; each progress update is a `progress` event, then `done`."""
    started = time.perf_counter_ns()
    name = push(
        job.model,
        ctx.store,
        lambda update: events.emit("progress", **update),
        insecure=bool(job.request.get("insecure")),
        endpoints=Endpoints.from_settings(ctx.settings),
    )
    pushed = name.display()
    metrics = {"total_duration": time.perf_counter_ns() - started}
    if ctx.finish(job.id, JobStatus.SUCCEEDED, output=pushed, metrics=metrics):
        events.emit("done", model=pushed, **metrics)
