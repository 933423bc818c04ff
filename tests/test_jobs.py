"""JobStore: every state change is a compare-and-set, so two parties never both win a job."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.core.db import aware, make_engine, make_sessionmaker, now, upgrade
from service.jobs.kinds import JobKind
from service.jobs.records import Job, JobStatus, JobStore


def job_store(url: str) -> JobStore:
    upgrade(url)
    return JobStore(make_sessionmaker(make_engine(url)))


@pytest.fixture(params=["database_url", pytest.param("postgres_url", marks=pytest.mark.postgres)])
def jobs(request) -> JobStore:
    """A JobStore on SQLite, and on PostgreSQL when CORRAL_TEST_DATABASE_URL points at one."""
    return job_store(request.getfixturevalue(request.param))


def claim(jobs: JobStore, job_id: str, worker: str, lease: float = 15.0):
    """Claim as worker `worker` would, its lease owned by a process of that host."""
    return jobs.claim(job_id, worker_host=worker, device="cpu", owner=f"{worker}:1",
                      lease=lease)


def new_job(jobs: JobStore):
    return jobs.create(JobKind.GENERATE, "m", {"prompt": "hi"}, queue="cpu", batch_id="b1")


def test_claim_takes_a_queued_job_once_and_returns_the_whole_row(jobs):
    job = new_job(jobs)
    claimed = claim(jobs, job.id, "w1")
    assert claimed is not None and claimed.id == job.id
    assert claimed.status == JobStatus.RUNNING.value and claimed.worker_host == "w1"
    assert claimed.started_at is not None and claimed.batch_id == "b1"
    assert claimed.request == {"prompt": "hi"} and claimed.kind == "generate"
    assert claim(jobs, job.id, "w2") is None  # another worker loses
    assert jobs.get(job.id).worker_host == "w1"


def test_a_cancelled_or_unknown_job_cannot_be_claimed(jobs):
    job = new_job(jobs)
    assert jobs.cancel_queued(job.id)
    assert claim(jobs, job.id, "w1") is None
    assert jobs.get(job.id).status == JobStatus.CANCELLED.value
    assert claim(jobs, "no-such-job", "w1") is None


def test_a_claimed_job_finishes_once(jobs):
    job = new_job(jobs)
    claim(jobs, job.id, "w1")
    assert jobs.finish(job.id, JobStatus.SUCCEEDED, output="ok", metrics={"eval_count": 3})
    assert not jobs.finish(job.id, JobStatus.FAILED, error="late timeout")
    row = jobs.get(job.id)
    assert (row.status, row.output, row.eval_count) == ("succeeded", "ok", 3)


# ---- leases ------------------------------------------------------------------------------
def lapse(jobs: JobStore, job_id: str) -> None:
    """Make a job's lease run out now, as it does when its worker stops renewing it."""
    with jobs.sessions.begin() as session:
        session.get(Job, job_id).lease_expires_at = now() - timedelta(seconds=1)


def test_a_claim_takes_a_lease_that_its_owner_renews(jobs):
    job = new_job(jobs)
    claimed = claim(jobs, job.id, "w1", lease=5)
    assert (claimed.attempts, claimed.lease_owner) == (1, "w1:1")
    first = aware(claimed.lease_expires_at)
    assert timedelta(seconds=4) < first - now() <= timedelta(seconds=5)
    assert jobs.renew("w1:1", 60) == 1 and jobs.renew("w2:1", 60) == 0
    assert aware(jobs.get(job.id).lease_expires_at) - now() > timedelta(seconds=50)
    assert jobs.lapsed() == []


def test_a_lapsed_job_is_handed_back_once_then_taken_by_another_worker(jobs):
    job = new_job(jobs)
    claim(jobs, job.id, "w1")
    lapse(jobs, job.id)
    [lapsed] = jobs.lapsed()
    assert jobs.hand_back(lapsed, 15) and not jobs.hand_back(lapsed, 15)  # a second sweeper
    back = jobs.get(job.id)
    assert (back.status, back.lease_owner, back.lost_by) == ("queued", None, ["w1:1"])
    assert jobs.lapsed() == []  # its resend time is a lease away
    retaken = claim(jobs, job.id, "w2")
    assert (retaken.attempts, retaken.lease_owner, retaken.worker_host) == (2, "w2:1", "w2")


def test_a_worker_that_lost_its_lease_cannot_finish_the_job(jobs):
    job = new_job(jobs)
    claim(jobs, job.id, "w1")
    lapse(jobs, job.id)
    jobs.hand_back(jobs.get(job.id), 15)
    claim(jobs, job.id, "w2")
    assert not jobs.finish(job.id, JobStatus.SUCCEEDED, output="late", lease_owner="w1:1")
    assert jobs.finish(job.id, JobStatus.SUCCEEDED, output="ok", lease_owner="w2:1")
    assert not jobs.finish(job.id, JobStatus.SUCCEEDED, output="again", lease_owner="w2:1")
    assert jobs.get(job.id).output == "ok"


def test_a_job_lost_too_often_fails_saying_so(jobs):
    job = new_job(jobs)
    claim(jobs, job.id, "w1")
    lapse(jobs, job.id)
    lapsed = jobs.get(job.id)
    assert jobs.give_up(lapsed, "lost 1 time(s)") and not jobs.give_up(lapsed, "again")
    row = jobs.get(job.id)
    assert (row.status, row.error) == ("failed", "lost 1 time(s)")


def test_a_released_job_is_due_for_resending_at_once(jobs):
    job = new_job(jobs)
    claim(jobs, job.id, "w1")
    assert not jobs.release(job.id, "w2:1") and jobs.release(job.id, "w1:1")
    [due] = jobs.lapsed()
    assert (due.id, due.status) == (job.id, "queued")
    assert jobs.resend_due(due, 15) and not jobs.resend_due(due, 15)
    assert jobs.lapsed() == []


def test_a_running_job_of_a_dead_worker_is_cancelled_only_while_that_worker_holds_it(jobs):
    job = new_job(jobs)
    claim(jobs, job.id, "w1")
    held = jobs.get(job.id)
    lapse(jobs, job.id)
    jobs.hand_back(jobs.get(job.id), 15)
    claim(jobs, job.id, "w2")
    assert not jobs.cancel_abandoned(held)  # w2 runs it now
    assert jobs.cancel_abandoned(jobs.get(job.id))
    assert jobs.get(job.id).status == "cancelled"
