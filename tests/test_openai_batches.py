"""OpenAI's Files and Batch APIs through the official `openai` client, over real HTTP, with a
real Celery worker running SmolLM2: the batch workflow from OpenAI's guide, unchanged."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

import openai
import pytest

from service.http.app import create_app
from tests.conftest import openai_client
from tests.waiting import wait_until

MODEL = "smollm2:135m"
ENDED = ("completed", "failed", "cancelled", "expired")


@pytest.fixture
def serve(settings):
    """serve(**settings changes) → an openai client against an app served in a thread."""
    with contextlib.ExitStack() as stack:

        def start(**changes) -> openai.OpenAI:
            app = create_app({"TESTING": True}, settings=dataclasses.replace(settings, **changes))
            stack.callback(app.extensions["corral"].close)
            return stack.enter_context(openai_client(app))

        yield start


@pytest.fixture
def api(serve) -> openai.OpenAI:
    return serve()


def chat_line(n: int, **body) -> dict:
    return {"custom_id": f"q-{n}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "max_tokens": 4, "temperature": 0,
                     "messages": [{"role": "user", "content": f"Say the number {n}."}],
                     **body}}


def upload(api: openai.OpenAI, lines: list, name: str = "requests.jsonl"):
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    return api.files.create(file=(name, io.BytesIO(text.encode())), purpose="batch")


def poll(api: openai.OpenAI, batch_id: str, timeout: float = 300):
    return wait_until(lambda: api.batches.retrieve(batch_id), timeout, 0.3,
                      ready=lambda batch: batch.status in ENDED,
                      message=lambda batch: f"batch {batch_id} to end (still {batch.status})")


def jsonl(content) -> list[dict]:
    return [json.loads(x) for x in content.text.splitlines()]


def test_files_and_batches_end_to_end_with_the_official_client(api, worker):
    lines = [chat_line(n) for n in range(6)]
    lines.insert(2, "{not json")
    lines.insert(4, {**chat_line(99), "body": {**chat_line(99)["body"], "model": "nope:1b"}})
    uploaded = upload(api, lines)
    assert (uploaded.object, uploaded.purpose, uploaded.filename) == \
        ("file", "batch", "requests.jsonl")
    assert uploaded.bytes == len(api.files.content(uploaded.id).content)
    assert api.files.retrieve(uploaded.id).id == uploaded.id

    created = api.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h", metadata={"job": "nightly"})
    assert created.status in ("validating", "in_progress") and created.object == "batch"
    assert created.request_counts.total == 8 and created.metadata == {"job": "nightly"}
    batch = poll(api, created.id)
    assert batch.status == "completed" and batch.completed_at >= batch.in_progress_at
    assert (batch.request_counts.completed, batch.request_counts.failed) == (6, 2)
    assert batch.output_file_id and batch.error_file_id

    output = jsonl(api.files.content(batch.output_file_id))
    assert [o["custom_id"] for o in output] == [f"q-{n}" for n in range(6)]
    for item in output:
        assert item["error"] is None and item["id"].startswith("batch_req_")
        response = item["response"]
        assert response["status_code"] == 200
        body = response["body"]
        assert body["object"] == "chat.completion" and body["model"] == MODEL
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert 0 < body["usage"]["completion_tokens"] <= 4
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + \
            body["usage"]["completion_tokens"]
    errors = jsonl(api.files.content(batch.error_file_id))
    assert [(e["error"]["line"], e["error"]["code"], e["response"]) for e in errors] == \
        [(3, "invalid_json_line", None), (5, "model_not_found", None)]
    assert errors[1]["custom_id"] == "q-99" and "nope:1b" in errors[1]["error"]["message"]

    meta = api.files.retrieve(batch.output_file_id)
    assert meta.purpose == "batch_output"
    assert meta.bytes == len(api.files.content(batch.output_file_id).content)
    assert [b.id for b in api.batches.list()] == [batch.id]
    assert {f.id for f in api.files.list()} == {uploaded.id, batch.output_file_id,
                                                 batch.error_file_id}
    assert [f.id for f in api.files.list(purpose="batch")] == [uploaded.id]
    deleted = api.files.delete(uploaded.id)
    assert deleted.deleted and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError):
        api.files.retrieve(uploaded.id)
    with pytest.raises(openai.ConflictError):
        api.batches.cancel(batch.id)


def test_completions_batch_returns_text_completion_objects(api, worker):
    lines = [{"custom_id": f"c-{n}", "method": "POST", "url": "/v1/completions",
              "body": {"model": MODEL, "prompt": f"{n} plus one is", "max_tokens": 3}}
             for n in range(3)]
    batch = poll(api, api.batches.create(input_file_id=upload(api, lines).id,
                                         endpoint="/v1/completions",
                                         completion_window="24h").id)
    assert batch.status == "completed" and batch.error_file_id is None
    output = jsonl(api.files.content(batch.output_file_id))
    assert [o["response"]["body"]["object"] for o in output] == ["text_completion"] * 3
    assert all(o["response"]["body"]["choices"][0]["text"] for o in output)


def test_cancel_stops_a_batch_and_reports_its_unfinished_requests(serve, settings):
    from tests.conftest import running_worker

    api = serve(batch_window=2, num_parallel=2)
    lines = [chat_line(n, max_tokens=12) for n in range(12)]
    with running_worker(dataclasses.replace(settings, batch_window=2, num_parallel=2)):
        batch = api.batches.create(input_file_id=upload(api, lines).id,
                                   endpoint="/v1/chat/completions", completion_window="24h")
        wait_until(lambda: api.batches.retrieve(batch.id).request_counts.completed, 300, 0.2,
                   message="the batch's first completed request")
        cancelling = api.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
        batch = poll(api, batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at
    done = batch.request_counts.completed
    assert 1 <= done < 12
    output = jsonl(api.files.content(batch.output_file_id))
    errors = jsonl(api.files.content(batch.error_file_id))
    assert len(output) == done and len(errors) == 12 - done
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    order = [int(x["custom_id"][2:]) for x in output + errors]
    assert sorted(order) == list(range(12))


def test_a_file_of_only_bad_lines_fails_the_batch_with_its_errors(api):
    lines = [{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}},
             {"custom_id": "b", "method": "GET", "url": "/v1/chat/completions", "body": {}}]
    batch = api.batches.create(input_file_id=upload(api, lines).id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status == "failed" and batch.failed_at
    assert [(e.line, e.code) for e in batch.errors.data] == [(1, "invalid_url"),
                                                             (2, "invalid_method")]
    assert batch.request_counts.failed == 2 and batch.output_file_id is None
    assert len(jsonl(api.files.content(batch.error_file_id))) == 2


def test_uploads_that_are_not_jsonl_or_too_large_are_refused(serve):
    api = serve(max_upload=2000)
    with pytest.raises(openai.BadRequestError) as not_jsonl:
        api.files.create(file=("data.csv", io.BytesIO(b"a,b\n1,2\n")), purpose="batch")
    assert not_jsonl.value.param == "file"
    with pytest.raises(openai.BadRequestError):
        api.files.create(file=("x.bin", io.BytesIO(b"\xff\xfe\x00\x01")), purpose="batch")
    big = json.dumps(chat_line(1)) * 20
    with pytest.raises(openai.APIStatusError) as too_large:
        api.files.create(file=("big.jsonl", io.BytesIO(big.encode())), purpose="batch")
    assert too_large.value.status_code == 413
    assert "CORRAL_MAX_UPLOAD" in too_large.value.message
    with pytest.raises(openai.BadRequestError) as purpose:
        api.files.create(file=("a.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    assert purpose.value.param == "purpose"
    assert api.files.list().data == []


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"endpoint": "/v1/embeddings"}, "endpoint"),
    ({"completion_window": "1h"}, "completion_window"),
])
def test_bad_batch_requests_name_the_param(api, kwargs, param):
    file_id = upload(api, [chat_line(1)]).id
    args = {"input_file_id": file_id, "endpoint": "/v1/chat/completions",
            "completion_window": "24h", **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        api.batches.create(**args)
    assert caught.value.param == param
    with pytest.raises(openai.NotFoundError):
        api.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions",
                           completion_window="24h")
    assert api.batches.list().data == []



def test_batch_lines_answer_with_logprobs_as_a_live_request_does(api, worker):
    line = chat_line(7, logprobs=True, top_logprobs=2)
    batch = poll(api, api.batches.create(input_file_id=upload(api, [line]).id,
                                         endpoint="/v1/chat/completions",
                                         completion_window="24h").id)
    [item] = jsonl(api.files.content(batch.output_file_id))
    choice = item["response"]["body"]["choices"][0]
    entries = choice["logprobs"]["content"]
    assert "".join(e["token"] for e in entries) == choice["message"]["content"]
    assert all(len(e["top_logprobs"]) == 2 for e in entries)
    live = api.chat.completions.create(**line["body"])
    assert [e.token for e in live.choices[0].logprobs.content] == [e["token"] for e in entries]
