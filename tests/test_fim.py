"""Fill-in-the-middle: `suffix` on /api/generate and /v1/completions, placed by a TEMPLATE
that uses .Suffix (Ollama's rule for the insert capability) or, for a model without one, by
the vocabulary's FIM tokens as llama-server's /infill lays them out; refused with Ollama's 400
for a model that can do neither.

Neither SmolLM2 nor Gemma 3 270M has FIM tokens, so the real-model tests give SmolLM2 a
TEMPLATE in the <PRE>/<SUF>/<MID> style of Ollama's code models."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from service.core.errors import InvalidRequest
from service.models.store import ModelStore
from workers.prompt import build_prompt, infill_prompt

FILLER = "smollm2-fim:135m"
FIM_TEMPLATE = "<|im_start|>user\nFill the gap.\n{{ .Prompt }}<GAP>{{ .Suffix }}<|im_end|>\n" \
               "<|im_start|>assistant\n"
OPTIONS = {"num_predict": 8, "temperature": 0}
REFUSAL = '"smollm2:135m" does not support insert'


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, model_file: Path) -> Path:
    store = ModelStore(tmp_path_factory.mktemp("models"))
    weights = store.import_file(model_file)
    store.create("smollm2:135m", weights)
    store.create(FILLER, weights, template=FIM_TEMPLATE, parameters={"stop": ["<|im_end|>"]})
    return store.root


def test_the_template_places_prompt_and_suffix(models_dir: Path):
    model = ModelStore(models_dir).resolve(FILLER)
    engine = SimpleNamespace(chat_template=None, fim_tokens=None)
    prompt = build_prompt(model, {"prompt": "def add(a, b):\n", "suffix": "\n    return c"},
                          "generate", engine)
    assert "def add(a, b):\n<GAP>\n    return c<|im_end|>" in prompt


def test_fim_tokens_place_the_suffix_when_the_template_does_not():
    engine = SimpleNamespace(fim_tokens=("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
    assert infill_prompt("def f():", "return x", engine) == \
        "<fim_prefix>def f():<fim_suffix>return x<fim_middle>"
    with pytest.raises(InvalidRequest, match="cannot be placed"):
        infill_prompt("def f():", "return x", SimpleNamespace(fim_tokens=None))


def test_the_model_shows_insert(local):
    assert "insert" in local.show(FILLER).capabilities
    assert "insert" not in local.show("smollm2:135m").capabilities


def test_the_ollama_client_fills_the_middle(worker, local):
    prompt = "def add(a, b):\n    c = "
    reply = local.generate(model=FILLER, prompt=prompt, suffix="\n    return c", options=OPTIONS)
    assert reply.done and reply.eval_count > 0
    alone = local.generate(model=FILLER, prompt=prompt, options=OPTIONS)
    assert reply.prompt_eval_count > alone.prompt_eval_count  # the suffix reached the prompt


def test_the_openai_client_sends_suffix_to_completions(worker, api):
    reply = api.completions.create(model=FILLER, prompt="def add(a, b):\n    c = ",
                                   suffix="\n    return c", max_tokens=8, temperature=0)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens > 0


@pytest.mark.parametrize(("path", "body"), [
    ("/api/generate", {"prompt": "a", "suffix": "b"}),
    ("/jobs", {"kind": "generate", "prompt": "a", "suffix": "b"}),
])
def test_suffix_for_a_model_that_cannot_insert_is_ollamas_400(client, path, body):
    res = client.post(path, json={"model": "smollm2:135m", **body})
    assert res.status_code == 400 and res.get_json()["error"] == REFUSAL


def test_a_suffix_that_is_not_text_is_a_400_naming_it(client):
    res = client.post("/api/generate", json={"model": FILLER, "prompt": "a", "suffix": 3})
    assert res.status_code == 400 and "'suffix'" in res.get_json()["error"]
    res = client.post("/v1/completions", json={"model": FILLER, "prompt": "a", "suffix": [1]})
    assert res.status_code == 400 and res.get_json()["error"]["param"] == "suffix"
