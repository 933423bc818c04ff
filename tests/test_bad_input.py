"""Bad input gets a 4xx `{"error": ...}` naming what is wrong, never a 500, and leaves the
worker healthy (issue 13): absurd keep_alive, options out of range, schemas no grammar can
come from, prompts longer than the context, garbage event ids, and list pages that would
echo every prompt."""

from __future__ import annotations

import json

import pytest
import redis

from service.jobs import fleet
from service.jobs.records import JobStatus
from tests.waiting import wait_until
from workers.heartbeat import Heartbeat
from workers.model_pool import Loaded

MODEL = "smollm2:135m"
SHORT = {"temperature": 0, "num_predict": 4}
LONG_PROMPT = "Tell me about the sea. " * 120  # about 700 tokens


def generate(client, path="/api/generate", **body):
    base = {"model": MODEL, "stream": False, "options": SHORT}
    if path == "/api/generate":
        base["prompt"] = "Say hi."
    else:
        base["messages"] = [{"role": "user", "content": "Say hi."}]
    return client.post(path, json={**base, **body})


def assert_still_healthy(client) -> None:
    """The worker that took the bad request still answers a good one."""
    res = generate(client)
    assert res.status_code == 200, res.get_json()
    assert res.get_json()["done"] is True


def ndjson(response) -> list[dict]:
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines() if line]


# ---- keep_alive --------------------------------------------------------------------------

def test_an_absurd_keep_alive_is_forever_and_ps_keeps_listing_the_model(client, worker):
    res = generate(client, keep_alive=1e308)
    assert res.status_code == 200, res.get_json()
    [entry] = wait_until(lambda: client.get("/api/ps").get_json()["models"], 10)
    assert entry["name"] == MODEL and entry["expires_at"] == fleet.FOREVER_AT
    assert worker.heartbeat._thread.is_alive()
    # Published again after a change: the heartbeat still runs (and still describes it).
    assert generate(client, keep_alive="10m").status_code == 200
    wait_until(lambda: client.get("/api/ps").get_json()["models"], 10,
               ready=lambda models: models and models[0]["expires_at"] != fleet.FOREVER_AT,
               message="/api/ps to show the 10m expiry published by the heartbeat")


@pytest.mark.parametrize("value", ["nan", "NaN", float("nan")])
def test_a_keep_alive_that_is_not_a_number_is_400(client, value):
    body = json.dumps({"model": MODEL, "prompt": "x", "keep_alive": value})
    res = client.post("/api/generate", data=body, content_type="application/json")
    assert res.status_code == 400 and "keep_alive" in res.get_json()["error"]


class _Engine:
    size_bytes = 1


def _loaded(key: str, expires_at: float | None, users: int = 0) -> Loaded:
    return Loaded(key, _Engine(), users=users, expires_at=expires_at, info={"name": key})


def test_the_heartbeat_survives_any_stored_expiry_and_a_model_it_cannot_describe(redis_url):
    client = redis.Redis.from_url(redis_url)
    models = [_loaded("huge", 1e308), _loaded("inf", float("inf")), _loaded("nan", float("nan")),
              _loaded("busy", None, users=1), _loaded("broken", 10.0)]

    def details(name: str) -> dict:
        if name == "broken":
            raise RuntimeError("cannot describe")
        return {"family": "test"}

    beat = Heartbeat(client, lambda: list(models), details, worker_id="test:1:0",
                     keep_alive=float("inf"), context_length=64)
    try:
        beat.publish()
        listed = {m["name"]: m["expires_at"] for m in fleet.loaded(client)}
        assert listed == {"huge": fleet.FOREVER_AT, "inf": fleet.FOREVER_AT,
                          "nan": fleet.FOREVER_AT, "busy": fleet.FOREVER_AT}
        models.append(_loaded("later", 60.0))  # the thread publishes the change on its own
        wait_until(lambda: {m["name"] for m in fleet.loaded(client)}, 10,
                   ready=lambda names: "later" in names,
                   message="the heartbeat thread to publish a model added later")
        assert beat._thread.is_alive()
    finally:
        beat.close()
        client.close()


# ---- options -----------------------------------------------------------------------------

@pytest.mark.parametrize(("option", "value"), [
    ("num_ctx", 1), ("num_ctx", 0), ("num_ctx", 10**12), ("num_predict", -3),
    ("temperature", -0.5), ("top_k", -1), ("top_k", 2**40), ("top_p", 1.5), ("min_p", -0.1),
    ("typical_p", 2), ("repeat_last_n", -2), ("seed", 2**70), ("mirostat", 3),
    ("temperature", 10**400), ("num_thread", -4),
])
@pytest.mark.parametrize("path", ["/api/generate", "/api/chat", "/api/embed"])
def test_options_out_of_range_are_400_naming_the_option(client, path, option, value):
    body = {"model": MODEL, "prompt": "x", "messages": [], "input": "x",
            "options": {option: value}}
    res = client.post(path, json=body)
    assert res.status_code == 400, res.get_json()
    assert res.get_json()["error"].startswith(f"invalid option '{option}': must be")


