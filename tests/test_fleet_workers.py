"""The fleet as an operator sees it: GET /api/workers and `corral workers` list every worker
heard from lately, with where it runs and how full it is; a silent one is shown dead for a
grace period, and one that stops withdraws at once."""

from __future__ import annotations

import socket

from click.testing import CliRunner

from cli.main import cli
from service.jobs import fleet
from tests.conftest import serving
from tests.test_api_jobs import submit, wait_finished
from tests.waiting import wait_until


def listed(client) -> dict[str, dict]:
    res = client.get("/api/workers")
    assert res.status_code == 200
    return {w["worker"]: w for w in res.get_json()["workers"]}


def test_a_running_worker_says_where_it_runs_and_how_full_it_is(app, client, worker, settings):
    job = wait_finished(client, submit(client))  # it has loaded the model now
    me = wait_until(lambda: listed(client).get(worker.worker_id), 10,
                    ready=lambda w: w and w["models"], message="the worker listing its model")
    assert me["alive"] and me["heartbeat_age"] < fleet.GRACE
    assert (me["host"], me["device"], me["slots"]) == (socket.gethostname(), settings.device,
                                                       settings.num_parallel)
    assert me["node"] and me["node"] == worker.node  # its Celery node name
    assert me["models"] == [job["model"]] and me["queues"]
    assert 0 <= me["running"] and me["free_slots"] == settings.num_parallel - me["running"]
    with serving(app) as url:
        out = CliRunner().invoke(cli, ["workers"], env={"CORRAL_HOST": url.split("//")[1]})
    assert out.exit_code == 0, out.output
    assert worker.worker_id in out.output and job["model"] in out.output


def test_a_silent_worker_is_shown_dead_then_dropped_and_a_stopping_one_leaves_at_once(
        client, redis_url):
    import redis

    r = redis.Redis.from_url(redis_url)
    about = {"host": "elsewhere", "node": "celery@elsewhere", "device": "cpu", "slots": 2}
    fleet.publish(r, "elsewhere:1:a", [], ttl=0.2, about=about)
    fleet.publish(r, "elsewhere:2:b", [], ttl=30, about=about)
    assert listed(client)["elsewhere:1:a"]["alive"]
    gone = wait_until(lambda: listed(client)["elsewhere:1:a"], 5,
                      ready=lambda w: not w["alive"], message="the silent worker shown dead")
    assert gone["host"] == "elsewhere" and gone["node"] == "celery@elsewhere"
    r.pexpire(fleet.SEEN + "elsewhere:1:a", 1)  # as if the grace period had passed
    wait_until(lambda: "elsewhere:1:a" not in listed(client), 5, message="it being dropped")
    fleet.withdraw(r, "elsewhere:2:b")
    assert "elsewhere:2:b" not in listed(client)
