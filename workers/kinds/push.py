"""Push jobs: send a model from this worker's store to a registry, streaming progress as events.

Runs on a worker like a pull, so `/api/push` relays its progress the same way, the push goes
on if the HTTP client goes away, and it is in the job history. The upload itself is
service.models.push, which knows nothing of jobs.
"""

from __future__ import annotations

from service.jobs.events import Publisher
from service.jobs.records import Job
from service.models.push import push
from workers.job_context import JobContext
from workers.kinds.pull import transfer


def run(job: Job, ctx: JobContext, events: Publisher) -> None:
    """Push `job.model`; each progress update is a `progress` event, then `done`."""
    transfer(job, ctx, events, push)
