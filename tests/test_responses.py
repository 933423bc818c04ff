"""POST /v1/responses end to end, through the official `openai` client over real HTTP:
client → werkzeug server → Flask → Redis → a real Celery worker → SmolLM2 → SSE events."""

from __future__ import annotations

import json

import openai
import pytest

from tests.waiting import wait_until

MODEL = "smollm2:135m"
CAPITAL = "What is the capital of France?"


def job_of(app, response_id: str):
    """The job row behind a response id ("resp_<job id>")."""
    return app.extensions["corral"].jobs.get(response_id.removeprefix("resp_"))


def all_jobs(app):
    return app.extensions["corral"].jobs.recent()


def test_a_string_input_answers_with_usage_that_matches_the_job_row(app, api, worker):
    response = api.responses.create(model=MODEL, input=CAPITAL, temperature=0,
                                    max_output_tokens=12)
    assert response.object == "response" and response.model == MODEL
    assert response.status in ("completed", "incomplete")
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    assert response.output_text.strip() and response.output_text == message.content[0].text
    job = job_of(app, response.id)
    assert job.kind == "chat" and job.status == "succeeded"
    assert job.output == response.output_text
    assert job.request["messages"] == [{"role": "user", "content": CAPITAL}]
    assert response.usage.input_tokens == job.prompt_eval_count > 0
    assert response.usage.output_tokens == job.eval_count > 0
    assert response.usage.total_tokens == job.prompt_eval_count + job.eval_count
    assert (response.temperature, response.top_p, response.tools) == (0, 1.0, [])


def test_message_items_and_instructions_become_the_chat_messages(app, api, worker):
    items = [{"role": "developer", "content": "Answer in one word."},
             {"type": "message", "role": "user",
              "content": [{"type": "input_text", "text": CAPITAL}]}]
    response = api.responses.create(model=MODEL, input=items, instructions="Be brief.",
                                    temperature=0, max_output_tokens=8,
                                    metadata={"from": "test"}, store=True, user="alice")
    assert response.output_text.strip()
    assert response.instructions == "Be brief." and response.metadata == {"from": "test"}
    request = job_of(app, response.id).request
    assert request["messages"] == [{"role": "system", "content": "Be brief."},
                                   {"role": "system", "content": "Answer in one word."},
                                   {"role": "user", "content": CAPITAL}]
    assert request["options"]["num_predict"] == 8


def test_a_stream_reassembles_to_the_stored_output_and_ends_completed(app, api, worker):
    stream = api.responses.create(model=MODEL, input=CAPITAL, temperature=0,
                                  max_output_tokens=12, stream=True)
    events = list(stream)
    kinds = [e.type for e in events]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[4:-4] == ["response.output_text.delta"] * len(deltas) and deltas
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done",
                            "response.output_item.done"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    last = events[-1].response
    job = job_of(app, last.id)
    assert "".join(deltas) == job.output == last.output_text == events[-4].text
    assert last.usage.output_tokens == job.eval_count


def test_the_stream_helper_gives_the_final_response(app, api, worker):
    # Only a completed response is final to the helper (an incomplete one raises), so the
    # answer is short and the cap high.
    with api.responses.stream(model=MODEL, input=CAPITAL, instructions="Answer in one word.",
                              temperature=0, max_output_tokens=64) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == text == job_of(app, final.id).output


def test_max_output_tokens_makes_the_response_incomplete(api, worker):
    ask = "Write a long story about a dragon."
    response = api.responses.create(model=MODEL, input=ask, temperature=0, max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3
    events = list(api.responses.create(model=MODEL, input=ask, temperature=0,
                                       max_output_tokens=3, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_a_json_schema_format_returns_json_that_fits_it(app, api, worker):
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    response = api.responses.create(
        model=MODEL, input=CAPITAL, temperature=0, max_output_tokens=40,
        text={"format": {"type": "json_schema", "name": "city", "schema": schema,
                         "strict": True}})
    assert isinstance(json.loads(response.output_text)["city"], str)
    assert job_of(app, response.id).request["format"] == schema
    assert response.text.format.type == "json_schema"


def test_previous_response_id_continues_the_conversation(app, api, worker):
    first = api.responses.create(model=MODEL, input="My name is Ada.", instructions="Be kind.",
                                 temperature=0, max_output_tokens=8)
    second = api.responses.create(model=MODEL, input="What is my name?",
                                  previous_response_id=first.id, temperature=0,
                                  max_output_tokens=8)
    assert second.previous_response_id == first.id
    messages = job_of(app, second.id).request["messages"]
    assert messages == [{"role": "user", "content": "My name is Ada."},
                        {"role": "assistant", "content": first.output_text},
                        {"role": "user", "content": "What is my name?"}]


def test_an_earlier_output_sent_back_as_input_is_the_assistants_turn(app, api, worker):
    # Clients that keep the conversation themselves send `response.output` back as input.
    first = api.responses.create(model=MODEL, input="Name a colour.", temperature=0,
                                 max_output_tokens=6)
    again = [{"role": "user", "content": "Name a colour."}, *first.output,
             {"role": "user", "content": "Another one."}]
    second = api.responses.create(model=MODEL, input=again, temperature=0, max_output_tokens=6)
    assert job_of(app, second.id).request["messages"][1] == {
        "role": "assistant", "content": first.output_text}


def test_a_client_hanging_up_mid_stream_cancels_the_job(app, api, worker):
    stream = api.responses.create(model=MODEL, input="Write a long story.",
                                  max_output_tokens=2000, stream=True)
    events = iter(stream)
    first = next(events)
    next(e for e in events if e.type == "response.output_text.delta")
    stream.close()
    job = wait_until(lambda: job_of(app, first.response.id), 30,
                     ready=lambda job: job.status != "running",
                     message="the job to stop after the client hung up")
    assert job.status == "cancelled" and 0 < job.eval_count < 2000


def test_an_unknown_previous_response_id_is_not_found(app, api):
    for unknown in ("resp_nope", "chatcmpl-123"):
        with pytest.raises(openai.NotFoundError) as caught:
            api.responses.create(model=MODEL, input="hi", previous_response_id=unknown)
        assert caught.value.param == "previous_response_id"
    assert all_jobs(app) == []


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "hi"}, "model"),
    ({"model": MODEL}, "input"),
    ({"model": MODEL, "input": 42}, "input"),
    ({"model": MODEL, "input": []}, "input"),
    ({"model": MODEL, "input": [{"role": "wizard", "content": "hi"}]}, "input[0].role"),
    ({"model": MODEL, "input": [{"role": {"a": 1}, "content": "hi"}]}, "input[0].role"),
    ({"model": MODEL, "input": [{"type": "computer_call", "action": {}}]}, "input[0].type"),
    ({"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
     "input[0].content"),
    ({"model": MODEL, "input": "hi", "temperature": 3}, "temperature"),
    ({"model": MODEL, "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": MODEL, "input": "hi", "text": {"format": {"type": "xml"}}}, "text.format"),
    ({"model": MODEL, "input": "hi", "tools": [{"type": "file_search"}]}, "tools[0].type"),
    ({"model": MODEL, "input": "hi", "tool_choice": "required"}, "tool_choice"),
    ({"model": MODEL, "input": "hi", "background": True}, "background"),
    ({"model": MODEL, "input": "hi", "frobnicate": 1}, "frobnicate"),
])
def test_bad_requests_are_400s_naming_the_field(app, client, body, param):
    res = client.post("/v1/responses", json=body)
    assert res.status_code == 400, res.get_json()
    error = res.get_json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param.split("[")[0].split(".")[0] in error["message"]
    assert all_jobs(app) == []
