"""`think` and `reasoning_effort`: accepted as Ollama accepts them, refused with Ollama's 400
for a model that cannot think, and handed to the template (.Think, .ThinkLevel, .IsThinkSet;
`enable_thinking` in Jinja)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import ollama
import openai
import pytest

from service.core.errors import InvalidRequest
from service.jobs.requests import ChatRequest, GenerateRequest, check_think
from service.models.store import ModelStore
from service.models.template import Template, render_chat
from tests.test_capabilities import THINKING_TEMPLATE
from workers.prompt import build_prompt, render_jinja

REFUSAL = '"smollm2:135m" does not support thinking'
HI = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("value", [True, False, "low", "medium", "high", "max", None])
def test_think_takes_a_boolean_or_a_level(value) -> None:
    body = {"model": "m", "think": value}
    assert ChatRequest.from_json(body).think == value
    assert GenerateRequest.from_json(body).think == value


@pytest.mark.parametrize("value", ["extreme", "", 1, [], {"level": "high"}])
def test_any_other_think_is_a_400_naming_the_field(value) -> None:
    with pytest.raises(InvalidRequest, match="invalid field 'think'"):
        ChatRequest.from_json({"model": "m", "think": value})


@pytest.mark.parametrize(("path", "body"), [
    ("/api/chat", {"messages": HI, "think": True}),
    ("/api/chat", {"messages": HI, "think": "high"}),
    ("/api/generate", {"prompt": "Hi", "think": True}),
    ("/api/generate", {"prompt": "Hi", "think": "low"}),
    ("/jobs", {"kind": "chat", "messages": HI, "think": "medium"}),
])
def test_thinking_asked_of_a_model_that_cannot_think_is_ollamas_400(client, path, body):
    res = client.post(path, json={"model": "smollm2:135m", **body})
    assert res.status_code == 400
    assert res.get_json()["error"] == REFUSAL


@pytest.mark.parametrize("body", [{"reasoning_effort": "high"},
                                  {"reasoning": {"effort": "minimal"}}])
def test_reasoning_effort_asked_of_a_model_that_cannot_think_is_a_400(client, body):
    res = client.post("/v1/chat/completions", json={"model": "smollm2:135m", "messages": HI,
                                                    **body})
    assert res.status_code == 400 and res.get_json()["error"]["message"] == REFUSAL


@pytest.mark.parametrize(("body", "param"), [
    ({"reasoning_effort": "enormous"}, "reasoning_effort"),
    ({"reasoning_effort": 3}, "reasoning_effort"),
    ({"reasoning": {"effort": ["high"]}}, "reasoning.effort"),
])
def test_a_bad_reasoning_effort_is_a_400_naming_it(client, body, param):
    res = client.post("/v1/chat/completions", json={"model": "smollm2:135m", "messages": HI,
                                                    **body})
    assert res.status_code == 400 and res.get_json()["error"]["param"] == param


def test_think_false_and_reasoning_effort_none_are_answered_by_any_model(client, worker):
    options = {"num_predict": 3, "temperature": 0}
    res = client.post("/api/chat", json={"model": "smollm2:135m", "messages": HI,
                                         "think": False, "stream": False, "options": options})
    assert res.status_code == 200, res.get_json()
    assert res.get_json()["message"]["content"]
    res = client.post("/v1/chat/completions", json={
        "model": "smollm2:135m", "messages": HI, "reasoning_effort": "none", "max_tokens": 3})
    assert res.status_code == 200, res.get_json()


def test_a_model_whose_template_thinks_may_be_asked_to(tmp_path: Path, model_file: Path):
    store = ModelStore(tmp_path / "models")
    model = store.create("thinker", store.import_file(model_file), template=THINKING_TEMPLATE)
    check_think("high", model)  # no refusal
    plain = store.create("plain", store.import_file(model_file))
    with pytest.raises(InvalidRequest, match='"plain:latest" does not support thinking'):
        check_think(True, plain)
    check_think(False, plain)


@pytest.mark.parametrize(("think", "shown"), [
    (None, "think=false level= set=false"),
    (False, "think=false level= set=true"),
    (True, "think=true level=medium set=true"),
    ("low", "think=true level=low set=true"),
])
def test_the_go_template_sees_think_as_ollama_sets_it(think, shown) -> None:
    text = ("{{ range .Messages }}{{ .Content }}{{ end }} think={{ .Think }} "
            "level={{ .ThinkLevel }} set={{ .IsThinkSet }}")
    assert render_chat(Template(text), HI, think=think) == f"Hi {shown}"


def test_a_qwen3_style_template_closes_an_empty_think_when_thinking_is_off() -> None:
    off = render_chat(Template(THINKING_TEMPLATE), HI, think=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert "<think>" not in render_chat(Template(THINKING_TEMPLATE), HI, think=True)


@pytest.mark.parametrize(("think", "expected"), [
    (None, "default"), (False, "off"), (True, "on"), ("high", "on high")])
def test_the_jinja_template_sees_enable_thinking(think, expected) -> None:
    source = ("{% if enable_thinking is not defined %}default{% elif enable_thinking %}on"
              "{% else %}off{% endif %}{% if reasoning_effort %} {{ reasoning_effort }}"
              "{% endif %}")
    assert render_jinja(source, HI, "", "", think=think) == expected


def test_the_worker_refuses_thinking_too_for_a_batch_line(tmp_path: Path, model_file: Path):
    store = ModelStore(tmp_path / "models")
    plain = store.create("plain", store.import_file(model_file))
    engine = SimpleNamespace(chat_template=None)
    with pytest.raises(InvalidRequest, match="does not support thinking"):
        build_prompt(plain, {"messages": HI, "think": "high"}, "chat", engine)
    thinker = store.create("thinker", store.import_file(model_file), template=THINKING_TEMPLATE)
    prompt = build_prompt(thinker, {"messages": HI, "think": False}, "chat", engine)
    assert prompt.endswith("<think>\n\n</think>\n\n")


def test_the_official_clients_see_capabilities_and_the_refusal(app, api):
    host = str(api.base_url).removesuffix("/v1/")
    client = ollama.Client(host=host)
    assert client.show("smollm2:135m").capabilities == ["completion"]
    assert [m.model for m in client.list().models] == ["smollm2:135m"]
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="smollm2:135m", messages=HI, think=True)
    assert caught.value.status_code == 400 and caught.value.error == REFUSAL
    with pytest.raises(openai.BadRequestError, match="does not support thinking"):
        api.chat.completions.create(model="smollm2:135m", messages=HI, reasoning_effort="low")
