"""`format` on the Ollama face: "json" or a JSON schema constrains the output, end to end."""

from __future__ import annotations

import json

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 96}


def generate(client, **body) -> dict:
    res = client.post("/api/generate", json={"model": MODEL, "stream": False, **body})
    assert res.status_code == 200, res.get_json()
    return res.get_json()


def test_generate_with_format_json_answers_parsable_json(client, worker):
    body = generate(client, prompt="Describe a cat.", format="json", options=GREEDY)
    assert isinstance(json.loads(body["response"]), dict)
    assert body["done_reason"] == "stop"


def test_generate_with_a_schema_answers_its_keys_and_types(client, worker):
    schema = {"type": "object", "properties": {"city": {"type": "string"},
                                               "population": {"type": "integer"}},
              "required": ["city", "population"]}
    body = generate(client, prompt="Tell me about Paris.", format=schema, options=GREEDY)
    data = json.loads(body["response"])
    assert set(data) == {"city", "population"}
    assert isinstance(data["city"], str) and isinstance(data["population"], int)
    plain = generate(client, prompt="Tell me about Paris.", options={**GREEDY, "num_predict": 16})
    assert not plain["response"].lstrip().startswith("{")  # the constraint came from `format`
