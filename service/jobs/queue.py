"""Put jobs on the Celery queues by task name; the service never imports worker code.

The same `celery_config` configures the producer here and the worker in workers/, so both
sides agree on serializers, acknowledgement and routing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import redis
from celery import Celery

from service.core.db import now
from service.core.errors import QueueFull
from service.core.settings import Settings
from service.jobs.kinds import KINDS, JobKind
from service.jobs.records import Job, JobStatus, JobStore
from service.jobs.routing import ANY, Router


def celery_config(settings: Settings, redis_url: str) -> dict[str, Any]:
    """Celery settings shared by producer and worker.

    acks_late + reject_on_worker_lost: a job whose worker dies goes back on the queue.
    prefetch 1: a worker reserves no more jobs than it has slots for.
    """
    return {
        "broker_url": redis_url,
        "broker_connection_retry_on_startup": True,
        # Ten priority lists per queue, polled highest first (see broker_priority).
        "broker_transport_options": {
            "visibility_timeout": 6 * 3600,
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
            "sep": ":",
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_default_queue": first_queue(settings.queues),
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        # Task events (sent, received, started, succeeded ...) for Flower and `celery events`:
        # a small publish per task and state, never per token.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_enable_remote_control": True,
    }


def queue_names(queues: str) -> list[str]:
    """The queues a comma-separated list (CORRAL_QUEUES, `--queues`) names: "cpu, gpu" →
    ["cpu", "gpu"]."""
    return [q.strip() for q in queues.split(",") if q.strip()]


def first_queue(queues: str) -> str:
    """Where a job goes that names no device: the first queue listed, else `cpu`."""
    return next(iter(queue_names(queues)), "cpu")


def batch_queue(queue: str) -> str:
    """Batch lines wait on their own queue, which workers take only when `queue` is empty."""
    return f"{queue}.batch"


def consumed_queues(queues: str, own: str | None = None) -> list[str]:
    """The Celery queues a worker reads, interactive first: "cpu" → ["cpu", "cpu.batch"];
    with its `own` queue (service.jobs.routing) after the shared interactive ones."""
    names = queue_names(queues)
    return names + ([own] if own else []) + [batch_queue(q) for q in names]


def broker_priority(priority: int, batch: bool) -> int:
    """corral's priority (0-9, higher sooner) as kombu's Redis priority (0-9, 0 runs first).

    kombu polls every queue's priority-0 list before any priority-1 list, so priority, not
    queue order, decides. Interactive jobs take levels 0-4 and batch lines 5-9, which keeps
    every batch line behind every interactive request; each pair of corral priorities
    shares a level.
    """
    level = 4 - max(0, min(9, priority)) // 2
    return level + 5 if batch else level


def priority_band(level: int) -> str:
    """The corral priorities that kombu's priority list `level` holds, as "8-9" (level 0 of an
    interactive queue, 5 of a batch queue) down to "0-1" (levels 4 and 9)."""
    low = 2 * (4 - level % 5)
    return f"{low}-{low + 1}"


def make_producer(settings: Settings, redis_url: str) -> Celery:
    """A Celery app that only sends tasks (no tasks registered, nothing connected yet)."""
    app = Celery("corral", set_as_current=False)
    app.conf.update(celery_config(settings, redis_url))
    return app


class JobQueue:
    """Records a job, then sends its task to a worker that holds its model, or to the queue
    named after its device (service.jobs.routing)."""

    def __init__(self, celery: Celery, jobs: JobStore, client: redis.Redis, settings: Settings):
        self.celery = celery
        self.jobs = jobs
        self.redis = client
        self.settings = settings
        self.router = Router(client)

    @property
    def default_queue(self) -> str:
        """Where a job goes that names no device: the first of CORRAL_QUEUES."""
        return first_queue(self.settings.queues)

    def waiting(self, queue: str) -> int:
        """Jobs waiting on a queue: Celery's Redis transport keeps one list per priority."""
        return sum(self.levels([queue])[queue])

    def levels(self, queues: list[str]) -> dict[str, list[int]]:
        """Messages waiting on each queue per kombu priority level (0 taken first): the
        lists `queue`, `queue:1` .. `queue:9`, read in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(queue)
                for step in range(1, 10):
                    pipe.llen(f"{queue}:{step}")
            lengths = [int(n) for n in pipe.execute()]
        return {queue: lengths[10 * i:10 * i + 10] for i, queue in enumerate(queues)}

    def submit(
        self, kind: JobKind, model: str, request: dict[str, Any], *, queue: str = "cpu",
        priority: int = 0, batch_id: str | None = None, idempotency_key: str | None = None,
        owner: str | None = None,
    ) -> Job:
        """Record a queued job and enqueue its task; QueueFull past CORRAL_MAX_QUEUE.
        `queue` is a device queue, or ANY: a worker of any device holding the model, else
        the default queue.

        Batch lines go to the batch queue and are not counted against CORRAL_MAX_QUEUE:
        their feeder already bounds how many wait.
        """
        shared = self.default_queue if queue == ANY else queue
        if batch_id is None and self.waiting(shared) >= self.settings.max_queue:
            raise QueueFull(
                f"server busy: {self.settings.max_queue} requests already waiting, retry later",
                headers={"Retry-After": "5"},
            )
        routed = None if batch_id else self.router.choose(kind.value, model, queue)
        target = batch_queue(shared) if batch_id else shared
        # Every interactive job carries a pickup deadline, routed or not: a worker that took
        # its message and died before claiming it holds the message unacknowledged for
        # Celery's visibility timeout (hours); past the deadline, the lease sweep sends it
        # again. (A batch's lines are re-sent by their batch: service.batches.)
        job = self.jobs.create(kind, model, request, queue=target, priority=priority,
                               batch_id=batch_id, idempotency_key=idempotency_key,
                               owner=owner, resend_at=None if batch_id else self._pickup())
        try:
            self._send(job, routed or job.queue)
        except Exception as exc:
            # The caller answers 503 and its client retries; a row no message will ever run
            # must not stay queued. A batch line stays: its batch re-sends lost lines.
            if batch_id is None:
                self.jobs.finish(job.id, JobStatus.FAILED, error=f"could not be queued: {exc}")
            raise
        return job

    def enqueue(self, job: Job, *, shared: bool = False) -> None:
        """Send a recorded job's task again (a resend, a line of a batch, a job a full worker
        gave back): routed afresh, unless `shared` asks for its shared queue."""
        routed = None
        if not shared and job.batch_id is None:
            routed = self.router.choose(job.kind, job.model, job.queue)
        if routed and not self.jobs.expect_pickup(job.id, self._pickup()):
            routed = None  # it was claimed meanwhile: the claim drops this message anyway
        self._send(job, routed or job.queue)

    def _pickup(self) -> datetime:
        """When a routed job not yet taken is sent again (its worker may have died)."""
        return now() + timedelta(seconds=self.settings.lease)

    def _send(self, job: Job, queue: str) -> None:
        self.celery.send_task(KINDS[JobKind(job.kind)].task, args=[job.id], task_id=job.id,
                              queue=queue,
                              priority=broker_priority(job.priority, job.batch_id is not None))
