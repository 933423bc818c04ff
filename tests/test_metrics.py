"""GET /metrics scraped as Prometheus would, parsed with prometheus_client's own parser: its
counters match the jobs the test ran on the real worker, its gauges the queue and the fleet;
and a real worker's Celery task events, caught as Flower catches them."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from service.access.keys import Role
from service.core.db import upgrade
from service.jobs.kinds import JobKind
from service.jobs.metrics import LATENCY_BUCKETS, bucket_index
from service.jobs.queue import broker_priority, priority_band
from service.jobs.records import JobStatus
from tests.conftest import running_worker
from tests.test_access import bearer, new_key
from tests.test_api_jobs import MODEL, submit, wait_finished
from tests.waiting import wait_until


def scrape(client, headers=None) -> dict[tuple[str, tuple], float]:
    """Every sample of one scrape: (sample name, sorted labels) → value."""
    res = client.get("/metrics", headers=headers or {})
    assert res.status_code == 200, res.get_data(as_text=True)
    assert res.content_type.startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(res.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def latency(job: dict, end: str) -> float:
    return (datetime.fromisoformat(job[end]) - datetime.fromisoformat(job["created_at"])
            ).total_seconds()


def assert_histogram(samples, name: str, seconds: list[float], **labels: str) -> None:
    """The histogram holds exactly these observations: count, sum, and each bucket."""
    assert sample(samples, f"{name}_count", **labels) == len(seconds)
    assert sample(samples, f"{name}_sum", **labels) == pytest.approx(sum(seconds), abs=1e-6)
    for index, bound in enumerate(LATENCY_BUCKETS):
        within = sum(1 for s in seconds if bucket_index(s) <= index)
        assert sample(samples, f"{name}_bucket", **labels, le=repr(bound)) == within, bound
    assert sample(samples, f"{name}_bucket", **labels, le="+Inf") == len(seconds)


def test_counters_and_histograms_match_the_jobs_run_and_the_fleet_its_worker(
        client, worker, settings):
    jobs = [wait_finished(client, submit(client, prompt=f"Name a colour, {n}."))
            for n in range(3)]
    assert all(job["status"] == "succeeded" for job in jobs)
    # The worker says its slots are free again within a heartbeat of its last job ending.
    samples = wait_until(lambda: scrape(client), 10, message="every slot free again",
                         ready=lambda s: sample(s, "corral_worker_free_slots",
                                                worker=worker.worker_id,
                                                host=worker.hostname) == settings.num_parallel)
    done = dict(model=MODEL, kind="generate", status="succeeded")
    assert sample(samples, "corral_jobs_finished_total", **done) == 3
    assert sample(samples, "corral_generated_tokens_total", model=MODEL) == sum(
        job["eval_count"] for job in jobs) > 0
    assert sample(samples, "corral_prompt_tokens_total", model=MODEL) == sum(
        job["prompt_eval_count"] for job in jobs) > 0
    assert_histogram(samples, "corral_request_latency_seconds",
                     [latency(job, "finished_at") for job in jobs], model=MODEL, kind="generate")
    assert_histogram(samples, "corral_first_token_latency_seconds",
                     [latency(job, "first_token_at") for job in jobs], model=MODEL)
    assert sample(samples, "corral_jobs", status="queued") == 0
    assert sample(samples, "corral_jobs", status="running") == 0
    assert sample(samples, "corral_queue_depth", queue="cpu", priority="0-1") == 0
    assert sample(samples, "corral_workers", state="alive") == 1
    assert sample(samples, "corral_worker_slots", worker=worker.worker_id,
                  host=worker.hostname) == settings.num_parallel
    assert sample(samples, "corral_model_loaded", model=MODEL, worker=worker.worker_id) == 1


def test_queue_depth_and_queued_jobs_with_no_worker_and_a_cancel_counted(client):
    high = submit(client, priority=9)
    for priority in (5, 0, 1):
        submit(client, priority=priority)
    cancelled = client.delete(f"/jobs/{high}")  # queued: it ends at once
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    samples = scrape(client)
    # The cancelled job's message stays on its list until a worker takes it and drops it.
    assert sample(samples, "corral_queue_depth", queue="cpu", priority="8-9") == 1
    assert sample(samples, "corral_queue_depth", queue="cpu", priority="4-5") == 1
    assert sample(samples, "corral_queue_depth", queue="cpu", priority="0-1") == 2
    assert sample(samples, "corral_queue_depth", queue="cpu.batch", priority="0-1") == 0
    assert sample(samples, "corral_jobs", status="queued") == 3
    assert sample(samples, "corral_jobs", status="running") == 0
    assert sample(samples, "corral_jobs_finished_total", model=MODEL, kind="generate",
                  status="cancelled") == 1
    assert sample(samples, "corral_request_latency_seconds_count", model=MODEL,
                  kind="generate") == 1
    assert sample(samples, "corral_first_token_latency_seconds_count", model=MODEL) is None
    assert sample(samples, "corral_workers", state="alive") == 0
    assert not [key for key in samples if key[0] == "corral_model_loaded"]


@pytest.fixture(params=["database_url", pytest.param("postgres_url", marks=pytest.mark.postgres)])
def any_database_app(request, make_app):
    """The app on SQLite, and on PostgreSQL when CORRAL_TEST_DATABASE_URL points at one."""
    url = request.getfixturevalue(request.param)
    upgrade(url)
    return make_app(database_url=url)


def test_a_job_ended_twice_or_lost_by_its_worker_is_counted_once(any_database_app):
    client, store = any_database_app.test_client(), any_database_app.extensions["corral"].jobs
    failed = store.create(JobKind.GENERATE, "other:1b", {"prompt": "x"}, queue="cpu")
    assert store.finish(failed.id, JobStatus.FAILED, error="first",
                        metrics={"eval_count": 4, "prompt_eval_count": 7})
    assert not store.finish(failed.id, JobStatus.SUCCEEDED, metrics={"eval_count": 9})
    assert not store.cancel_queued(failed.id)
    # A job whose worker vanished, ended by the API (DELETE /jobs) or by a sweep.
    held = store.create(JobKind.EMBED, "other:1b", {"input": "x"}, queue="cpu")
    held = store.claim(held.id, worker_host="gone", device="cpu", owner="gone:1", lease=60)
    assert store.cancel_abandoned(held) and not store.cancel_abandoned(held)
    lost = store.create(JobKind.GENERATE, "other:1b", {"prompt": "x"}, queue="cpu")
    lost = store.claim(lost.id, worker_host="gone", device="cpu", owner="gone:1", lease=60)
    assert store.give_up(lost, "lost too often") and not store.give_up(lost, "again")
    samples = scrape(client)
    finished = {labels: value for (name, labels), value in samples.items()
                if name == "corral_jobs_finished_total"}
    assert finished == {
        (("kind", "generate"), ("model", "other:1b"), ("status", "failed")): 2,
        (("kind", "embed"), ("model", "other:1b"), ("status", "cancelled")): 1}
    assert sample(samples, "corral_generated_tokens_total", model="other:1b") == 4
    assert sample(samples, "corral_prompt_tokens_total", model="other:1b") == 7
    assert sample(samples, "corral_request_latency_seconds_count", model="other:1b",
                  kind="generate") == 2
    assert sample(samples, "corral_jobs", status="running") == 0


def test_with_keys_on_a_scrape_needs_an_admin_key(make_app):
    app = make_app(auth="required")
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    user = client.get("/metrics", headers=bearer(new_key(app, "alice")))
    assert user.status_code == 403 and "admin" in user.get_json()["error"]
    samples = scrape(client, bearer(new_key(app, "prometheus", Role.ADMIN)))
    assert sample(samples, "corral_jobs", status="queued") == 0


def test_a_worker_sends_celery_task_events_for_the_job_it_runs(app, client, settings,
                                                               redis_url):
    """What Flower listens to: the API's task-sent, then the worker's task-received,
    task-started and task-succeeded, each naming the job's id as the task's."""
    celery = app.extensions["corral"].queue.celery
    wanted = {"task-sent", "task-received", "task-started", "task-succeeded"}
    seen: dict[str, set[str]] = {}
    got_all = threading.Event()
    r = redis.Redis.from_url(redis_url)

    def on_event(event: dict) -> None:
        if event.get("uuid"):
            seen.setdefault(event["uuid"], set()).add(event["type"])
        if any(wanted <= types for types in seen.values()):
            got_all.set()

    with running_worker(settings), celery.connection_for_read() as conn:
        receiver = celery.events.Receiver(conn, handlers={"*": on_event})
        patterns = r.pubsub_numpat()  # the worker's remote control listens already
        thread = threading.Thread(target=_capture, args=(receiver, got_all),
                                  daemon=True)
        thread.start()
        wait_until(lambda: r.pubsub_numpat() > patterns, 10, message="the receiver subscribed")
        job = wait_finished(client, submit(client))
        got_all.wait(30)
        receiver.should_stop = True
        thread.join(10)
    assert job["status"] == "succeeded"
    assert wanted <= seen.get(job["id"], set()), seen


def _capture(receiver, done: threading.Event) -> None:
    """Drain events until the receiver is told to stop (it looks each second)."""
    receiver.capture(limit=None, timeout=None, wakeup=False)


def test_a_job_ends_while_redis_is_unreachable_and_a_scrape_then_answers_503(make_app,
                                                                              database_url):
    """A count lost to Redis never fails the job it counts; the scrape says Redis is gone."""
    app = make_app(redis_url="redis://127.0.0.1:9/0")  # the discard port: nothing listens
    store = app.extensions["corral"].jobs
    job = store.create(JobKind.GENERATE, MODEL, {"prompt": "x"}, queue="cpu")
    assert store.finish(job.id, JobStatus.FAILED, error="no worker", metrics={"eval_count": 1})
    assert store.get(job.id).status == "failed"
    res = app.test_client().get("/metrics")
    assert res.status_code == 503 and "Redis" in res.get_json()["error"]


def test_each_priority_is_shown_in_the_band_of_the_list_kombu_keeps_it_on():
    for priority in range(10):
        for batch in (False, True):
            low, high = map(int, priority_band(broker_priority(priority, batch)).split("-"))
            assert low <= priority <= high and high == low + 1, (priority, batch)
