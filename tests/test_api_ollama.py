"""The Ollama face end to end: Flask → Redis → a real Celery worker → SmolLM2 → pub/sub → client."""

from __future__ import annotations

import dataclasses
import json

import pytest

from service.jobs.records import JobStatus
from service.models.store import ModelStore
from tests.conftest import running_worker
from tests.waiting import wait_until

GREEDY = {"temperature": 0, "num_predict": 12}
STATS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
         "eval_count", "eval_duration")


def ndjson(response) -> list[dict]:
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines() if line]


def job_rows(app):
    return app.extensions["corral"].jobs.recent()


def assert_stats_add_up(final: dict) -> None:
    for key in STATS:
        assert isinstance(final[key], int), key
    assert final["prompt_eval_count"] > 0 and final["eval_count"] > 0
    assert final["prompt_eval_duration"] > 0 and final["eval_duration"] > 0
    parts = final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
    assert final["total_duration"] >= parts


def test_generate_whole_answer_with_stats_and_job_row(app, client, worker):
    res = client.post("/api/generate", json={
        "model": "smollm2:135m", "prompt": "Name a colour.", "stream": False, "options": GREEDY})
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    assert body["done"] is True and body["model"] == "smollm2:135m"
    assert body["response"].strip()
    assert body["done_reason"] in ("stop", "length")
    assert body["eval_count"] <= 12
    assert_stats_add_up(body)
    [job] = job_rows(app)
    assert job.status == JobStatus.SUCCEEDED.value and job.kind == "generate"
    assert job.output == body["response"]
    assert job.eval_count == body["eval_count"]
    assert job.prompt_eval_count == body["prompt_eval_count"]
    assert job.started_at and job.finished_at and job.worker_host and job.device == "cpu"
    assert job.request["prompt"] == "Name a colour."


def test_generate_streams_ndjson_that_joins_to_the_job_output(app, client, worker):
    res = client.post("/api/generate", json={
        "model": "smollm2:135m", "prompt": "Count: one, two,", "options": GREEDY})
    assert res.status_code == 200 and res.mimetype == "application/x-ndjson"
    lines = ndjson(res)
    assert len(lines) >= 3
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"]
    text = "".join(line["response"] for line in lines)
    assert text == job_rows(app)[0].output
    assert_stats_add_up(lines[-1])
    assert lines[-1]["eval_count"] == len(lines) - 1 or lines[-1]["eval_count"] >= len(lines) - 1


def test_stream_interval_sends_the_first_token_alone_and_joins_the_rest(app, client, settings):
    # An interval longer than the whole answer: the first token, then everything else at the end.
    with running_worker(dataclasses.replace(settings, stream_interval=60.0)):
        res = client.post("/api/generate", json={
            "model": "smollm2:135m", "prompt": "Count: one, two,", "options": GREEDY})
        lines = ndjson(res)
    assert res.status_code == 200
    chunks = [line["response"] for line in lines[:-1]]
    assert len(chunks) == 2 and all(chunks)
    assert lines[-1]["eval_count"] > 2  # so the second chunk joined several tokens
    assert "".join(chunks) == job_rows(app)[0].output


def test_chat_uses_the_models_template_streamed_and_not(client, worker):
    messages = [{"role": "system", "content": "You answer in one word."},
                {"role": "user", "content": "What is the capital of France?"}]
    whole = client.post("/api/chat", json={"model": "smollm2:135m", "messages": messages,
                                           "stream": False, "options": GREEDY}).get_json()
    assert whole["message"]["role"] == "assistant"
    assert "paris" in whole["message"]["content"].lower()
    assert_stats_add_up(whole)
    streamed = ndjson(client.post("/api/chat", json={"model": "smollm2:135m",
                                                     "messages": messages, "options": GREEDY}))
    assert "".join(x["message"]["content"] for x in streamed) == whole["message"]["content"]


def test_late_subscriber_to_a_finished_job_gets_every_token(app, client, worker):
    res = client.post("/jobs", json={"kind": "generate", "model": "smollm2:135m",
                                     "prompt": "Say hi.", "options": GREEDY})
    assert res.status_code == 202
    job_id = res.get_json()["id"]
    events = client.get(f"/jobs/{job_id}/events").get_data(as_text=True)
    tokens = [json.loads(line[6:])["text"] for block in events.split("\n\n")
              if "event: token" in block for line in block.splitlines()
              if line.startswith("data: ")]
    assert events.rstrip().split("\n\n")[-1].startswith("id: ")
    assert "event: done" in events
    assert "".join(tokens) == client.get(f"/jobs/{job_id}").get_json()["output"]
    assert tokens


def test_keep_alive_zero_unloads_after_the_request(client, worker):
    res = client.post("/api/generate", json={"model": "smollm2:135m", "prompt": "Hi",
                                             "stream": False, "keep_alive": 0,
                                             "options": {"num_predict": 2}})
    assert res.status_code == 200
    assert worker.pool.loaded() == []


def test_keep_alive_keeps_the_model_loaded_and_reports_load_once(client, worker):
    body = {"model": "smollm2:135m", "prompt": "Hi", "stream": False, "keep_alive": "10m",
            "options": {"num_predict": 2}}
    first = client.post("/api/generate", json=body).get_json()
    second = client.post("/api/generate", json=body).get_json()
    assert first["load_duration"] > 0 and second["load_duration"] == 0
    assert [m.info["name"] for m in worker.pool.loaded()] == ["smollm2:135m"]


@pytest.fixture
def two_models(models_dir, tmp_path, model_file):
    """A private store with the same weights under two names (distinct manifests)."""
    store = ModelStore(tmp_path / "two")
    layer = store.import_file(model_file)
    store.create("first:latest", layer, parameters={"temperature": 0.1})
    store.create("second:latest", layer, parameters={"temperature": 0.2})
    return store.root


