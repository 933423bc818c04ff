"""Nothing accepted is lost when a worker dies: leases, the sweep, and a real SIGKILL.

A worker holds each running job under a lease it renews; a SIGKILLed worker stops renewing,
and a live worker's sweep queues its jobs again, so they finish without waiting for Celery's
visibility timeout (hours). The job's record and its events say what happened.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.jobs.events import Subscriber, attempt_text
from service.jobs.kinds import JobKind
from tests.conftest import running_worker
from tests.waiting import wait_until

MODEL = "smollm2:135m"
ROOT = Path(__file__).resolve().parent.parent
LEASE = 1.5  # seconds: short, so a lost job is swept within a few seconds


@pytest.fixture
def fast(settings):
    """The test's settings with a short lease, as a worker and a sweeper use them."""
    return dataclasses.replace(settings, lease=LEASE, max_attempts=3)


def submit(client, prompt: str, tokens: int) -> str:
    res = client.post("/jobs", json={"kind": "generate", "model": MODEL, "prompt": prompt,
                                     "options": {"num_predict": tokens, "temperature": 0}})
    assert res.status_code == 202, res.get_json()
    return res.get_json()["id"]


def job_of(app, job_id: str):
    return app.extensions["corral"].jobs.get(job_id)


def finished(app, job_id: str, timeout: float = 180):
    return wait_until(lambda: job_of(app, job_id), timeout,
                      ready=lambda job: job.status in ("succeeded", "failed", "cancelled"),
                      message=f"job {job_id} to finish")


def event_types(app, job_id: str) -> list[tuple[str, str | None]]:
    events = Subscriber(app.extensions["corral"].redis, job_id).replay()
    return [(e.type, e.data.get("status")) for e in events if e.type != "token"]


def test_a_job_whose_worker_stopped_renewing_is_swept_to_a_live_worker(app, client, fast):
    """A lease held by a worker that no longer runs (one that claimed and vanished) lapses;
    the live worker's sweep hands the job back and runs it: attempts 2, the loser noted."""
    services = app.extensions["corral"]
    job_id = submit(client, "Name a colour.", 8)
    ghost = services.jobs.claim(job_id, worker_host="ghost", device="cpu", owner="ghost:1:0",
                                lease=LEASE)
    assert ghost is not None
    with running_worker(fast):  # its message is dropped (the job runs): only the sweep helps
        job = finished(app, job_id, 60)
    assert (job.status, job.attempts, job.lost_by) == ("succeeded", 2, ["ghost:1:0"])
    assert job.lease_owner != "ghost:1:0" and job.output
    assert ("status", "retrying") in event_types(app, job_id)


def test_a_job_lost_more_than_max_attempts_fails_with_the_reason(app, client, fast):
    services = app.extensions["corral"]
    job_id = submit(client, "Name a colour.", 8)
    services.jobs.claim(job_id, worker_host="ghost", device="cpu", owner="ghost:1:0",
                        lease=LEASE)
    with running_worker(dataclasses.replace(fast, max_attempts=1)):
        job = finished(app, job_id, 60)
    assert job.status == "failed" and "lost 1 time(s)" in job.error
    assert "CORRAL_MAX_ATTEMPTS" in job.error and job.lost_by is None
    assert event_types(app, job_id)[-1][0] == "error"


def test_a_job_whose_message_a_dying_worker_took_before_claiming_it_is_sent_again(
        make_app, fast):
    """A worker that took a job's message and died before claiming the job leaves the message
    unacknowledged in Redis for Celery's visibility timeout (hours), and the row queued with
    no lease: the pickup deadline every interactive job carries lets the sweep send it again
    (seen once in five runs of test_routing's SIGKILL test, 4 jobs on 2 workers)."""
    app = make_app(lease=LEASE)
    services = app.extensions["corral"]
    job_id = submit(app.test_client(), "Name a colour.", 8)
    job = job_of(app, job_id)
    assert job.status == "queued" and job.lease_expires_at is not None  # its pickup deadline
    lists = ["cpu", *(f"cpu:{level}" for level in range(1, 10))]
    taken = [m for m in (services.redis.rpop(name) for name in lists) if m]
    assert len(taken) == 1 and services.queue.waiting("cpu") == 0  # the dead worker has it
    with running_worker(fast):
        done = finished(app, job_id, 60)
    assert (done.status, done.attempts, done.lost_by) == ("succeeded", 1, None)


