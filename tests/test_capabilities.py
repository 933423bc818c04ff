"""What a model can do (service.models.capabilities), decided as Ollama's Model.Capabilities
does, and shown in /api/show and /api/tags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.models.capabilities import capabilities
from service.models.store import MEDIA, ModelStore
from service.models.template import Template
from tests.test_api_models import mapp, mclient, writable  # noqa: F401 (fixtures)
from tests.test_gguf import STRING, U32, write_gguf

LLAMA = {"general.architecture": "llama"}
TOOLS_TEMPLATE = ("{{ if .Tools }}Tools: {{ json .Tools }}\n{{ end }}"
                  "{{ range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}assistant: ")
# qwen3's template, cut to what decides: the message's .Thinking between <think> tags
THINKING_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>
{{ else }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}{{ end }}<|im_start|>assistant
{{ if and $.IsThinkSet (not $.Think) }}<think>

</think>

{{ end }}"""


@pytest.mark.parametrize(("meta", "template", "expected"), [
    (LLAMA, None, ["completion"]),
    ({**LLAMA, "llama.pooling_type": 1}, None, ["embedding"]),
    ({**LLAMA, "llama.vision.block_count": 8}, None, ["completion", "vision"]),
    (LLAMA, TOOLS_TEMPLATE, ["completion", "tools"]),
    (LLAMA, "{{ .Prompt }}", ["completion"]),
    (LLAMA, "<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>", ["completion", "insert"]),
    (LLAMA, THINKING_TEMPLATE, ["completion", "thinking"]),
    (LLAMA, "{{ .Thinking }}{{ .Prompt }}", ["completion"]),  # not a message's, no tags
    ({**LLAMA, "tokenizer.chat_template": "{% if tools %}{{ tools }}{% endif %}"}, None,
     ["tools", "completion"]),
    ({**LLAMA, "tokenizer.chat_template": "<think>{{ r }}</think>"}, None,
     ["thinking", "completion"]),
    ({**LLAMA, "tokenizer.chat_template": "{{ m.content.split('</think>')[-1] }}"}, None,
     ["thinking", "completion"]),
    ({**LLAMA, "tokenizer.chat_template": "{% if tools %}{% endif %}"}, "{{ .Prompt }}",
     ["completion"]),  # a TEMPLATE wins over the GGUF's chat template, as when rendering
    ({**LLAMA, "tokenizer.ggml.fim_pre_token_id": 1, "tokenizer.ggml.fim_suf_token_id": 2,
      "tokenizer.ggml.fim_mid_token_id": 3}, None, ["completion", "insert"]),
    ({**LLAMA, "tokenizer.ggml.prefix_token_id": 1, "tokenizer.ggml.suffix_token_id": 2,
      "tokenizer.ggml.middle_token_id": 3}, None, ["completion", "insert"]),
    ({**LLAMA, "tokenizer.ggml.fim_pre_token_id": 1}, None, ["completion"]),
])
def test_capabilities_follow_ollamas_rules(meta: dict[str, Any], template: str | None,
                                           expected: list[str]) -> None:
    assert capabilities(meta, template, projector=False) == expected


def test_a_projector_layer_means_vision(tmp_path: Path, model_file: Path) -> None:
    store = ModelStore(tmp_path / "models")
    model = store.create("seeing", store.import_file(model_file))
    mmproj = write_gguf(tmp_path / "mmproj.gguf", [("general.architecture", STRING, "clip")], [])
    projector = store.import_file(mmproj, MEDIA["projector"])
    manifest = json.loads(model.name.manifest_path(store.root).read_bytes())
    manifest["layers"].append(projector.to_json())
    store.write_manifest_bytes(model.name, json.dumps(manifest).encode())
    assert store.resolve("seeing").capabilities() == ["completion", "vision"]


def test_smollm2_only_completes(mclient) -> None:  # noqa: F811
    show = mclient.post("/api/show", json={"model": "smollm2:135m"}).get_json()
    assert show["capabilities"] == ["completion"]
    tags = mclient.get("/api/tags").get_json()["models"]
    assert [m["capabilities"] for m in tags] == [["completion"]]


def test_a_template_using_tools_shows_the_tools_capability(mclient) -> None:  # noqa: F811
    res = mclient.post("/api/create", json={"model": "tooly", "from": "smollm2:135m",
                                            "template": TOOLS_TEMPLATE, "stream": False})
    assert res.status_code == 200, res.get_json()
    show = mclient.post("/api/show", json={"model": "tooly"}).get_json()
    assert show["capabilities"] == ["completion", "tools"]
    tags = {m["name"]: m for m in mclient.get("/api/tags").get_json()["models"]}
    assert tags["tooly:latest"]["capabilities"] == ["completion", "tools"]


def test_an_embedding_model_shows_only_embedding(mclient, tmp_path: Path) -> None:  # noqa: F811
    weights = write_gguf(tmp_path / "embed.gguf", [
        ("general.architecture", STRING, "bert"), ("bert.pooling_type", U32, 1),
        ("bert.context_length", U32, 512)], [("token_embd.weight", [8, 4])])
    res = mclient.post("/api/create", json={"model": "embedder", "from": str(weights),
                                            "stream": False})
    assert res.status_code == 200, res.get_json()
    show = mclient.post("/api/show", json={"model": "embedder"}).get_json()
    assert show["capabilities"] == ["embedding"]


_THINKING_IN = """
{{ if .Thinking}}/think{{ end }}
{{- range $i, $_ := .Messages }}
  {{- $last := eq (len (slice $.Messages $i)) 1 -}}
  {{ if and $last .Thinking }}
    %s
  {{ end }}
{{ end }}
"""


@pytest.mark.parametrize(("text", "tags"), [
    (_THINKING_IN % "<think>{{ .Thinking }}</think>", ("<think>", "</think>")),
    (_THINKING_IN % "Some text before   {{ .Thinking }}    Some text after",
     ("Some text before", "Some text after")),
    (_THINKING_IN.replace("{{- range $i, $_ := .Messages }}",
                          "{{- range $i, $_ := .Messages }}{{ range .NotMessages }}")
     .replace("{{ end }}\n{{ end }}", "{{ end }}{{ end }}\n{{ end }}")
     % "<think>{{ .Thinking }}</think>", ("", "")),  # the nearest range is not .Messages
    (THINKING_TEMPLATE, ("<think>", "</think>")),
])
def test_thinking_tags_are_inferred_as_ollama_does(text: str, tags: tuple[str, str]) -> None:
    assert Template(text).thinking_tags == tags
