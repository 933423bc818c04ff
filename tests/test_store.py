"""The store against Ollama's on-disk layout: a store written by hand the way Ollama writes it
is read as it is, and what corral writes passes the checks Ollama's GetModel makes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from service.core.errors import ModelNotFound
from service.models.store import MEDIA, ModelStore
from tests.test_gguf import STRING, U32, write_gguf

OLLAMA_TEMPLATE = ("{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
                   "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
                   "{{ end }}<|im_start|>assistant\n")
KNOWN_MEDIA = set(MEDIA.values()) | {"application/vnd.ollama.image.projector"}


def _blob(root: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / digest.replace(":", "-")).write_bytes(data)
    return digest


def make_ollama_store(root: Path, weights: Path, name: str = "smollm2/135m") -> Path:
    """Lay out a model exactly as `ollama pull` leaves it: Go's compact JSON, a config blob,
    template/params/license layers, the weights under blobs/sha256-<hex>. Returns the
    manifest path."""
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    digest = "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    os.link(weights, root / "blobs" / digest.replace(":", "-"))
    layers = [{"mediaType": MEDIA["model"], "digest": digest, "size": weights.stat().st_size}]
    for kind, data in (("template", OLLAMA_TEMPLATE.encode()),
                       ("license", b"Apache License 2.0"),
                       ("params", b'{"stop":["<|im_start|>","<|im_end|>"],"temperature":0}\n')):
        layers.append({"mediaType": MEDIA[kind], "digest": _blob(root, data), "size": len(data)})
    config = json.dumps({"model_format": "gguf", "model_family": "llama",
                         "model_families": ["llama"], "model_type": "134.52M",
                         "file_type": "Q4_1", "architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers",
                                    "diff_ids": [x["digest"] for x in layers]}},
                        separators=(",", ":")).encode() + b"\n"
    manifest = {"schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                           "digest": _blob(root, config), "size": len(config)},
                "layers": layers}
    path = root / "manifests" / "registry.ollama.ai" / "library" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(manifest, separators=(",", ":")).encode())
    return path


def assert_ollama_reads(root: Path, host: str, namespace: str, model: str, tag: str) -> dict:
    """What Ollama's GetModel needs: the manifest at manifests/<host>/<ns>/<model>/<tag>,
    every layer and the config at blobs/sha256-<hex> with that digest and size, media types
    it knows, and a config with the fields `ollama list` shows. Returns the manifest."""
    manifest = json.loads((root / "manifests" / host / namespace / model / tag).read_bytes())
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    for layer in [*manifest["layers"], manifest["config"]]:
        blob = root / "blobs" / layer["digest"].replace(":", "-")
        data = blob.read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]
        assert len(data) == layer["size"]
    assert {x["mediaType"] for x in manifest["layers"]} <= KNOWN_MEDIA
    config = json.loads((root / "blobs" / manifest["config"]["digest"].replace(":", "-"))
                        .read_bytes())
    for key in ("model_format", "model_family", "model_families", "model_type", "file_type"):
        assert key in config
    assert config["rootfs"]["diff_ids"] == [x["digest"] for x in manifest["layers"]]
    return manifest


def tiny(path: Path, kind: str = "model") -> Path:
    kvs = [("general.architecture", STRING, "llama"), ("general.file_type", U32, 2),
           ("general.type", STRING, kind)]
    return write_gguf(path, kvs, [("token_embd.weight", [8, 16])])


def test_an_ollama_store_is_read_as_it_is(tmp_path, model_file):
    manifest_path = make_ollama_store(tmp_path, model_file)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    [model] = ModelStore(tmp_path).list()
    assert model.name.display() == "smollm2:135m"
    assert model.digest == hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    config_size = json.loads(manifest_path.read_bytes())["config"]["size"]
    assert model.size == sum(x.size for x in model.layers) + config_size  # Manifest.Size()
    assert model.template == OLLAMA_TEMPLATE and model.license == ["Apache License 2.0"]
    assert model.parameters == {"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0}
    assert model.details()["quantization_level"] == "Q4_1"
    assert model.model_path.samefile(model_file)
    assert before == {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}


def test_names_resolve_ignoring_case_as_in_ollama(tmp_path, model_file):
    make_ollama_store(tmp_path, model_file)
    store = ModelStore(tmp_path)
    assert store.resolve("SmolLM2:135M").name.display() == "smollm2:135m"
    store.copy("smollm2:135m", "Mine")
    store.copy("smollm2:135m", "MINE:latest")  # the same name: no second manifest
    assert sorted(m.name.display() for m in store.list()) == ["Mine:latest", "smollm2:135m"]


def test_what_corral_writes_ollama_reads_back(tmp_path):
    store = ModelStore(tmp_path)
    weights = store.import_file(tiny(tmp_path / "w.gguf"))
    adapter = store.import_file(tiny(tmp_path / "a.gguf", "adapter"), MEDIA["adapter"])
    store.create("me/mine:v1", weights, template="{{ .Prompt }}", system="Be brief.",
                 parameters={"temperature": 0.5, "stop": ["</s>"]}, license=["MIT"],
                 messages=[{"role": "user", "content": "Hi"}], adapters=[adapter])
    manifest = assert_ollama_reads(tmp_path, "registry.ollama.ai", "me", "mine", "v1")
    kinds = [x["mediaType"].rsplit(".", 1)[1] for x in manifest["layers"]]
    assert kinds == ["model", "adapter", "template", "system", "license", "params", "messages"]
    params = json.loads(store.blob_path(manifest["layers"][5]["digest"]).read_bytes())
    assert params == {"temperature": 0.5, "stop": ["</s>"]}
    assert store.resolve("me/mine:v1").adapters == [store.blob_path(adapter.digest)]


def test_delete_removes_only_blobs_no_other_manifest_uses(tmp_path):
    store = ModelStore(tmp_path)
    weights = store.import_file(tiny(tmp_path / "w.gguf"))
    other = store.import_file(tiny(tmp_path / "o.gguf", "other"))
    store.create("a", weights, system="A")
    store.create("b", weights, system="B")
    store.create("ns/c", other)
    uploaded = store.write_bytes(b"uploaded for a create to come", "")
    store.partial_path("sha256:" + "1" * 64).write_bytes(b"half a download")

    store.delete("a")
    assert store.has_blob(weights.digest) and store.has_blob(uploaded.digest)
    assert [m.name.display() for m in store.list() if m.system == "A"] == []
    store.delete("b")
    assert not store.has_blob(weights.digest) and store.has_blob(other.digest)
    store.delete("ns/c")
    assert not (tmp_path / "manifests" / "registry.ollama.ai").exists()
    assert store.has_blob(uploaded.digest)
    assert store.partial_path("sha256:" + "1" * 64).exists()
    with pytest.raises(ModelNotFound):
        store.delete("ns/c")


def test_creating_over_a_name_drops_layers_only_the_old_manifest_used(tmp_path):
    store = ModelStore(tmp_path)
    weights = store.import_file(tiny(tmp_path / "w.gguf"))
    first = store.create("m", weights, system="old system")
    store.copy("m", "keep")
    store.create("m", weights, system="new system")
    old_system = next(x for x in first.layers if x.media_type == MEDIA["system"])
    assert store.has_blob(old_system.digest)  # "keep" still uses it
    store.delete("keep")
    assert not store.has_blob(old_system.digest)
    assert store.resolve("m").system == "new system"


def test_a_corrupt_manifest_hides_one_model_not_the_store(tmp_path, model_file):
    make_ollama_store(tmp_path, model_file)
    broken = tmp_path / "manifests/registry.ollama.ai/library/broken/latest"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    store = ModelStore(tmp_path)
    assert [m.name.display() for m in store.list()] == ["smollm2:135m"]
    store.copy("smollm2:135m", "again")
    store.delete("again")  # the other manifests are read; the broken one is skipped
    assert store.resolve("smollm2:135m").model_path.exists()