def test_non_finite_options_are_400(client):
    body = '{"model": "smollm2:135m", "prompt": "x", "options": {"temperature": NaN}}'
    res = client.post("/api/generate", data=body, content_type="application/json")
    assert res.status_code == 400
    assert "invalid option 'temperature': must be a finite number" in res.get_json()["error"]


def test_options_at_their_limits_run(client, worker):
    res = generate(client, options={"num_ctx": 4, "num_predict": -2, "top_k": 0, "top_p": 1,
                                    "min_p": 0, "repeat_last_n": -1, "temperature": 0})
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    assert body["prompt_eval_count"] + body["eval_count"] <= 4


# ---- format --------------------------------------------------------------------------------

@pytest.mark.parametrize(("fmt", "where"), [
    ({"type": "nonsense"}, "format.type"),
    ({"type": ["string", "text"]}, "format.type"),
    ({"type": "object", "properties": {"age": {"type": "int"}}}, "format.properties.age.type"),
    ({"type": "object", "properties": {"age": "number"}}, "format.properties.age"),
    ({"type": "array", "items": [1]}, "format.items[0]"),
    ({"type": "array", "items": "string"}, "format.items"),
    ({"anyOf": "string"}, "format.anyOf"),
    ({"type": "object", "required": "name"}, "format.required"),
])
@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_a_schema_that_is_no_json_schema_is_400_naming_the_part(client, path, fmt, where):
    res = generate(client, path, format=fmt)
    assert res.status_code == 400
    assert f"invalid field '{where}'" in res.get_json()["error"]


def test_a_schema_nested_too_deep_is_400(client):
    schema: dict = {"type": "string"}
    for _ in range(200):
        schema = {"type": "array", "items": schema}
    res = generate(client, format=schema)
    assert res.status_code == 400 and "nested deeper" in res.get_json()["error"]


# A JSON schema by shape, which llama.cpp's converter still cannot turn into a grammar.
UNGRAMMATICAL = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_a_schema_the_worker_cannot_build_a_grammar_for_is_400(app, client, worker, path):
    whole = generate(client, path, format=UNGRAMMATICAL)
    assert whole.status_code == 400, whole.get_data(as_text=True)
    assert "schema" in whole.get_json()["error"]
    streamed = generate(client, path, format=UNGRAMMATICAL, stream=True)
    assert streamed.status_code == 400 and streamed.mimetype == "application/json"
    assert streamed.get_json()["error"] == whole.get_json()["error"]
    jobs = app.extensions["corral"].jobs.recent()
    assert [j.status for j in jobs] == [JobStatus.FAILED.value] * 2
    assert_still_healthy(client)


def test_openai_response_format_with_a_bad_schema_is_400(client, worker):
    def ask(schema, stream=False):
        return client.post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            "stream": stream,
            "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}})

    edge = ask({"type": "nonsense"})
    assert edge.status_code == 400
    assert edge.get_json()["error"]["param"] == "response_format"
    assert "response_format.json_schema.schema.type" in edge.get_json()["error"]["message"]
    for stream in (False, True):
        res = ask(UNGRAMMATICAL, stream)
        assert res.status_code == 400, res.get_data(as_text=True)
        assert res.get_json()["error"]["type"] == "invalid_request_error"
    assert_still_healthy(client)


# ---- prompts longer than the context -------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_a_prompt_longer_than_num_ctx_is_cut_from_the_front(client, worker, path):
    field = {"prompt": LONG_PROMPT} if path == "/api/generate" else {
        "messages": [{"role": "user", "content": LONG_PROMPT}]}
    res = generate(client, path, options={**SHORT, "num_ctx": 128}, **field)
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    assert body["prompt_eval_count"] == 128 - 4  # room left for num_predict's 4 tokens
    assert body["eval_count"] <= 4
    lines = ndjson(generate(client, path, options={**SHORT, "num_ctx": 128}, stream=True,
                            **field))
    assert lines[-1]["done"] and lines[-1]["prompt_eval_count"] == 128 - 4


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_truncate_false_refuses_a_prompt_longer_than_the_context(app, client, worker, path,
                                                                stream):
    field = {"prompt": LONG_PROMPT} if path == "/api/generate" else {
        "messages": [{"role": "user", "content": LONG_PROMPT}]}
    res = generate(client, path, options={**SHORT, "num_ctx": 128}, truncate=False,
                   stream=stream, **field)
    assert res.status_code == 400, res.get_data(as_text=True)
    assert "context holds 128" in res.get_json()["error"]
    [job] = app.extensions["corral"].jobs.recent()
    assert job.status == JobStatus.FAILED.value and job.request["truncate"] is False
    assert_still_healthy(client)


