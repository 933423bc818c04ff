"""Put jobs on the Celery queues by task name; the service never imports worker code.

The same `celery_config` configures the producer here and the worker in workers/, so both
sides agree on serializers, acknowledgement and routing.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery

from service.errors import QueueFull
from service.jobs import Job, JobKind, JobStore
from service.settings import Settings

TASK_NAMES = {
    JobKind.GENERATE: "corral.generate",
    JobKind.CHAT: "corral.chat",
    JobKind.EMBED: "corral.embed",
    JobKind.PULL: "corral.pull",
}


def celery_config(settings: Settings, redis_url: str) -> dict[str, Any]:
    """Celery settings shared by producer and worker.

    acks_late + reject_on_worker_lost: a job whose worker dies goes back on the queue.
    prefetch 1: a worker reserves no more jobs than it has slots for.
    """
    default_queue = settings.queues.split(",")[0].strip() or "cpu"
    return {
        "broker_url": redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": 6 * 3600},
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_default_queue": default_queue,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": False,
        "worker_enable_remote_control": True,
    }


def make_producer(settings: Settings, redis_url: str) -> Celery:
    """A Celery app that only sends tasks (no tasks registered, nothing connected yet)."""
    app = Celery("corral", set_as_current=False)
    app.conf.update(celery_config(settings, redis_url))
    return app


class JobQueue:
    """Records a job, then sends its task to the queue named after its device."""

    def __init__(self, celery: Celery, jobs: JobStore, client: redis.Redis, settings: Settings):
        self.celery = celery
        self.jobs = jobs
        self.redis = client
        self.settings = settings

    def waiting(self, queue: str) -> int:
        """Jobs waiting on a queue (Celery's Redis transport keeps each queue as a list)."""
        return int(self.redis.llen(queue))

    def submit(
        self, kind: JobKind, model: str, request: dict[str, Any], *, queue: str = "cpu",
        priority: int = 0, batch_id: str | None = None,
    ) -> Job:
        """Record a queued job and enqueue its task; QueueFull past CORRAL_MAX_QUEUE."""
        if batch_id is None and self.waiting(queue) >= self.settings.max_queue:
            raise QueueFull(
                f"server busy: {self.settings.max_queue} requests already waiting, retry later",
                headers={"Retry-After": "5"},
            )
        job = self.jobs.create(kind, model, request, queue=queue, priority=priority,
                               batch_id=batch_id)
        self.celery.send_task(TASK_NAMES[kind], args=[job.id], task_id=job.id, queue=queue)
        return job
