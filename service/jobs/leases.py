"""Hand the jobs of a vanished worker to a live one: the lease sweep.

A worker holds each job it runs under a lease that it renews (workers/runtime.py). When a
lease lapses, its worker died, hung or lost its host: the sweep, which every worker runs,
queues the job again and sends its task, so it does not wait for Celery's visibility timeout
(hours). Each loss is counted (`attempts`, `lost_by`); after CORRAL_MAX_ATTEMPTS the job fails
with a reason that says so. Every step is a compare-and-set on the job row, so two sweepers
racing on one job hand it back once, and a message sent twice is dropped by the claim.

A queued job has a resend time too, from its submission (service.jobs.queue) or from being
handed back: if no worker has claimed it by then (its message was lost: Redis was down when
it was sent, or a worker took the message and died before claiming the job, which leaves the
message unacknowledged for Celery's visibility timeout), the sweep sends it again, and then
only every RESEND_AFTER leases: a job that merely waits behind a long queue gets few
duplicate messages (each is dropped by the claim, but each counts as waiting until then).
"""

from __future__ import annotations

import logging

import redis

from service.jobs.events import RETRYING, Publisher
from service.jobs.queue import JobQueue
from service.jobs.records import Job, JobStatus, JobStore

log = logging.getLogger(__name__)
RESEND_AFTER = 10  # leases between two resends of a handed-back job no worker has taken


class LeaseSweeper:
    """Finds lapsed leases and hands their jobs back, or fails them after too many losses."""

    def __init__(self, jobs: JobStore, queue: JobQueue, client: redis.Redis, *, lease: float,
                 max_attempts: int, result_ttl: float) -> None:
        self.jobs = jobs
        self.queue = queue
        self.redis = client
        self.lease = lease
        self.max_attempts = max_attempts
        self.result_ttl = result_ttl

    def sweep(self) -> int:
        """Act on every lapsed lease once; return how many jobs were sent again or failed."""
        acted = 0
        for job in self.jobs.lapsed():
            try:
                acted += self._settle(job)
            except (redis.RedisError, OSError) as exc:  # sent again by a later sweep
                log.warning("could not hand back job %s: %s", job.id, exc)
        return acted

    def _settle(self, job: Job) -> bool:
        if job.status == JobStatus.QUEUED.value:
            if not self.jobs.resend_due(job, RESEND_AFTER * self.lease):
                return False
            self.queue.enqueue(job)
            return True
        if job.attempts >= self.max_attempts:
            return self._give_up(job)
        if not self.jobs.hand_back(job, self.lease):
            return False  # another sweeper, or the worker itself, got there first
        log.warning("job %s: worker %s lost it (attempt %d); queued again", job.id,
                    job.lease_owner, job.attempts)
        self._events(job).emit("status", status=RETRYING, attempt=job.attempts,
                               lost_by=job.lease_owner)
        self.queue.enqueue(job)
        return True

    def _give_up(self, job: Job) -> bool:
        message = (f"the job was lost {job.attempts} time(s) (last by worker "
                   f"{job.lease_owner}); CORRAL_MAX_ATTEMPTS is {self.max_attempts}")
        if not self.jobs.give_up(job, message):
            return False
        self._events(job).emit("error", error=message)
        return True

    def _events(self, job: Job) -> Publisher:
        return Publisher(self.redis, job.id, self.result_ttl)
