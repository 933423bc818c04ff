"""Celery tasks: each takes a job id and hands it to the worker's Runtime."""

from __future__ import annotations

from celery import Celery


def register(app: Celery) -> None:
    """Register corral's tasks on `app` under the names the service sends."""

    def run(job_id: str) -> None:
        from workers.celery_app import runtime

        runtime(app).run(job_id)

    for kind in ("generate", "chat", "embed", "pull"):
        app.task(name=f"corral.{kind}", ignore_result=True, shared=False)(run)