def worker_process(settings, home: Path, **env: str) -> subprocess.Popen:
    """`corral worker` as a process of its own (so it can be SIGKILLed), on the test's Redis,
    database and models, with the short lease (and any other CORRAL_* in `env`)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    environ.update(CORRAL_HOME=str(home), CORRAL_REDIS_URL=settings.redis_url,
                   CORRAL_DATABASE_URL=settings.database_url,
                   CORRAL_MODELS=str(settings.models), CORRAL_LEASE=f"{LEASE}s",
                   CORRAL_NUM_PARALLEL="2", CORRAL_STREAM_INTERVAL="0", **env)
    return subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], cwd=ROOT,
                            env=environ)


def test_sigkill_of_a_worker_mid_generation_loses_no_job_and_completes_none_twice(
        app, client, fast, corral_home):
    services = app.extensions["corral"]
    doomed = worker_process(fast, corral_home)
    try:
        ids = [submit(client, f"Write a long story about the number {n}.", 200)
               for n in range(4)]
        # Both of its slots decoding, with text out: then it dies between two tokens. (It
        # holds the other two as well, claimed and waiting for a slot: it has more task
        # threads than slots, so that interactive work is received while batch lines run.)
        running = wait_until(lambda: [j for j in ids if job_of(app, j).status == "running"
                                      and _tokens(services, j)], 120,
                             ready=lambda decoding: len(decoding) == 2,
                             message="the worker process to decode two jobs")
        lost_owner = job_of(app, running[0]).lease_owner
        running = [j for j in running if job_of(app, j).status == "running"]
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        killed_at = time.monotonic()
        with running_worker(fast):
            jobs = [finished(app, j) for j in ids]
        recovered = time.monotonic() - killed_at
    finally:
        if doomed.poll() is None:
            doomed.kill()
    print(f"\nworker SIGKILLed with 2 jobs running and 2 queued: all 4 finished "
          f"{recovered:.1f} s later (lease {LEASE} s)")
    assert [j.status for j in jobs] == ["succeeded"] * 4 and running
    for job in jobs:
        done = [e for e in Subscriber(services.redis, job.id).replay() if e.type == "done"]
        assert len(done) == 1  # completed once
    for job_id in running:
        job = job_of(app, job_id)
        assert (job.attempts, job.lost_by) == (2, [lost_owner])
        kinds = event_types(app, job_id)
        assert kinds.index(("status", "retrying")) < len(kinds) - 1
        # The output recorded is the second attempt's, whole.
        assert job.output == _text_after_retry(services, job_id)


def _tokens(services, job_id: str) -> str:
    return "".join(e.data["text"] for e in Subscriber(services.redis, job_id).replay()
                   if e.type == "token")


def _text_after_retry(services, job_id: str) -> str:
    return attempt_text(Subscriber(services.redis, job_id).replay())


def test_cancelling_a_job_whose_worker_died_ends_it_at_once(app, client, fast):
    services = app.extensions["corral"]
    job_id = submit(client, "Name a colour.", 8)
    services.jobs.claim(job_id, worker_host="ghost", device="cpu", owner="ghost:1:0",
                        lease=3600)  # a long lease: only the fleet knows the ghost is gone
    started = time.monotonic()
    res = client.delete(f"/jobs/{job_id}")
    assert res.status_code == 200 and time.monotonic() - started < 5
    assert res.get_json()["status"] == "cancelled"
    assert event_types(app, job_id)[-1] == ("done", None)


def test_a_follower_of_a_retried_job_sees_the_retry_then_the_new_output(app, client, fast):
    services = app.extensions["corral"]
    job_id = submit(client, "Name a colour.", 8)
    services.jobs.claim(job_id, worker_host="ghost", device="cpu", owner="ghost:1:0",
                        lease=LEASE)
    with running_worker(fast):
        body = client.get(f"/jobs/{job_id}/events").get_data(as_text=True)
    kinds = [line[7:] for line in body.splitlines() if line.startswith("event: ")]
    data = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    statuses = [d.get("status") for k, d in zip(kinds, data, strict=True) if k == "status"]
    assert statuses == ["retrying", "running"]  # the loss, then the new attempt
    retry = data[kinds.index("status")]
    assert (retry["lost_by"], retry["attempt"]) == ("ghost:1:0", 1)
    assert kinds[-1] == "done" and kinds.count("token") >= 1
    assert job_of(app, job_id).kind == JobKind.GENERATE.value