@pytest.mark.parametrize("max_loaded", [1, 2])
def test_max_loaded_models_evicts_least_recently_used(settings, two_models, max_loaded):
    from service.http.app import create_app

    settings = dataclasses.replace(settings, models=two_models, max_loaded_models=max_loaded)
    app = create_app({"TESTING": True}, settings=settings)
    with running_worker(settings) as worker:
        client = app.test_client()
        for name in ("first", "second"):
            res = client.post("/api/generate", json={"model": name, "prompt": "Hi",
                                                     "stream": False,
                                                     "options": {"num_predict": 2}})
            assert res.status_code == 200, res.get_json()
        loaded = [m.info["name"] for m in worker.pool.loaded()]
    app.extensions["corral"].close()
    assert loaded == (["second:latest"] if max_loaded == 1 else ["second:latest", "first:latest"])


def test_unknown_model_is_404(client):
    res = client.post("/api/generate", json={"model": "nope", "prompt": "x"})
    assert res.status_code == 404
    assert res.get_json() == {"error": "model 'nope' not found, try pulling it first"}


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/generate", {"prompt": "x"}, "model"),
    ("/api/generate", {"model": 3, "prompt": "x"}, "model"),
    ("/api/generate", {"model": "smollm2:135m", "prompt": ["x"]}, "prompt"),
    ("/api/generate", {"model": "smollm2:135m", "stream": "yes"}, "stream"),
    ("/api/generate", {"model": "smollm2:135m", "options": {"temperature": "hot"}}, "temperature"),
    ("/api/generate", {"model": "smollm2:135m", "keep_alive": "a while"}, "keep_alive"),
    ("/api/chat", {"model": "smollm2:135m", "messages": "hi"}, "messages"),
    ("/api/chat", {"model": "smollm2:135m", "messages": [{"role": "robot"}]}, "messages[0].role"),
])
def test_bad_fields_are_400_naming_the_field(client, path, body, field):
    res = client.post(path, json=body)
    assert res.status_code == 400
    assert field in res.get_json()["error"]


def test_malformed_json_is_400(client):
    res = client.post("/api/chat", data="{not json", content_type="application/json")
    assert res.status_code == 400 and "invalid JSON" in res.get_json()["error"]


def test_no_worker_in_time_is_503_and_the_job_failed(settings):
    from service.http.app import create_app

    app = create_app({"TESTING": True}, settings=dataclasses.replace(settings, load_timeout=0.5))
    res = app.test_client().post("/api/generate", json={"model": "smollm2:135m", "prompt": "x"})
    assert res.status_code == 503 and "CORRAL_LOAD_TIMEOUT" in res.get_json()["error"]
    [job] = job_rows(app)
    assert job.status == "failed" and "no worker" in job.error
    app.extensions["corral"].close()


def test_model_that_fails_to_load_fails_the_job_with_the_loaders_message(
        settings, tmp_path, model_file):
    from service.http.app import create_app

    truncated = tmp_path / "truncated.gguf"
    with model_file.open("rb") as src:
        truncated.write_bytes(src.read(8 << 20))
    store = ModelStore(tmp_path / "broken")
    store.create("broken:latest", store.import_file(truncated))
    settings = dataclasses.replace(settings, models=store.root)
    app = create_app({"TESTING": True}, settings=settings)
    with running_worker(settings):
        res = app.test_client().post("/api/generate", json={"model": "broken", "prompt": "x",
                                                            "stream": False})
    assert res.status_code == 500
    error = res.get_json()["error"]
    assert "load" in error.lower()
    [job] = job_rows(app)
    assert job.status == "failed" and job.error == error
    app.extensions["corral"].close()


def test_tags_version_and_root(client):
    assert client.get("/").get_data(as_text=True) == "corral is running"
    assert client.get("/api/version").get_json()["version"]
    [model] = client.get("/api/tags").get_json()["models"]
    assert model["name"] == "smollm2:135m" and model["size"] > 90_000_000
    assert model["details"]["family"] == "llama"
    assert model["details"]["quantization_level"] == "Q4_1"


def test_client_hanging_up_mid_stream_cancels_the_generation(app, client, worker):
    res = client.post("/api/generate", json={"model": "smollm2:135m",
                                             "prompt": "Write a long story.",
                                             "options": {"num_predict": 2000}}, buffered=False)
    chunks = iter(res.response)
    first = json.loads(next(chunks))
    assert first["done"] is False
    res.close()
    job = wait_until(lambda: job_rows(app)[0], 30, ready=lambda job: job.status != "running",
                     message="the job to stop running once the client hung up")
    assert job.status == "cancelled" and job.done_reason == "cancel"
    assert 0 < job.eval_count < 2000


@pytest.mark.postgres
def test_the_queue_path_records_jobs_in_postgresql(settings, postgres_url):
    from service.core.db import upgrade
    from service.http.app import create_app

    upgrade(postgres_url)
    settings = dataclasses.replace(settings, database_url=postgres_url)
    app = create_app({"TESTING": True}, settings=settings)
    with running_worker(settings):
        body = app.test_client().post("/api/chat", json={
            "model": "smollm2:135m", "messages": [{"role": "user", "content": "Hi"}],
            "stream": False, "options": GREEDY}).get_json()
    job = app.extensions["corral"].jobs.recent(1)[0]
    assert job.status == "succeeded" and job.output == body["message"]["content"]
    assert job.eval_count == body["eval_count"] and job.finished_at.tzinfo is not None
    app.extensions["corral"].close()
