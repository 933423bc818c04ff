"""Celery tasks: one per job kind, each taking a job id and handing it to the Runtime."""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from service.jobs.kinds import KINDS
from workers.runtime import Runtime


def register(app: Celery, runtime: Callable[[], Runtime]) -> None:
    """Register a task on `app` under each kind's name; `runtime()` gives the process's
    Runtime (built on first use), so this module never imports the app that calls it."""

    def run(job_id: str) -> None:
        runtime().run(job_id)

    for row in KINDS.values():
        app.task(name=row.task, ignore_result=True, shared=False)(run)
