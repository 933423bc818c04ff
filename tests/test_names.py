"""Model names: Ollama's parsing rules and defaults, and refusal before any path is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core.errors import InvalidRequest
from service.models.names import ModelName, name_from_manifest_path, parse_name


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("smollm2", ("registry.ollama.ai", "library", "smollm2", "latest")),
        ("smollm2:135m", ("registry.ollama.ai", "library", "smollm2", "135m")),
        ("jmorgan/mistral:7b-q4", ("registry.ollama.ai", "jmorgan", "mistral", "7b-q4")),
        ("example.com/team/llama3.2:1b", ("example.com", "team", "llama3.2", "1b")),
        (
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            ("hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "Q4_K_M"),
        ),
        (
            "https://registry.ollama.ai/library/qwen2:0.5b",
            ("registry.ollama.ai", "library", "qwen2", "0.5b"),
        ),
        ("  gemma_2  ", ("registry.ollama.ai", "library", "gemma_2", "latest")),
    ],
)
def test_parse_fills_ollama_defaults(text: str, parts: tuple[str, str, str, str]) -> None:
    name = parse_name(text)
    assert (name.host, name.namespace, name.model, name.tag) == parts


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "..",
        "../etc/passwd",
        "library/../secrets:latest",
        "model..name",
        "example..com/ns/model",
        "model:v1..2",
        "/smollm2",
        "smollm2/",
        "a//b",
        "a/b/c/d",
        "model:",
        "model:a:b",
        "my model",
        "mödel",
        "model:tag/../x",
        "-rf",
        ".hidden",
        "model:.tag",
        "name.space/model",  # dots are not allowed in a namespace
        "host.ai/name.space/model",
        "model@sha256-" + "a" * 64,
        "model+Q4_0",
        "model:sha256-" + "0" * 64,
        "a" * 129,
        "x/" + "b" * 127,
    ],
)
def test_invalid_names_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_name(text)
    assert caught.value.message.startswith("invalid model name")
    assert caught.value.status == 400


def test_name_of_128_characters_is_accepted() -> None:
    assert parse_name("m" * 128).model == "m" * 128


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        parse_name(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("smollm2:135m", "smollm2:135m"),
        ("smollm2", "smollm2:latest"),
        ("Registry.Ollama.AI/Library/SmolLM2", "SmolLM2:latest"),
        ("jmorgan/mistral", "jmorgan/mistral:latest"),
        ("hf.co/bartowski/Repo-GGUF:Q4_K_M", "hf.co/bartowski/Repo-GGUF:Q4_K_M"),
        ("example.com/library/model:v1", "example.com/library/model:v1"),
    ],
)
def test_display_matches_ollama_list(text: str, shown: str) -> None:
    assert parse_name(text).display() == shown


def test_str_is_the_full_name() -> None:
    assert str(parse_name("smollm2:135m")) == "registry.ollama.ai/library/smollm2:135m"


def test_names_compare_ignoring_case_but_keep_their_case() -> None:
    upper, lower = parse_name("SmolLM2:135M"), parse_name("smollm2:135m")
    assert upper == lower
    assert hash(upper) == hash(lower)
    assert len({upper, lower}) == 1
    assert upper.model == "SmolLM2"
    assert upper != parse_name("smollm2:360m")


def test_manifest_path_round_trips(tmp_path: Path) -> None:
    name = parse_name("hf.co/bartowski/Repo-GGUF:Q4_K_M")
    path = name.manifest_path(tmp_path)
    assert path == tmp_path / "manifests" / "hf.co" / "bartowski" / "Repo-GGUF" / "Q4_K_M"
    assert name_from_manifest_path(tmp_path, path) == name
    assert name_from_manifest_path(tmp_path, path).display() == "hf.co/bartowski/Repo-GGUF:Q4_K_M"


def test_manifest_path_of_default_name(tmp_path: Path) -> None:
    path = parse_name("smollm2:135m").manifest_path(tmp_path)
    assert path.relative_to(tmp_path).parts == (
        "manifests",
        "registry.ollama.ai",
        "library",
        "smollm2",
        "135m",
    )


@pytest.mark.parametrize(
    "relative",
    [
        "manifests/registry.ollama.ai/library/smollm2",  # too short
        "manifests/registry.ollama.ai/library/smollm2/135m/extra",
        "blobs/registry.ollama.ai/library/smollm2/135m",  # not under manifests
        "manifests/registry.ollama.ai/library/smollm2/.135m.tmp",
    ],
)
def test_name_from_bad_manifest_path_is_refused(tmp_path: Path, relative: str) -> None:
    with pytest.raises(InvalidRequest):
        name_from_manifest_path(tmp_path, tmp_path / relative)


def test_model_name_is_immutable() -> None:
    name = ModelName("registry.ollama.ai", "library", "smollm2", "latest")
    with pytest.raises(AttributeError):
        name.tag = "other"  # type: ignore[misc]


def test_registry_host_may_carry_a_port():
    name = parse_name("localhost:5000/team/model:v1")
    assert (name.host, name.namespace, name.model, name.tag) == ("localhost:5000", "team",
                                                                 "model", "v1")
    assert name.display() == "localhost:5000/team/model:v1"
