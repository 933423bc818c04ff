"""Batches: line validation, feeding a window at a time, cancel/resume and expiry, the native
/batches face and `corral batch`, all against real Redis, SQLite, Celery and SmolLM2."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update
from werkzeug.serving import make_server

from cli.main import cli
from service.batches.store import Batch, BatchLine, BatchStore, LineSpec
from service.http.app import create_app
from service.http.batch_lines import parse_line
from service.jobs.kinds import JobKind
from service.jobs.records import Job
from tests.conftest import running_worker
from tests.waiting import wait_until
from workers.kinds.generate import BATCH_STREAM_INTERVAL

MODEL = "smollm2:135m"
ENDED = ("completed", "failed", "cancelled", "expired")


def prompt(n: int, tokens: int = 2, **extra) -> dict:
    return {"prompt": f"Say the number {n}.", "options": {"num_predict": tokens}, **extra}


def jsonl(items: list) -> str:
    return "\n".join(x if isinstance(x, str) else json.dumps(x) for x in items) + "\n"


def post_batch(client, body: str, key: str | None = None, model: str | None = MODEL):
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(f"/batches?model={model}" if model else "/batches", data=body,
                       headers=headers)


def wait_for(client, batch_id: str, until=lambda b: b["status"] in ENDED, timeout=600):
    return wait_until(lambda: client.get(f"/batches/{batch_id}").get_json(), timeout, 0.2,
                      ready=until, message=f"batch {batch_id} to reach the state")


def results(client, batch_id: str) -> list[dict]:
    text = client.get(f"/batches/{batch_id}/results").get_data(as_text=True)
    return [json.loads(x) for x in text.splitlines()]


def ctx(app):
    return app.extensions["corral"]


def batch_jobs(app, batch_id: str) -> list[Job]:
    with ctx(app).jobs.sessions() as session:
        return list(session.scalars(select(Job).where(Job.batch_id == batch_id)))


@contextlib.contextmanager
def app_with(settings, **changes) -> Iterator:
    app = create_app({"TESTING": True}, settings=dataclasses.replace(settings, **changes))
    try:
        yield app
    finally:
        ctx(app).close()


# ---- lines ------------------------------------------------------------------------------
def test_line_shapes_become_jobs_and_each_bad_line_says_why():
    plain = parse_line("Name a colour.", 1, endpoint=None, model=MODEL)
    assert (plain.kind, plain.model, plain.body["prompt"]) == (JobKind.GENERATE, MODEL,
                                                               "Name a colour.")
    chat = parse_line(json.dumps({"custom_id": "c", "messages": [
        {"role": "user", "content": "Hi"}], "options": {"num_predict": 3}}), 2, endpoint=None,
        model=MODEL)
    assert (chat.kind, chat.custom_id, chat.body["options"]["num_predict"]) == \
        (JobKind.CHAT, "c", 3)
    openai_line = parse_line(json.dumps({
        "custom_id": "o", "method": "POST", "url": "/v1/completions",
        "body": {"model": "other:1b", "prompt": "Hi", "max_tokens": 4}}), 3, endpoint=None,
        model=MODEL)
    assert (openai_line.kind, openai_line.model) == (JobKind.GENERATE, "other:1b")
    assert openai_line.body["options"]["num_predict"] == 4

    def error(text: str, endpoint: str | None = None) -> dict:
        spec = parse_line(text, 9, endpoint=endpoint, model=MODEL)
        assert spec.error is not None, text
        return spec.error

    assert error("{oops")["code"] == "invalid_json_line"
    assert error("[1, 2]")["code"] == "invalid_json_line"
    assert error("plain text", endpoint="/v1/completions")["code"] == "invalid_json_line"
    assert error(json.dumps({"custom_id": "x", "method": "GET", "url": "/v1/completions",
                             "body": {}}))["code"] == "invalid_method"
    assert error(json.dumps({"custom_id": "x", "url": "/v1/images", "body": {}}))["code"] == \
        "invalid_url"
    assert error(json.dumps({"custom_id": "x", "url": "/v1/completions", "body": {
        "model": MODEL, "prompt": "x"}}), endpoint="/v1/chat/completions")["code"] == \
        "invalid_url"
    assert error(json.dumps({"url": "/v1/completions", "body": {}}))["code"] == \
        "missing_custom_id"
    bad_field = error(json.dumps({"custom_id": "x", "url": "/v1/completions", "body": {
        "model": MODEL, "prompt": "x", "temperature": 7}}))
    assert (bad_field["code"], bad_field["param"]) == ("invalid_request", "temperature")
    assert parse_line("42", 5, endpoint=None, model=MODEL).body["prompt"] == "42"
    no_model = parse_line("hello", 4, endpoint=None, model=None)
    assert no_model.error["code"] == "missing_model"


# ---- the native face, through the real worker ---------------------------------------------
def test_bad_lines_are_reported_with_their_numbers_while_good_lines_run(app, client, worker):
    chat = {"custom_id": "d", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "max_tokens": 3,
                     "messages": [{"role": "user", "content": "Say hi."}]}}
    lines = [prompt(1, custom_id="a"),                              # 1 runs
             '{"prompt": "unterminated',                            # 2 malformed JSON
             prompt(3, custom_id="a"),                              # 3 duplicate custom_id
             {"custom_id": "c", "method": "POST", "url": "/v1/moderations",
              "body": {"model": MODEL, "input": "x"}},              # 4 unknown url
             prompt(5, model="missing:latest"),                     # 5 unknown model
             "",                                                    # 6 blank: skipped
             chat,                                                  # 7 runs (OpenAI line)
             "[1, 2]"]                                              # 8 not an object
    res = post_batch(client, jsonl(lines))
    assert res.status_code == 201, res.get_json()
    batch = wait_for(client, res.get_json()["id"])
    assert batch["status"] == "completed"
    counts = batch["counts"]
    assert (counts["total"], counts["succeeded"], counts["invalid"], counts["failed"]) == \
        (7, 2, 5, 5)
    rows = results(client, batch["id"])
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5, 7, 8]
    by_line = {r["line"]: r for r in rows}
    assert by_line[1]["status"] == by_line[7]["status"] == "succeeded"
    assert by_line[1]["output"] and by_line[7]["custom_id"] == "d"
    assert 0 < by_line[7]["eval_count"] <= 3
    for number, words in {2: "invalid JSON", 3: "custom_id 'a'", 4: "unsupported url",
                          5: "model 'missing:latest' not found", 8: "JSON object"}.items():
        assert by_line[number]["status"] == "failed" and by_line[number]["id"] is None
        assert by_line[number]["error"].startswith(f"line {number}: ")
        assert words in by_line[number]["error"]
    assert len(batch_jobs(app, batch["id"])) == 2


def test_a_batch_line_streams_its_text_in_few_events(app, client, worker):
    # Batch lines publish at most one token event a second (generate.stream_pace), so a
    # line of 48 tokens that takes a few seconds leaves a handful of events, not one per
    # CORRAL_STREAM_INTERVAL.
    # A raw opening the model continues past 48 tokens (greedy): one that ended sooner on
    # some CPUs, whose kernels round differently, left too little text to pace.
    line = {"prompt": "The history of the city begins", "raw": True,
            "options": {"num_predict": 48, "temperature": 0}}
    batch = wait_for(client, post_batch(client, jsonl([line])).get_json()["id"])
    [job] = batch_jobs(app, batch["id"])
    text = client.get(f"/jobs/{job.id}/events").get_data(as_text=True)
    events = [dict(x.split(": ", 1) for x in block.splitlines())
              for block in text.strip().split("\n\n")]
    tokens = [json.loads(e["data"])["text"] for e in events if e["event"] == "token"]
    assert job.eval_count == 48
    # At most one event a second of decoding (and the first token's, alone): a loaded
    # machine takes longer over the line, not more events per second.
    seconds = (job.eval_duration + job.prompt_eval_duration) / 1e9
    assert 1 <= len(tokens) <= 2 + seconds / BATCH_STREAM_INTERVAL
    assert len(tokens) < job.eval_count  # fewer events than tokens: joined, not one each
    assert "".join(tokens) == job.output


def test_two_thousand_lines_run_through_the_real_model_in_input_order(app, client, worker):
    # Raw prompts skip the chat template: a few prompt tokens each, so the run measures
    # feeding and queueing more than prefill.
    lines = [prompt(n, custom_id=f"req-{n}", raw=True) if n % 5 else
             {"custom_id": f"req-{n}", "messages": [{"role": "user", "content": f"Say {n}."}],
              "options": {"num_predict": 2}}
             for n in range(2000)]
    res = post_batch(client, jsonl(lines))
    assert res.status_code == 201
    batch = wait_for(client, res.get_json()["id"], timeout=1200)
    assert batch["status"] == "completed" and batch["completed_at"]
    assert batch["counts"]["total"] == batch["counts"]["succeeded"] == 2000
    assert batch["counts"]["done"] == 2000 and batch["counts"]["failed"] == 0
    rows = results(client, batch["id"])
    assert [r["line"] for r in rows] == list(range(1, 2001))
    assert [r["custom_id"] for r in rows] == [f"req-{n}" for n in range(2000)]
    assert all(r["status"] == "succeeded" and r["eval_count"] <= 2 for r in rows)
    assert sum(r["eval_count"] for r in rows) > 3000  # a raw prompt may end at once (EOS)
    assert batch["eval_count"] == sum(r["eval_count"] for r in rows)
    jobs = batch_jobs(app, batch["id"])
    assert len(jobs) == 2000 and {j.id for j in jobs} == {r["id"] for r in rows}
    assert {j.kind for j in jobs} == {"generate", "chat"}
    assert all(j.queue == "cpu.batch" for j in jobs)


def test_the_window_bounds_batch_jobs_waiting_in_redis(settings):
    lines = [prompt(n) for n in range(30)]
    with app_with(settings, batch_window=5) as app:
        client = app.test_client()
        batch_id = post_batch(client, jsonl(lines)).get_json()["id"]
        queue = ctx(app).queue
        assert queue.waiting("cpu.batch") == 5 and queue.waiting("cpu") == 0
        jobs = batch_jobs(app, batch_id)
        assert len(jobs) == 5
        with ctx(app).jobs.sessions() as session:
            fed = session.scalars(select(BatchLine.line).where(
                BatchLine.batch_id == batch_id, BatchLine.job_id.is_not(None))).all()
        assert sorted(fed) == [1, 2, 3, 4, 5]
        waiting, live = [], []
        store = BatchStore(queue, 5)

        def sample() -> dict:
            """The batch, noting how many of its jobs wait in Redis and are in flight."""
            batch = client.get(f"/batches/{batch_id}").get_json()
            waiting.append(queue.waiting("cpu.batch"))
            live.append(len(store.in_flight(store.get(batch_id))))
            return batch

        with running_worker(dataclasses.replace(settings, batch_window=5)):
            batch = wait_until(sample, 300, ready=lambda b: b["status"] in ENDED,
                               message=f"batch {batch_id} to end")
        assert batch["status"] == "completed" and batch["counts"]["succeeded"] == 30
        assert max(waiting) <= 5 and max(live) <= 5 and max(live) >= 2
        assert len(batch_jobs(app, batch_id)) == 30


def test_interactive_request_starts_before_the_batchs_queued_lines(settings):
    lines = [prompt(n, tokens=10) for n in range(20)]
    with app_with(settings, batch_window=12, num_parallel=2) as app:
        client = app.test_client()
        with running_worker(dataclasses.replace(settings, batch_window=12,
                                                num_parallel=2)) as runtime:
            batch_id = post_batch(client, jsonl(lines)).get_json()["id"]
            # The worker holds its batch places (two slots, and two lines a slot waiting
            # in the engine: workers/gates); the rest of the window waits in the queue, less
            # at most a feeding step's worth (service.batches).
            wait_for(client, batch_id,
                     lambda b: b["counts"]["running"] == runtime.gate.limit, timeout=120)
            queued = [j.id for j in batch_jobs(app, batch_id) if j.status == "queued"]
            assert len(queued) >= 12 - runtime.gate.limit - runtime.batches.step > 0
            job_id = client.post("/jobs", json={"model": MODEL, "prompt": "Hi",
                                                "options": {"num_predict": 2}}).get_json()["id"]
            wait_for(client, batch_id)
        jobs = ctx(app).jobs
        interactive = jobs.get(job_id)
        assert interactive.status == "succeeded"
        starts = [jobs.get(i).started_at for i in queued]
        assert all(interactive.started_at < s for s in starts)


def test_cancel_mid_batch_then_resubmit_resumes_without_redoing_lines(settings):
    lines = jsonl([prompt(n, tokens=6) for n in range(24)])
    with app_with(settings, batch_window=4, num_parallel=2) as app:
        client = app.test_client()
        with running_worker(dataclasses.replace(settings, batch_window=4, num_parallel=2)):
            batch_id = post_batch(client, lines, key="file-1").get_json()["id"]
            wait_for(client, batch_id, lambda b: b["counts"]["succeeded"] >= 3, timeout=300)
            res = client.post(f"/batches/{batch_id}/cancel")
            assert res.status_code == 200
            assert res.get_json()["status"] in ("cancelling", "cancelled")
            batch = wait_for(client, batch_id)
            assert batch["status"] == "cancelled" and batch["cancelled_at"]
            counts = batch["counts"]
            assert counts["queued"] == counts["running"] == 0 and counts["pending"] >= 10
            assert client.post(f"/batches/{batch_id}/cancel").get_json()["status"] == \
                "cancelled"
            before = results(client, batch_id)
            assert {r["status"] for r in before} <= {"succeeded", "cancelled"}
            assert before[-1]["status"] == "cancelled" and before[-1]["id"] is None
            done_before = {r["line"]: r["id"] for r in before if r["status"] == "succeeded"}
            jobs_before = len(batch_jobs(app, batch_id))

            again = post_batch(client, lines, key="file-1")
            assert again.status_code == 200 and again.get_json()["id"] == batch_id
            batch = wait_for(client, batch_id)
        assert batch["status"] == "completed" and batch["counts"]["succeeded"] == 24
        after = {r["line"]: r["id"] for r in results(client, batch_id)}
        assert all(after[line] == job for line, job in done_before.items())
        # Only the lines not done before the cancel got new jobs.
        assert len(batch_jobs(app, batch_id)) == jobs_before + 24 - len(done_before)
        assert client.post(f"/batches/{batch_id}/cancel").status_code == 409


def test_an_expired_batch_stops_and_reports_unfinished_lines(app, client):
    batch_id = post_batch(client, jsonl([prompt(n) for n in range(100)])).get_json()["id"]
    with ctx(app).jobs.sessions.begin() as session:
        session.execute(update(Batch).where(Batch.id == batch_id).values(
            expires_at=Batch.created_at))
    batch = client.get(f"/batches/{batch_id}").get_json()
    assert batch["status"] == "expired" and batch["expired_at"]
    assert batch["counts"]["queued"] == 0 and batch["counts"]["cancelled"] == 64
    rows = results(client, batch_id)
    assert [r["status"] for r in rows] == ["cancelled"] * 64 + ["expired"] * 36
    assert client.post(f"/batches/{batch_id}/cancel").status_code == 409


def test_concurrent_feeders_never_submit_a_line_twice(app):
    queue = ctx(app).queue
    specs = [LineSpec(n, kind=JobKind.GENERATE, model=MODEL, body=prompt(n)) for n in
             range(1, 101)]
    batch = BatchStore(queue, window=1).create(specs, endpoint="/batches", queue="cpu")
    feeders = [BatchStore(queue, window=40) for _ in range(4)]
    threads = [threading.Thread(target=f.feed, args=(batch.id,)) for f in feeders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    jobs = batch_jobs(app, batch.id)
    assert len(jobs) == 40 and queue.waiting("cpu.batch") == 40
    with queue.jobs.sessions() as session:
        claimed = session.execute(select(BatchLine.line, BatchLine.job_id).where(
            BatchLine.batch_id == batch.id, BatchLine.job_id.is_not(None))).all()
    assert sorted(line for line, _ in claimed) == list(range(1, 41))
    assert {job for _, job in claimed} == {j.id for j in jobs}
    # Without the lock, the claim alone still gives a line to one job only.
    line = BatchLine(batch_id=batch.id, line=41, kind="generate", model=MODEL, body={})
    store = feeders[0]
    won = store._submit(store.get(batch.id), [line])
    assert len(won) == 1 and store._submit(store.get(batch.id), [line]) == []
    with queue.jobs.sessions() as session:
        rows = session.scalar(select(func.count()).select_from(Job).where(
            Job.batch_id == batch.id))
        owner = session.scalar(select(BatchLine.job_id).where(
            BatchLine.batch_id == batch.id, BatchLine.line == 41))
    assert owner == won[0].id and rows == 41  # the loser's job was never kept


def test_uploads_over_the_limit_or_not_text_are_refused_before_anything_is_queued(settings):
    with app_with(settings, max_upload=1000) as app:
        client = app.test_client()
        res = post_batch(client, jsonl([prompt(n) for n in range(50)]))
        assert res.status_code == 413 and "CORRAL_MAX_UPLOAD" in res.get_json()["error"]
        res = post_batch(client, b"\xff\xfe\x00bad bytes\n")
        assert res.status_code == 400 and "UTF-8" in res.get_json()["error"]
        assert post_batch(client, "").status_code == 400
        assert client.get("/batches").get_json()["batches"] == []
        assert ctx(app).jobs.recent() == [] and ctx(app).queue.waiting("cpu.batch") == 0
        files = settings.home / "files"
        assert not files.exists() or list(files.iterdir()) == []


# ---- the CLI ------------------------------------------------------------------------------
@pytest.fixture
def host(app) -> Iterator[str]:
    """The test's app served over real HTTP, as CORRAL_HOST for the CLI."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def corral(host: str, *args: str):
    return CliRunner().invoke(cli, list(args), env={"CORRAL_HOST": host})


