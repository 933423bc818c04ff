"""Pull jobs: download a model into this worker's store, streaming progress as events.

Runs on a worker like a generation, so `/api/pull` relays its progress the way it relays
tokens, and a pull survives the HTTP client going away. The download itself is
service.models.registry, which knows nothing of jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from service.jobs.events import Publisher
from service.jobs.records import Job, JobStatus
from service.models.names import ModelName
from service.models.registry import Endpoints, pull
from workers.job_context import JobContext

Transfer = Callable[..., ModelName]  # registry.pull or push.push: (name, store, progress, ...)


def run(job: Job, ctx: JobContext, events: Publisher) -> None:
    """Pull `job.model`; each progress update is a `progress` event, then `done`."""
    transfer(job, ctx, events, pull)


def transfer(job: Job, ctx: JobContext, events: Publisher, move: Transfer) -> None:
    """Move `job.model` between the store and a registry with `move`, publishing each progress
    update as a `progress` event; record the job, then send `done` naming the model."""
    started = time.perf_counter_ns()

    def progress(update: dict[str, Any]) -> None:
        events.emit("progress", **update)

    name = move(job.model, ctx.store, progress, insecure=bool(job.request.get("insecure")),
                endpoints=Endpoints.from_settings(ctx.settings))
    model = name.display()
    metrics = {"total_duration": time.perf_counter_ns() - started}
    if ctx.finish(job.id, JobStatus.SUCCEEDED, output=model, metrics=metrics):
        events.emit("done", model=model, **metrics)
