"""Celery tasks: one per job kind, each taking a job id and handing it to the Runtime."""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from service.jobs.kinds import KINDS
from workers.runtime import Runtime


def register(app: Celery, runtime: Callable[[], Runtime]) -> None:
    """Register a task on `app` under each kind's name; `runtime()` gives the process's
    Runtime (built on first use), so this module never imports the app that calls it."""

    def run(task, job_id: str) -> None:
        # A batch line comes from a batch queue ("cpu.batch"); the worker's node name lets
        # the Runtime stop and restart its own consumption of those (workers/gates).
        routing = str((task.request.delivery_info or {}).get("routing_key") or "")
        runtime().run(job_id, node=task.request.hostname, batch=routing.endswith(".batch"))

    for row in KINDS.values():
        app.task(name=row.task, ignore_result=True, shared=False, bind=True)(run)