def test_cli_submits_follows_lists_and_reattaches_without_redoing(app, host, worker, tmp_path):
    source = tmp_path / "prompts.jsonl"
    source.write_text(jsonl([prompt(n, tokens=4) for n in range(5)] +
                            [{"messages": [{"role": "user", "content": "Hi"}],
                              "options": {"num_predict": 3}}, "{bad"]))
    out = tmp_path / "out.jsonl"
    first = corral(host, "batch", "submit", str(source), "--model", MODEL, "--wait",
                   "-o", str(out))
    assert first.exit_code == 0, first.output
    assert "created batch_" in first.stderr and "7/7 done, 1 failed" in first.stderr
    assert "tokens/s, ETA" in first.stderr and "throughput: 7 jobs" in first.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 8))
    assert [r["status"] for r in rows] == ["succeeded"] * 6 + ["failed"]
    assert "invalid JSON" in rows[6]["error"]
    batch_id = first.stderr.split("created ")[1].split(":")[0]
    jobs = len(batch_jobs(app, batch_id))

    again = corral(host, "batch", "submit", str(source), "--model", MODEL, "--wait",
                   "-o", str(tmp_path / "again.jsonl"))
    assert again.exit_code == 0 and f"attached to existing batch {batch_id}" in again.stderr
    assert (tmp_path / "again.jsonl").read_text() == out.read_text()
    assert len(batch_jobs(app, batch_id)) == jobs == 6

    status = corral(host, "batch", "status", batch_id)
    assert f"batch {batch_id}: completed, 7 lines: 6 succeeded, 1 failed" in status.output
    listed = corral(host, "batch", "list").output.splitlines()
    assert listed[0].split() == ["ID", "STATUS", "DONE", "FAILED", "CREATED"]
    assert listed[1].split()[:4] == [batch_id, "completed", "7/7", "1"]
    fetched = corral(host, "batch", "results", batch_id)
    assert fetched.stdout == out.read_text()
    refused = corral(host, "batch", "cancel", batch_id)
    assert refused.exit_code == 1 and "already completed" in refused.stderr


def test_reading_a_batch_resends_jobs_whose_messages_were_lost(app, client):
    batch_id = post_batch(client, jsonl([prompt(n) for n in range(10)])).get_json()["id"]
    queue = ctx(app).queue
    assert queue.waiting("cpu.batch") == 10
    queue.redis.delete(*queue.redis.keys("cpu.batch*"))  # e.g. Redis restarted without them
    assert queue.waiting("cpu.batch") == 0
    client.get(f"/batches/{batch_id}")
    assert queue.waiting("cpu.batch") == 0  # too recent to call lost
    with ctx(app).jobs.sessions.begin() as session:
        session.execute(update(Job).where(Job.batch_id == batch_id).values(
            created_at=func.datetime(Job.created_at, "-2 minutes")))
    client.get(f"/batches/{batch_id}")
    assert queue.waiting("cpu.batch") == 10
    client.get(f"/batches/{batch_id}")
    assert queue.waiting("cpu.batch") == 10  # sent once, not on every read
    assert len(batch_jobs(app, batch_id)) == 10
    # With nobody reading it, the workers' sweep does the same.
    queue.redis.delete(*queue.redis.keys("cpu.batch*"))
    BatchStore(queue, 64).sweep()
    assert queue.waiting("cpu.batch") == 10
