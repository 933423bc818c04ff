"""/v1/responses beyond text: function tools and their round trip, reasoning items, logprobs,
and reading a response again (GET, input_items, DELETE, store: false), through the official
`openai` client against a real worker running SmolLM2 with Hermes-style tool and Qwen3-style
thinking TEMPLATEs (tests.test_tools, tests.test_thinking)."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from service.models.store import ModelStore
from tests.test_thinking import PREFILL_TEMPLATE, THINKER
from tests.test_tools import HERMES, TIME, TOOLS_MODEL, WEATHER, assert_valid

PLAIN = "smollm2:135m"
ASK = "What is the weather in Paris? Use the tool."
# The Responses API's tools are flat: no "function" wrapper.
FLAT_WEATHER = {"type": "function", **WEATHER["function"]}
FLAT_TIME = {"type": "function", **TIME["function"]}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> Path:
    store = ModelStore(tmp_path_factory.mktemp("models"))
    weights = store.import_file(model_file)
    store.create(PLAIN, weights)
    store.create(TOOLS_MODEL, weights, template=HERMES, parameters={"stop": ["<|im_end|>"]})
    store.create(THINKER, weights, template=PREFILL_TEMPLATE, parameters={"stop": ["<|im_end|>"]})
    return store.root


def job_of(app, response_id: str):
    return app.extensions["corral"].jobs.get(response_id.removeprefix("resp_"))


def required_call(api, **extra):
    return api.responses.create(model=TOOLS_MODEL, input=ASK, tools=[FLAT_WEATHER, FLAT_TIME],
                                tool_choice="required", temperature=0, max_output_tokens=96,
                                **extra)


def test_a_required_call_is_a_function_call_item_valid_against_its_schema(app, api, worker):
    response = required_call(api)
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1 and response.status == "completed"
    [call] = calls
    schema = {t["name"]: t["parameters"] for t in (FLAT_WEATHER, FLAT_TIME)}
    assert_valid(json.loads(call.arguments), schema[call.name])
    assert call.call_id.startswith(f"call_{response.id.removeprefix('resp_')}_")
    assert [t.name for t in response.tools] == ["get_weather", "get_time"]
    assert response.tool_choice == "required"
    job = job_of(app, response.id)
    assert job.request["tools"][0]["function"]["name"] == "get_weather"  # the job's shape
    assert job.reply["tool_calls"][0]["id"] == call.call_id


def test_a_tool_round_trip_with_items_and_with_previous_response_id(app, api, worker):
    first = required_call(api)
    [call] = [item for item in first.output if item.type == "function_call"]
    result = {"type": "function_call_output", "call_id": call.call_id,
              "output": "18 degrees and sunny"}
    # A client that keeps the conversation itself sends the call back with its result ...
    by_items = api.responses.create(model=TOOLS_MODEL, tools=[FLAT_WEATHER], temperature=0,
                                    max_output_tokens=24,
                                    input=[{"role": "user", "content": ASK}, *first.output,
                                           result])
    # ... and one that lets the server keep it names the earlier response.
    by_id = api.responses.create(model=TOOLS_MODEL, tools=[FLAT_WEATHER], temperature=0,
                                 max_output_tokens=24, previous_response_id=first.id,
                                 input=[result])
    for answer in (by_items, by_id):
        assert answer.output_text.strip(), answer.output
        messages = job_of(app, answer.id).request["messages"]
        assert messages[-2]["role"] == "assistant"
        assert messages[-2]["tool_calls"][0]["function"]["name"] == call.name
        assert messages[-2]["tool_calls"][0]["function"]["arguments"] == json.loads(
            call.arguments)
        assert messages[-1] == {"role": "tool", "content": "18 degrees and sunny",
                                "tool_call_id": call.call_id, "tool_name": call.name}
    assert job_of(app, by_items.id).request["messages"] == \
        job_of(app, by_id.id).request["messages"]


def test_a_streamed_call_comes_as_argument_events_the_client_reassembles(api, worker):
    with api.responses.stream(model=TOOLS_MODEL, input=ASK, tools=[FLAT_WEATHER, FLAT_TIME],
                              tool_choice={"type": "function", "name": "get_weather"},
                              temperature=0, max_output_tokens=96) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    [call] = [item for item in final.output if item.type == "function_call"]
    assert deltas == done.arguments == call.arguments and call.name == "get_weather"
    assert_valid(json.loads(call.arguments), FLAT_WEATHER["parameters"])
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(events)))


def test_reasoning_is_an_item_before_the_message_whole_and_streamed(app, api, worker):
    whole = api.responses.create(model=THINKER, input="What is two plus two?", temperature=0,
                                 max_output_tokens=48)
    kinds = [item.type for item in whole.output]
    assert kinds[0] == "reasoning" and whole.output[0].content[0].text.strip()
    assert "<think>" not in whole.output_text and "</think>" not in whole.output[0].content[0].text
    assert job_of(app, whole.id).reply["thinking"] == whole.output[0].content[0].text

    with api.responses.stream(model=THINKER, input="What is two plus two?", temperature=0,
                              max_output_tokens=48) as stream:
        events = list(stream)
        final = stream.get_final_response()
    reasoning = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")
    assert reasoning == final.output[0].content[0].text == whole.output[0].content[0].text
    first_text = next((i for i, e in enumerate(events)
                       if e.type == "response.output_text.delta"), len(events))
    last_reasoning = max(i for i, e in enumerate(events)
                         if e.type == "response.reasoning_text.delta")
    assert last_reasoning < first_text  # the reasoning comes first

    off = api.responses.create(model=THINKER, input="What is two plus two?", temperature=0,
                               max_output_tokens=16, reasoning={"effort": "none"})
    assert [item.type for item in off.output] == ["message"]


def test_logprobs_come_with_the_text_when_included(api, worker):
    response = api.responses.create(model=PLAIN, input="Say hi.", temperature=0,
                                    max_output_tokens=6, top_logprobs=2,
                                    include=["message.output_text.logprobs"])
    part = response.output[0].content[0]
    assert part.logprobs and "".join(lp.token for lp in part.logprobs) == part.text
    assert all(len(lp.top_logprobs) == 2 and lp.logprob <= 0 for lp in part.logprobs)


def test_a_response_is_read_again_listed_and_deleted(app, api, worker):
    created = api.responses.create(model=PLAIN, input=[{"role": "user", "content": "Hi."}],
                                   instructions="Be brief.", temperature=0,
                                   max_output_tokens=6, metadata={"k": "v"})
    again = api.responses.retrieve(created.id)
    assert again.output_text == created.output_text and again.status == created.status
    assert (again.usage.input_tokens, again.usage.output_tokens) == (
        created.usage.input_tokens, created.usage.output_tokens)
    assert again.metadata == {"k": "v"} and again.instructions == "Be brief."
    items = api.responses.input_items.list(created.id)
    assert [(i.role, i.content[0].text) for i in items.data] == [("user", "Hi.")]
    follow = api.responses.create(model=PLAIN, input="And again.", temperature=0,
                                  max_output_tokens=6, previous_response_id=created.id)
    listed = api.responses.input_items.list(follow.id, order="asc")
    assert [i.content[0].text for i in listed.data] == ["And again."]  # not the earlier turn

    deleted = json.loads(api.responses.with_raw_response.delete(created.id).text)
    assert deleted == {"id": created.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(created.id)
    job = job_of(app, created.id)
    assert job.output is None and "messages" not in job.request
    assert job.eval_count == created.usage.output_tokens  # the history keeps the counts


def test_store_false_is_not_found_later(api, worker):
    unstored = api.responses.create(model=PLAIN, input="Hi.", temperature=0,
                                    max_output_tokens=4, store=False)
    assert unstored.output_text.strip() and unstored.store is False
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError) as caught:
        api.responses.create(model=PLAIN, input="x", previous_response_id=unstored.id)
    assert caught.value.param == "previous_response_id"


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "function"}]}, "tools[0].name"),
    ({"tools": [{"type": "function", "name": "f", "parameters": []}]}, "tools[0].parameters"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [FLAT_TIME], "tool_choice": {"type": "function", "name": "nope"}},
     "tool_choice.name"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}]},
     "input[0].arguments"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"include": ["everything"]}, "include[0]"),
    ({"top_logprobs": 30}, "top_logprobs"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
])
def test_bad_tool_and_item_fields_are_400s_naming_the_field(app, client, body, param):
    res = client.post("/v1/responses", json={"model": PLAIN, "input": "hi", **body})
    assert res.status_code == 400, res.get_json()
    error = res.get_json()["error"]
    assert error["param"] == param, error
    assert f"'{param}'" in error["message"]
    assert app.extensions["corral"].jobs.recent() == []


def test_unknown_response_ids_are_404s_on_every_route(client):
    for method, path in (("get", "/v1/responses/resp_nope"),
                         ("delete", "/v1/responses/resp_nope"),
                         ("get", "/v1/responses/chatcmpl-1/input_items")):
        res = getattr(client, method)(path)
        assert res.status_code == 404 and "not found" in res.get_json()["error"]["message"]
