"""The OpenAI face end to end, through the official `openai` client over real HTTP:
client → werkzeug server → Flask → Redis → a real Celery worker → SmolLM2 → pub/sub → SSE."""

from __future__ import annotations

import dataclasses

import openai
import pytest

from tests.conftest import running_worker
from tests.waiting import wait_until

MODEL = "smollm2:135m"
CAPITAL = [{"role": "system", "content": "You answer in one word."},
           {"role": "user", "content": "What is the capital of France?"}]


def job_of(app, response_id: str):
    """The job row behind an OpenAI response id ("chatcmpl-<job id>")."""
    return app.extensions["corral"].jobs.get(response_id.split("-", 1)[1])


def all_jobs(app):
    return app.extensions["corral"].jobs.recent()


def test_models_list_and_retrieve_come_from_the_store(api):
    [model] = api.models.list().data
    assert (model.id, model.object, model.owned_by) == (MODEL, "model", "library")
    assert model.created > 1_600_000_000
    assert api.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as missing:
        api.models.retrieve("nope:latest")
    assert missing.value.code == "model_not_found"


def test_unknown_model_is_a_not_found_error_naming_the_model(app, api):
    with pytest.raises(openai.NotFoundError) as caught:
        api.chat.completions.create(model="missing:latest", messages=CAPITAL)
    error = caught.value
    assert error.status_code == 404 and error.param == "model"
    assert error.code == "model_not_found" and error.type == "invalid_request_error"
    assert "missing:latest" in error.message
    assert all_jobs(app) == []


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"temperature": 5}, "temperature"),
    ({"top_p": -0.5}, "top_p"),
    ({"n": 2}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": "lots"}, "max_completion_tokens"),
    ({"stop": [1, 2]}, "stop"),
    ({"seed": 1.5}, "seed"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "messages[0].content[0]"),
])
def test_bad_chat_fields_are_bad_request_errors_naming_the_param(app, api, kwargs, param):
    body = {"model": MODEL, "messages": CAPITAL, **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(**body)
    assert caught.value.status_code == 400
    assert caught.value.param == param and caught.value.type == "invalid_request_error"
    assert param.split("[")[0] in caught.value.message
    assert all_jobs(app) == []


def test_bad_completion_prompt_and_malformed_json_keep_openais_error_shape(api, client):
    with pytest.raises(openai.BadRequestError) as caught:
        api.completions.create(model=MODEL, prompt=[1, 2, 3])
    assert caught.value.param == "prompt"
    res = client.post("/v1/chat/completions", data="{oops", content_type="application/json")
    assert res.status_code == 400
    error = res.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "invalid JSON" in error["message"] and error["param"] is None


def test_chat_whole_answer_with_usage_that_matches_the_job_row(app, api, worker):
    reply = api.chat.completions.create(model=MODEL, messages=CAPITAL, temperature=0,
                                        max_tokens=12)
    [choice] = reply.choices
    assert reply.object == "chat.completion" and reply.model == MODEL
    assert choice.message.role == "assistant" and "paris" in choice.message.content.lower()
    assert choice.finish_reason in ("stop", "length")
    job = job_of(app, reply.id)
    assert job.kind == "chat" and job.status == "succeeded"
    assert job.output == choice.message.content
    assert reply.usage.prompt_tokens == job.prompt_eval_count > 0
    assert reply.usage.completion_tokens == job.eval_count > 0
    assert reply.usage.total_tokens == job.prompt_eval_count + job.eval_count
    assert job.request["options"]["temperature"] == 0
    assert job.request["options"]["num_predict"] == 12


def test_chat_streams_chunks_that_join_to_the_job_output_then_usage(app, api, client, worker):
    stream = api.chat.completions.create(model=MODEL, messages=CAPITAL, temperature=0,
                                         max_tokens=12, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    *content, last, usage = chunks
    assert len(content) >= 1 and len({c.id for c in chunks}) == 1
    assert content[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.usage is None for c in content + [last])
    assert all(c.choices[0].finish_reason is None for c in content)
    assert last.choices[0].finish_reason in ("stop", "length")
    assert usage.choices == []
    job = job_of(app, last.id)
    assert "".join(c.choices[0].delta.content for c in content) == job.output
    assert "paris" in job.output.lower()
    assert (usage.usage.prompt_tokens, usage.usage.completion_tokens) == (
        job.prompt_eval_count, job.eval_count)
    raw = client.post("/v1/chat/completions", json={
        "model": MODEL, "messages": CAPITAL, "temperature": 0, "max_tokens": 2, "stream": True})
    assert raw.mimetype == "text/event-stream"
    body = raw.get_data(as_text=True)
    assert body.startswith("data: {") and body.endswith("\n\ndata: [DONE]\n\n")
    assert '"usage"' not in body  # only with stream_options.include_usage


def test_client_hanging_up_mid_stream_cancels_the_completion(app, api, worker):
    stream = api.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a long story."}],
        max_tokens=2000, stream=True)
    first = next(iter(stream))
    stream.close()  # the official client's way to hang up
    job = wait_until(lambda: job_of(app, first.id), 30,
                     ready=lambda job: job.status != "running",
                     message="the job to stop after the client hung up")
    assert job.status == "cancelled" and job.done_reason == "cancel"
    assert 0 < job.eval_count < 2000


def test_completions_whole_and_streamed_agree(app, api, worker):
    prompt = "List three colours."
    whole = api.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=10)
    [choice] = whole.choices
    assert whole.object == "text_completion" and choice.text.strip()
    job = job_of(app, whole.id)
    assert job.kind == "generate" and job.output == choice.text
    assert whole.usage.completion_tokens == job.eval_count
    streamed = list(api.completions.create(model=MODEL, prompt=prompt, temperature=0,
                                           max_tokens=10, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == choice.text
    assert streamed[-1].choices[0].finish_reason == choice.finish_reason


def test_max_tokens_ends_with_finish_reason_length(api, worker):
    ask = [{"role": "user", "content": "Write a long story about a dragon."}]
    reply = api.chat.completions.create(model=MODEL, messages=ask, temperature=0,
                                        max_completion_tokens=3)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3
    streamed = list(api.chat.completions.create(model=MODEL, messages=ask, temperature=0,
                                                max_tokens=3, stream=True))
    assert streamed[-1].choices[0].finish_reason == "length"


def test_stop_cuts_the_answer_before_the_stop_string(api, worker):
    prompt = "Count from one to ten in words."
    free = api.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=24)
    text = free.choices[0].text
    assert len(text.strip()) >= 8, text
    middle = len(text) // 2  # whatever the model wrote on this CPU, stop halfway through it
    stop = text[middle:middle + 3]
    expected = text[: text.index(stop)]
    assert expected.strip()
    for stops in (stop, [stop, "never-appears"]):
        cut = api.completions.create(model=MODEL, prompt=prompt, temperature=0,
                                     max_tokens=24, stop=stops)
        assert cut.choices[0].text == expected
        assert cut.choices[0].finish_reason == "stop"


def test_seed_makes_sampling_repeatable_above_temperature_zero(api, worker):
    def sample(seed: int) -> str:
        reply = api.chat.completions.create(
            model=MODEL, seed=seed, temperature=1.5, max_tokens=16,
            messages=[{"role": "user", "content": "Invent a name for a cat."}])
        return reply.choices[0].message.content

    first = sample(42)
    assert sample(42) == first
    assert sample(7) != first or sample(8) != first


def test_response_format_and_penalties_reach_the_job_request(app, api, worker):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    formats = [({"type": "json_object"}, "json"),
               ({"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}, schema)]
    for response_format, expected in formats:
        reply = api.chat.completions.create(
            model=MODEL, messages=CAPITAL, max_tokens=1, response_format=response_format,
            frequency_penalty=0.5, presence_penalty=-0.5, top_p=0.5)
        request = job_of(app, reply.id).request
        assert request["format"] == expected
        assert request["options"]["frequency_penalty"] == 0.5
        assert request["options"]["presence_penalty"] == -0.5
        assert request["options"]["top_p"] == 0.5
        assert request["options"]["temperature"] == 1.0  # OpenAI's default when unset


def test_a_prompt_longer_than_the_context_is_cut_to_fit(app, api, settings):
    # As Ollama's OpenAI layer: truncated from the front, keeping room for max_tokens.
    huge = [{"role": "user", "content": "word " * 600}]
    with running_worker(dataclasses.replace(settings, num_ctx=256)):
        whole = api.chat.completions.create(model=MODEL, messages=huge, max_tokens=2)
        chunks = list(api.chat.completions.create(model=MODEL, messages=huge, max_tokens=2,
                                                  stream=True))
    assert whole.usage.prompt_tokens == 256 - 2  # the worker's CORRAL_NUM_CTX, less max_tokens
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert {j.status for j in all_jobs(app)} == {"succeeded"}
