"""Embeddings end to end: /api/embed, /api/embeddings and /v1/embeddings (through the official
`openai` client) → Redis → a real Celery worker → SmolLM2's embedding context → the vectors."""

from __future__ import annotations

import dataclasses

import numpy as np
import openai
import pytest

from tests.conftest import running_worker
from workers.model_pool import ModelPool

MODEL = "smollm2:135m"
CAT = "The cat sat on the mat."
KITTEN = "A kitten is sitting on a rug."
TAXES = "Quarterly tax filings are due in April."


def embed(client, inputs, **extra) -> dict:
    res = client.post("/api/embed", json={"model": MODEL, "input": inputs, **extra})
    assert res.status_code == 200, res.get_json()
    return res.get_json()


def vectors(body: dict) -> np.ndarray:
    return np.asarray(body["embeddings"], dtype=np.float64)


def test_embed_gives_unit_vectors_where_similar_sentences_are_closer(app, client, worker):
    body = embed(client, [CAT, KITTEN, TAXES])
    cat, kitten, taxes = vectors(body)
    assert vectors(body).shape == (3, 576)
    assert np.allclose(np.linalg.norm(vectors(body), axis=1), 1.0, atol=1e-5)
    assert cat @ kitten > cat @ taxes and cat @ kitten > kitten @ taxes
    assert body["model"] == MODEL and body["prompt_eval_count"] > 10
    assert body["total_duration"] >= body["load_duration"] > 0
    [job] = app.extensions["corral"].jobs.recent()
    assert (job.kind, job.status) == ("embed", "succeeded")
    assert job.prompt_eval_count == body["prompt_eval_count"]
    assert job.output == "3 embedding(s) of 576 dimensions"


def test_same_text_same_vector_and_a_batch_keeps_input_order(client, worker):
    forward = vectors(embed(client, [CAT, TAXES]))
    backward = vectors(embed(client, [TAXES, CAT]))
    alone = vectors(embed(client, CAT))
    assert np.allclose(forward, backward[::-1], atol=1e-6)
    assert np.allclose(alone[0], forward[0], atol=1e-6)
    assert not np.allclose(forward[0], forward[1], atol=1e-2)


def test_legacy_embeddings_matches_embed_and_empty_input_only_loads(client, worker):
    legacy = client.post("/api/embeddings", json={"model": MODEL, "prompt": KITTEN}).get_json()
    assert np.allclose(legacy["embedding"], vectors(embed(client, [KITTEN]))[0], atol=1e-6)
    assert abs(np.linalg.norm(legacy["embedding"]) - 1) < 1e-5
    empty = client.post("/api/embeddings", json={"model": MODEL, "prompt": ""}).get_json()
    assert empty == {"embedding": []}
    assert embed(client, [])["embeddings"] == []


def test_dimensions_keeps_a_renormalised_prefix(client, worker):
    full = vectors(embed(client, CAT))[0]
    short = vectors(embed(client, CAT, dimensions=8))[0]
    assert short.shape == (8,) and abs(np.linalg.norm(short) - 1) < 1e-5
    assert np.allclose(short, full[:8] / np.linalg.norm(full[:8]), atol=1e-6)


def test_keep_alive_zero_unloads_and_embed_has_its_own_pool_entry(client, worker):
    embed(client, CAT, keep_alive="10m")
    res = client.post("/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False,
                                             "keep_alive": "10m", "options": {"num_predict": 1}})
    assert res.status_code == 200
    assert sorted(m.key.endswith("#embed") for m in worker.pool.loaded()) == [False, True]
    embed(client, CAT, keep_alive=0)
    assert [m.key.endswith("#embed") for m in worker.pool.loaded()] == [False]


def test_truncate_false_refuses_an_input_longer_than_the_context(settings):
    from service.http.app import create_app

    settings = dataclasses.replace(settings, num_ctx=32)
    app = create_app({"TESTING": True}, settings=settings)
    long = "one two three four " * 20
    with running_worker(settings):
        client = app.test_client()
        refused = client.post("/api/embed", json={"model": MODEL, "input": [CAT, long],
                                                  "truncate": False})
        cut = embed(client, long)
    assert refused.status_code == 400
    assert "context length 32" in refused.get_json()["error"]
    assert cut["prompt_eval_count"] == 32
    assert app.extensions["corral"].jobs.recent()[-1].status == "failed"
    app.extensions["corral"].close()


@pytest.mark.parametrize(("body", "field"), [
    ({"input": CAT}, "model"),
    ({"model": MODEL, "input": [CAT, 3]}, "input[1]"),
    ({"model": MODEL, "input": [""]}, "input[0]"),
    ({"model": MODEL, "input": {"text": CAT}}, "input"),
    ({"model": MODEL, "input": CAT, "truncate": "no"}, "truncate"),
    ({"model": MODEL, "input": CAT, "dimensions": 0}, "dimensions"),
])
def test_bad_embed_fields_are_400_naming_the_field(app, client, body, field):
    res = client.post("/api/embed", json=body)
    assert res.status_code == 400 and f"'{field}'" in res.get_json()["error"]
    assert app.extensions["corral"].jobs.recent() == []


def test_unknown_model_is_404_on_both_faces(client):
    for path, body in (("/api/embed", {"input": CAT}), ("/api/embeddings", {"prompt": CAT}),
                       ("/v1/embeddings", {"input": CAT})):
        res = client.post(path, json={"model": "nope:latest", **body})
        assert res.status_code == 404, path
    assert res.get_json()["error"]["code"] == "model_not_found"


def test_openai_client_embeddings_match_ollamas_in_float_and_base64(app, client, api, worker):
    expected = vectors(embed(client, [CAT, KITTEN, TAXES]))
    # The openai client asks for base64 unless told otherwise, and decodes it itself.
    default = api.embeddings.create(model=MODEL, input=[CAT, KITTEN, TAXES])
    floats = api.embeddings.create(model=MODEL, input=[CAT, KITTEN, TAXES],
                                   encoding_format="float")
    for result in (default, floats):
        assert [d.index for d in result.data] == [0, 1, 2] and result.model == MODEL
        assert np.allclose([d.embedding for d in result.data], expected, atol=1e-6)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens
    assert floats.usage.prompt_tokens == app.extensions["corral"].jobs.recent()[0].prompt_eval_count
    single = api.embeddings.create(model=MODEL, input=CAT, encoding_format="float")
    assert np.allclose(single.data[0].embedding, expected[0], atol=1e-6)


def test_openai_embeddings_reject_empty_and_token_inputs(api):
    for bad, param in (("", "input"), ([[1, 2, 3]], "input"), ([], "input")):
        with pytest.raises(openai.BadRequestError) as caught:
            api.embeddings.create(model=MODEL, input=bad, encoding_format="float")
        assert caught.value.param == param
    with pytest.raises(openai.BadRequestError) as caught:
        api.embeddings.create(model=MODEL, input=CAT, extra_body={"encoding_format": "hex"})
    assert caught.value.param == "encoding_format"


class StandIn:
    size_bytes = 1

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.closed = False

    def active(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


def test_a_pool_entry_can_have_its_own_loader():
    pool = ModelPool(lambda spec: StandIn("engine"), max_loaded=2, default_keep_alive=60)
    engine, _ = pool.acquire("m", "spec")
    embedder, _ = pool.acquire("m#embed", "spec", loader=lambda spec: StandIn("embed"))
    assert (engine.kind, embedder.kind) == ("engine", "embed")
    pool.release("m#embed", 0)
    assert embedder.closed and not engine.closed
