"""A fleet on one Redis and one database: jobs go to the worker that holds their model, a
second worker loads it only when the first is full, a stranded message is sent again, and
workers on one host split its cores.

The fleet tests run `corral worker` processes (each its own Celery node) beside the test's
API; the Router's own choices are checked on a real Redis with fleet entries written as
workers write them.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from click.testing import CliRunner

from cli.main import cli
from service.jobs import fleet
from service.jobs.events import Subscriber
from service.jobs.kinds import JobKind
from service.jobs.queue import JobQueue
from service.jobs.routing import Router, own_queue
from tests.conftest import running_worker, serving
from tests.test_leases import LEASE, finished, job_of, submit, worker_process
from tests.waiting import wait_until
from workers.cores import CoreShare, machine_id, share, usable_cores

MODEL = "smollm2:135m"


def seat(r, worker_id: str, *, models=(MODEL,), free=2, queues=("cpu", "cpu.batch"),
         ttl=30.0, host="elsewhere", threads=1, machine="boot-1") -> str:
    """Write a worker's fleet entry as its heartbeat does; its own queue's name."""
    about = {"host": host, "machine": machine, "node": f"corral-1@{host}", "device": "cpu",
             "queues": list(queues),
             "own_queue": own_queue(worker_id), "slots": 2, "threads": threads,
             "running": 2 - free, "free_slots": free}
    entries = [fleet.entry(m, "sha256:0", 0, {}, None, context_length=2048, worker=worker_id)
               for m in models]
    fleet.publish(r, worker_id, entries, ttl=ttl, about=about)
    return own_queue(worker_id)


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_the_router_picks_the_live_worker_holding_the_model_with_most_free_slots(r):
    one = seat(r, "a:1:x", free=1)
    two = seat(r, "b:2:y", free=2)
    seat(r, "c:3:z", models=("other:1b",), free=4)  # another model
    seat(r, "d:4:w", free=4, queues=("gpu", "gpu.batch"))  # another device
    seat(r, "e:5:v", free=4)
    r.delete(fleet.worker_key("e:5:v"))  # its heartbeat lapsed: dead, still listed a while
    router = Router(r)
    # b's two slots and a's one: each choice counts as a slot taken until the next read.
    picks = [router.choose("chat", "SmolLM2:135m", "cpu") for _ in range(3)]
    assert sorted(picks) == sorted([two, two, one])
    assert router.choose("generate", MODEL, "cpu") is None  # every seat is full now
    assert router.choose("generate", "other:1b", "cpu") == own_queue("c:3:z")
    assert router.choose("generate", MODEL, "gpu") == own_queue("d:4:w")
    assert router.choose("pull", MODEL, "cpu") is None  # not a job that runs a model
    assert router.choose("generate", "no such model", "cpu") is None
    assert router.choose("generate", "/bad:name:", "cpu") is None  # not a name: shared


def test_a_routed_job_its_worker_never_takes_is_sent_again_and_runs(make_app, settings, r):
    """A job routed to a worker that dies before it takes the message is not stranded: it
    carries a pickup deadline, and the lease sweep sends it again, to a live worker."""
    app = make_app(lease=LEASE)
    ghost = seat(r, "ghost:1:0", ttl=1.0, host="ghost")  # holds the model, then goes silent
    job_id = submit(app.test_client(), "Name a colour.", 8)
    job = job_of(app, job_id)
    assert job.status == "queued" and job.lease_expires_at is not None  # its pickup deadline
    assert app.extensions["corral"].queue.waiting(ghost) == 1  # the message is there
    with running_worker(dataclasses.replace(settings, lease=LEASE)) as rt:
        done = finished(app, job_id, 60)
    assert (done.status, done.attempts, done.lease_owner) == ("succeeded", 1, rt.worker_id)


def _fleet(client) -> dict[str, dict]:
    return {w["worker"]: w for w in client.get("/api/workers").get_json()["workers"]
            if w["alive"]}


def _owners(app, ids) -> list[str]:
    return [finished(app, j).lease_owner for j in ids]


def test_jobs_go_to_the_worker_holding_the_model_and_a_second_loads_it_only_when_full(
        app, client, settings, corral_home):
    procs = [worker_process(settings, corral_home) for _ in range(2)]
    try:
        workers = wait_until(lambda: _fleet(client), 60, ready=lambda f: len(f) == 2,
                             message="two worker processes in the fleet")
        assert len({w["node"] for w in workers.values()}) == 2  # two Celery nodes
        first = finished(app, submit(client, "Name a colour.", 4))
        holder = first.lease_owner
        other = next(w for w in workers if w != holder)
        wait_until(lambda: _fleet(client)[holder]["models"], 10, message="the model listed")
        # One after another, each finds a slot free at the worker that holds the model.
        for n in range(4):
            assert _owners(app, [submit(client, f"Name a fruit, {n}.", 4)]) == [holder]
        assert not _fleet(client)[other]["models"]
        assert [m["worker"] for m in client.get("/api/ps").get_json()["models"]] == [holder]
        # Eight at once are more than its two slots (and one waiting place): the second
        # worker takes the rest and loads the model.
        ids = [submit(client, f"Count from {n} to {n + 40}.", 48) for n in range(8)]
        owners = _owners(app, ids)
        assert set(owners) == {holder, other} and all(
            job_of(app, j).status == "succeeded" for j in ids)
        nodes = {job_of(app, j).lease_owner: job_of(app, j).worker_node for j in ids}
        assert nodes[holder] != nodes[other]  # each job names the node that ran it
        assert nodes[holder] == _fleet(client)[holder]["node"]
        ps = {m["worker"] for m in client.get("/api/ps").get_json()["models"]}
        assert ps == {holder, other}
        # Two workers on this host share its cores instead of each taking all of them.
        threads = wait_until(lambda: [w["threads"] for w in _fleet(client).values()], 15,
                             ready=lambda t: t == [share(usable_cores(), 2)] * 2,
                             message="both workers at half the cores")
        assert sum(threads) <= max(2, usable_cores())
        assert {w["machine"] for w in _fleet(client).values()} == {machine_id()}
        with serving(app) as url:
            out = CliRunner().invoke(cli, ["workers"], env={"CORRAL_HOST": url.split("//")[1]})
        assert out.exit_code == 0 and holder in out.output and other in out.output
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


def test_a_worker_sigkilled_with_routed_jobs_has_them_finished_by_the_other(
        make_app, settings, corral_home):
    app = make_app(lease=LEASE)
    client = app.test_client()
    services = app.extensions["corral"]
    doomed, survivor = worker_process(settings, corral_home), None
    try:
        holder = finished(app, submit(client, "Name a colour.", 4)).lease_owner
        wait_until(lambda: _fleet(client).get(holder, {}).get("models"), 10,
                   message="the model listed")
        survivor = worker_process(settings, corral_home)
        fleet_now = wait_until(lambda: _fleet(client), 60, ready=lambda f: len(f) == 2,
                               message="the second worker in the fleet")
        other = next(w for w in fleet_now if w != holder)
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda n: submit(client, f"Write a long story about {n}.",
                                                 200), range(4)))
        wait_until(lambda: [j for j in ids if job_of(app, j).lease_owner == holder
                            and job_of(app, j).status == "running"], 60,
                   ready=lambda held: len(held) >= 2, message="two jobs running on the holder")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        jobs = [finished(app, j, 180) for j in ids]
        assert [j.status for j in jobs] == ["succeeded"] * 4
        assert {j.lease_owner for j in jobs} == {other}
        for job in jobs:
            done = [e for e in Subscriber(services.redis, job.id).replay() if e.type == "done"]
            assert len(done) == 1
        assert any(job.lost_by == [holder] for job in jobs)
    finally:
        for proc in (doomed, survivor):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_workers_on_one_machine_split_its_cores_and_warn_when_oversubscribed(r, caplog):
    mine = CoreShare(r, machine="boot-7", worker_id="me:1:a", cores=8)
    assert mine.update() == 8  # alone
    seat(r, "peer:2:b", machine="boot-7", host="container-1", threads=4)  # same kernel
    seat(r, "peer:3:c", machine="boot-8", threads=8)  # another machine
    assert mine.update() == 4
    seat(r, "peer:4:c", machine="boot-7", threads=2)
    assert mine.update() == 2 and share(2, 3) == 1 and share(8, 0) == 8
    fixed = CoreShare(r, machine="boot-7", worker_id="me:5:d", configured=6, cores=8)
    with caplog.at_level(logging.WARNING, logger="workers.cores"):
        assert fixed.update() == 6  # CORRAL_NUM_THREADS is kept, and the overload said
        assert fixed.update() == 6
    warnings = [rec.message for rec in caplog.records if "slow each other down" in rec.message]
    assert len(warnings) == 1 and "on 8 cores" in warnings[0]


def test_the_queue_sends_an_interactive_job_to_its_holders_own_queue(app, r):
    services = app.extensions["corral"]
    queue: JobQueue = services.queue
    mine = seat(r, "holder:1:q")
    routed = queue.submit(JobKind.GENERATE, MODEL, {"prompt": "hi"}, queue="cpu")
    line = queue.submit(JobKind.GENERATE, MODEL, {"prompt": "hi"}, queue="cpu", batch_id="b1")
    assert queue.waiting(mine) == 1 and queue.waiting("cpu.batch") == 1
    assert routed.queue == "cpu" and routed.lease_expires_at is not None
    assert line.lease_expires_at is None  # batch lines are never routed


def test_a_job_asks_for_its_device_or_any_and_a_bad_device_is_a_400(app, client, r):
    services = app.extensions["corral"]
    gpu = seat(r, "gpu-host:1:g", queues=("gpu", "gpu.batch"))

    def send(**fields):
        return client.post("/jobs", json={"kind": "generate", "model": MODEL,
                                          "prompt": "hi", **fields})

    ids = {d: send(device=d).get_json()["id"] for d in ("gpu", "any")}
    assert services.queue.waiting(gpu) == 2  # both went to the GPU worker that holds it
    assert services.jobs.get(ids["gpu"]).queue == "gpu"
    assert services.jobs.get(ids["any"]).queue == "cpu"  # its fallback: the default queue
    r.delete(fleet.worker_key("gpu-host:1:g"))
    services.queue.router.fresh = 0  # look at the fleet again now
    later = send(device="gpu").get_json()["id"]
    assert services.queue.waiting("gpu") == 1  # no worker holds it: the shared GPU queue
    assert services.jobs.get(later).queue == "gpu"
    for bad in ("GPU!", "cpu.batch", "", 3):
        res = send(device=bad)
        assert res.status_code == 400 and "'device'" in res.get_json()["error"]
