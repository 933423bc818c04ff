"""The native jobs API on the real path: polling, SSE resume, cancel, idempotency, priority."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.conftest import running_worker
from tests.waiting import wait_until

MODEL = "smollm2:135m"


def submit(client, prompt="Say hi.", headers=None, **fields):
    body = {"kind": "generate", "model": MODEL, "prompt": prompt,
            "options": {"num_predict": 8, "temperature": 0}, **fields}
    res = client.post("/jobs", json=body, headers=headers or {})
    assert res.status_code in (200, 202), res.get_json()
    return res.get_json()["id"]


def wait_finished(client, job_id, timeout=120):
    return wait_until(lambda: client.get(f"/jobs/{job_id}").get_json(), timeout,
                      ready=lambda job: job["status"] in ("succeeded", "failed", "cancelled"),
                      message=f"job {job_id} to finish")


def sse(text: str) -> list[tuple[str, str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["id"], fields["event"], json.loads(fields["data"])))
    return events


def test_polling_shows_the_finished_job_with_metrics(client, worker):
    job = wait_finished(client, submit(client))
    assert job["status"] == "succeeded" and job["output"]
    assert job["eval_count"] > 0 and job["total_duration"] > 0
    assert job["position"] is None


def test_sse_resumes_after_last_event_id_mid_stream_and_after_the_end(client, settings):
    # Greedy, and one event per token, so there is a middle to resume from.
    job_id = submit(client, prompt="Count from one to ten.",
                    options={"num_predict": 24, "temperature": 0})
    with running_worker(dataclasses.replace(settings, stream_interval=0.0)):
        full = sse(client.get(f"/jobs/{job_id}/events").get_data(as_text=True))
    tokens = [e for e in full if e[1] == "token"]
    assert len(tokens) >= 5 and full[-1][1] == "done"
    middle = tokens[len(tokens) // 2][0]
    resumed = sse(client.get(f"/jobs/{job_id}/events",
                             headers={"Last-Event-ID": middle}).get_data(as_text=True))
    seen = [e for e in full if e[0] <= middle] + resumed
    assert [e[0] for e in seen] == [e[0] for e in full]  # every event exactly once, in order
    text = "".join(e[2]["text"] for e in seen if e[1] == "token")
    assert text == client.get(f"/jobs/{job_id}").get_json()["output"]
    after_end = client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": full[-1][0]})
    assert after_end.get_data(as_text=True) == ""


def test_sse_follows_a_running_job_live(client, worker):
    job_id = submit(client, prompt="Tell a story.", options={"num_predict": 32})
    events = sse(client.get(f"/jobs/{job_id}/events").get_data(as_text=True))
    assert events[0][1] == "status" and events[-1][1] == "done"
    tokens = [e[2]["text"] for e in events if e[1] == "token"]
    # Tokens come in chunks paced by CORRAL_STREAM_INTERVAL (the first alone), never more
    # chunks than tokens, and together they are the job's output.
    assert 1 < len(tokens) <= events[-1][2]["eval_count"]
    assert "".join(tokens) == client.get(f"/jobs/{job_id}").get_json()["output"]


def test_a_running_jobs_tokens_so_far_grow_in_its_events_its_record_and_the_list(client,
                                                                                  worker):
    job_id = submit(client, prompt="Write a long essay about rivers.",
                    options={"num_predict": 2000, "temperature": 0.8})
    running = wait_until(lambda: client.get(f"/jobs/{job_id}").get_json(), 60,
                         ready=lambda job: job["status"] == "running" and job["eval_count"],
                         message="the running job counting its tokens")
    listed = wait_until(
        lambda: {j["id"]: j for j in client.get("/jobs?status=running").get_json()["jobs"]},
        30, ready=lambda jobs: (jobs.get(job_id) or {}).get("eval_count", 0) >
        running["eval_count"], message="the list showing more tokens than before")
    assert listed[job_id]["status"] == "running"
    client.delete(f"/jobs/{job_id}")
    job = wait_finished(client, job_id)
    events = sse(client.get(f"/jobs/{job_id}/events").get_data(as_text=True))
    counts = [e[2]["eval_count"] for e in events if e[1] == "token"]
    # Each chunk says how many tokens the job has made so far: never fewer than the chunks,
    # growing, and never past the count the record keeps (a last token may carry no text).
    assert counts == sorted(counts) and counts[0] >= 1 and len(counts) <= counts[-1]
    assert counts[-1] <= job["eval_count"] == events[-1][2]["eval_count"]
    assert 0 < running["eval_count"] < listed[job_id]["eval_count"] <= job["eval_count"]


def test_idempotency_key_returns_the_same_job(app, client, worker):
    first = submit(client, headers={"Idempotency-Key": "abc-1"})
    second = submit(client, headers={"Idempotency-Key": "abc-1"})
    assert first == second
    assert len(app.extensions["corral"].jobs.search(limit=10)) == 1


def test_cancel_a_queued_job_and_it_never_runs(settings, app, client):
    job_id = submit(client)
    res = client.delete(f"/jobs/{job_id}")
    assert res.status_code == 200 and res.get_json()["status"] == "cancelled"
    events = sse(client.get(f"/jobs/{job_id}/events").get_data(as_text=True))
    assert events[-1][1] == "done" and events[-1][2]["done_reason"] == "cancel"
    with running_worker(settings):
        done = wait_finished(client, submit(client, prompt="after"))
    assert done["status"] == "succeeded"
    job = client.get(f"/jobs/{job_id}").get_json()
    assert job["status"] == "cancelled" and job["started_at"] is None


def test_cancel_a_running_job_keeps_partial_output(client, worker):
    job_id = submit(client, prompt="Write a long essay about rivers.",
                    options={"num_predict": 2000, "temperature": 0.8})
    wait_until(lambda: client.get(f"/jobs/{job_id}").get_json()["output"], 60,
               message="the running job's first output")
    res = client.delete(f"/jobs/{job_id}")
    job = res.get_json()
    assert res.status_code == 200 and job["status"] == "cancelled"
    assert job["output"] and job["done_reason"] == "cancel" and 0 < job["eval_count"] < 2000
    assert client.delete(f"/jobs/{job_id}").status_code == 409


def test_cancelling_a_finished_job_is_409(client, worker):
    job_id = submit(client)
    wait_finished(client, job_id)
    res = client.delete(f"/jobs/{job_id}")
    assert res.status_code == 409 and "already succeeded" in res.get_json()["error"]


def test_queue_position_while_waiting(client):
    ids = [submit(client, prompt=f"p{i}") for i in range(3)]
    assert [client.get(f"/jobs/{i}").get_json()["position"] for i in ids] == [0, 1, 2]


def _started_order(client, ids):
    """The jobs in the order they began decoding (their first token): a worker claims a few
    jobs beyond its slots (workers/gates), and its engine then runs them in priority
    order (workers/scheduler)."""
    jobs = [wait_finished(client, i) for i in ids]
    return [j["id"] for j in sorted(jobs, key=lambda j: j["first_token_at"])]


def test_higher_priority_runs_first_and_interactive_before_batch(settings, client):
    low = submit(client, prompt="low", priority=0)
    batch_line = submit(client, prompt="batch", priority=9, batch="b1")
    high = submit(client, prompt="high", priority=9)
    mid = submit(client, prompt="mid", priority=5)
    high2 = submit(client, prompt="high2", priority=9)
    with running_worker(dataclasses.replace(settings, num_parallel=1)):
        order = _started_order(client, [low, batch_line, high, mid, high2])
    names = {low: "low", batch_line: "batch", high: "high", mid: "mid", high2: "high2"}
    ran = [names[i] for i in order]
    # The two of priority 9 reach the engine together (either may go first), then 5 and 0,
    # and the batch line last. A one-slot worker holds two interactive jobs (workers/gates):
    # it refuses both of 5 and 0 at first, and takes back whichever reaches its gate first
    # when one ends (3 runs in 12 went 0 before 5 before this session too, run alone).
    assert sorted(ran[:2]) == ["high", "high2"] and sorted(ran[2:4]) == ["low", "mid"]
    assert ran[4] == "batch"


def test_list_filters_and_pages_with_a_cursor(client, worker):
    ids = [submit(client, prompt=f"p{i}") for i in range(5)]
    for job_id in ids:
        wait_finished(client, job_id)
    seen, cursor = [], None
    while True:
        page = client.get("/jobs", query_string={"limit": 2, **({"cursor": cursor} if cursor
                                                                  else {})}).get_json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    assert client.get("/jobs?status=queued").get_json()["jobs"] == []
    assert len(client.get("/jobs?status=succeeded&model=smollm2:135m").get_json()["jobs"]) == 5
    assert client.get("/jobs?status=bogus").status_code == 400
    assert client.get("/jobs?limit=0").status_code == 400


@pytest.mark.parametrize(("body", "field"), [
    ({"kind": "dance", "model": MODEL}, "kind"),
    ({"kind": "generate", "model": MODEL, "priority": 11}, "priority"),
    ({"kind": "chat", "model": MODEL, "messages": [{"role": "user", "content": 5}]},
     "messages[0].content"),
])
def test_bad_job_fields_are_400(client, body, field):
    res = client.post("/jobs", json=body)
    assert res.status_code == 400 and field in res.get_json()["error"]


def test_unknown_job_is_404(client):
    assert client.get("/jobs/nope").status_code == 404
    assert client.delete("/jobs/nope").status_code == 404


def test_ps_and_jobs_show_what_waits_per_model(client):
    ids = [submit(client, prompt=f"p{i}") for i in range(3)]
    answer = client.get("/api/ps").get_json()
    assert answer["queued"] == {MODEL: 3}
    listed = client.get("/jobs?status=queued,running").get_json()["jobs"]
    assert sorted(j["position"] for j in listed) == [0, 1, 2]
    assert {j["id"] for j in listed} == set(ids)