def test_truncate_must_be_a_boolean(client):
    res = generate(client, truncate="no")
    assert res.status_code == 400 and "truncate" in res.get_json()["error"]


# ---- event ids -----------------------------------------------------------------------------

def _queued_job(client) -> str:
    res = client.post("/jobs", json={"kind": "generate", "model": MODEL, "prompt": "x",
                                     "options": SHORT})
    assert res.status_code == 202
    return res.get_json()["id"]


@pytest.mark.parametrize("value", ["abc", "1-2-3", "-1", "12-x", "99999999999999999999999-0",
                                   "18446744073709551615-0"])
def test_a_garbage_event_id_is_400_naming_where_it_came_from(client, value):
    job_id = _queued_job(client)
    res = client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": value})
    assert res.status_code == 400 and res.mimetype == "application/json"
    assert "invalid header 'Last-Event-ID'" in res.get_json()["error"]
    res = client.get(f"/jobs/{job_id}/events", query_string={"after": value})
    assert res.status_code == 400
    assert "invalid parameter 'after'" in res.get_json()["error"]


def test_a_good_event_id_resumes_a_finished_job(client, worker):
    job_id = _queued_job(client)
    wait_until(lambda: client.get(f"/jobs/{job_id}").get_json()["status"], 60,
               ready=lambda status: status == "succeeded", message="the job to succeed")
    res = client.get(f"/jobs/{job_id}/events", query_string={"after": "0"})
    assert res.status_code == 200 and "event: done" in res.get_data(as_text=True)


# ---- list pages ----------------------------------------------------------------------------

def test_list_rows_are_summaries_and_the_job_itself_is_whole(app, client):
    prompt = "p" * 2_000_000
    job_id = client.post("/jobs", json={"kind": "generate", "model": MODEL,
                                        "prompt": prompt}).get_json()["id"]
    jobs = app.extensions["corral"].jobs
    assert jobs.claim(job_id, worker_host="here", device="cpu", owner="here:1:0",
                      lease=15) is not None
    jobs.finish(job_id, JobStatus.SUCCEEDED, output="o" * 1_000_000, done_reason="stop",
                metrics={"eval_count": 7})
    res = client.get("/jobs?limit=5")
    assert len(res.get_data()) < 5_000
    [row] = res.get_json()["jobs"]
    assert "request" not in row and "output" not in row
    assert row["id"] == job_id and row["status"] == "succeeded" and row["eval_count"] == 7
    assert row["preview"].startswith("o" * 200) and len(row["preview"]) <= 201
    assert row["links"]["self"] == f"/jobs/{job_id}"
    whole = client.get(row["links"]["self"]).get_json()
    assert whole["request"]["prompt"] == prompt and whole["output"] == "o" * 1_000_000


def test_a_queued_row_keeps_its_position_and_an_empty_preview(client):
    job_id = _queued_job(client)
    [row] = client.get("/jobs").get_json()["jobs"]
    assert row["id"] == job_id and row["position"] == 0 and row["preview"] == ""


# ---- found by schemathesis (tests/test_openapi_fuzz.py) ------------------------------------

@pytest.mark.parametrize("path", ["/jobs", "/batches?model=smollm2:135m"])
def test_an_empty_idempotency_key_names_nothing_to_repeat(client, path):
    """It was stored as a key, and the second request with it was a 500 (UNIQUE failed)."""
    def send():
        if path == "/jobs":
            return client.post(path, json={"model": MODEL, "prompt": "hi"},
                               headers={"Idempotency-Key": ""})
        return client.post(path, data="hi\n", headers={"Idempotency-Key": ""})

    first, second = send(), send()
    assert first.status_code in (201, 202), first.get_json()
    assert second.status_code == first.status_code, second.get_json()
    assert first.get_json()["id"] != second.get_json()["id"]


@pytest.mark.parametrize("path", ["/jobs", "/batches?model=smollm2:135m"])
def test_an_idempotency_key_longer_than_its_column_is_400(client, path):
    res = client.post(path, data='{"model": "smollm2:135m", "prompt": "hi"}',
                      headers={"Idempotency-Key": "k" * 256,
                               "Content-Type": "application/json"})
    assert res.status_code == 400
    assert "Idempotency-Key" in res.get_json()["error"]


def test_a_report_since_further_back_than_a_date_reaches_is_400(client):
    res = client.get("/jobs/report?since=999999999999999999999999999999")
    assert res.status_code == 400
    assert "'since'" in res.get_json()["error"]
