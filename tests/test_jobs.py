"""JobStore: every state change is a compare-and-set, so two parties never both win a job."""

from __future__ import annotations

import pytest

from service.core.db import make_engine, make_sessionmaker, upgrade
from service.jobs.kinds import JobKind
from service.jobs.records import JobStatus, JobStore


def job_store(url: str) -> JobStore:
    upgrade(url)
    return JobStore(make_sessionmaker(make_engine(url)))


@pytest.fixture(params=["database_url", pytest.param("postgres_url", marks=pytest.mark.postgres)])
def jobs(request) -> JobStore:
    """A JobStore on SQLite, and on PostgreSQL when CORRAL_TEST_DATABASE_URL points at one."""
    return job_store(request.getfixturevalue(request.param))


def new_job(jobs: JobStore):
    return jobs.create(JobKind.GENERATE, "m", {"prompt": "hi"}, queue="cpu", batch_id="b1")


def test_claim_takes_a_queued_job_once_and_returns_the_whole_row(jobs):
    job = new_job(jobs)
    claimed = jobs.claim(job.id, worker_host="w1", device="cpu")
    assert claimed is not None and claimed.id == job.id
    assert claimed.status == JobStatus.RUNNING.value and claimed.worker_host == "w1"
    assert claimed.started_at is not None and claimed.batch_id == "b1"
    assert claimed.request == {"prompt": "hi"} and claimed.kind == "generate"
    assert jobs.claim(job.id, worker_host="w2", device="cpu") is None  # another worker loses
    assert jobs.get(job.id).worker_host == "w1"


def test_a_cancelled_or_unknown_job_cannot_be_claimed(jobs):
    job = new_job(jobs)
    assert jobs.cancel_queued(job.id)
    assert jobs.claim(job.id, worker_host="w1", device="cpu") is None
    assert jobs.get(job.id).status == JobStatus.CANCELLED.value
    assert jobs.claim("no-such-job", worker_host="w1", device="cpu") is None


def test_a_claimed_job_finishes_once(jobs):
    job = new_job(jobs)
    jobs.claim(job.id, worker_host="w1", device="cpu")
    assert jobs.finish(job.id, JobStatus.SUCCEEDED, output="ok", metrics={"eval_count": 3})
    assert not jobs.finish(job.id, JobStatus.FAILED, error="late timeout")
    row = jobs.get(job.id)
    assert (row.status, row.output, row.eval_count) == ("succeeded", "ok", 3)
