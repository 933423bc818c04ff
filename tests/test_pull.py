"""Pulling into the store (service.models.registry), against a registry, Hub and file server the
tests run on loopback: progress as Ollama reports it, resume, refusal, and a store that is
as it was after every failure. The Ollama-registry tests move the real SmolLM2 blob."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from service.core.errors import CorralError, InvalidRequest, NotFound
from service.models.registry import Endpoints, pull
from service.models.store import ModelStore
from tests.registry_server import Loopback, sha256_of
from tests.test_gguf import STRING, U32, write_gguf

TEMPLATE = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}" \
           "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
CUT = 30 << 20  # where an interrupted download stops: 30 MiB into the 98 MB model


@pytest.fixture
def published(loopback: Loopback, model_file: Path) -> dict:
    """SmolLM2 published as library/smollm2:135m, with a template and parameters."""
    return loopback.add_model("library/smollm2", "135m", model_file,
                              {"template": TEMPLATE, "params": '{"stop":["<|im_end|>"]}'})


@pytest.fixture
def endpoints(loopback: Loopback) -> Endpoints:
    return Endpoints({"registry.ollama.ai": loopback.url}, loopback.url)


def tiny_gguf(path: Path, quant: int = 15) -> Path:
    """A small valid GGUF header (no real weights): enough for the store and /api/show."""
    kvs = [("general.architecture", STRING, "llama"), ("general.file_type", U32, quant)]
    return write_gguf(path, kvs, [("token_embd.weight", [8, 16])])


class Recorder:
    """The progress callback: keeps every update."""

    def __init__(self) -> None:
        self.updates: list[dict] = []

    def __call__(self, update: dict) -> None:
        self.updates.append(update)

    def statuses(self) -> list[str]:
        """Statuses in order, repeats of one status collapsed."""
        out: list[str] = []
        for update in self.updates:
            if not out or out[-1] != update["status"]:
                out.append(update["status"])
        return out


def store_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def pull_smollm2(store, endpoints, recorder=None, **kwargs):
    return pull("smollm2:135m", store, recorder or Recorder(), insecure=True,
                endpoints=endpoints, **kwargs)


def test_registry_pull_reports_ollama_progress_and_stores_ollamas_layout(
        tmp_path, loopback, published, endpoints, model_file):
    store, progress = ModelStore(tmp_path / "models"), Recorder()
    name = pull_smollm2(store, endpoints, progress)

    weights = published["layers"][0]["digest"]
    assert name.display() == "smollm2:135m"
    assert progress.statuses() == [
        "pulling manifest", f"pulling {weights[7:19]}",
        *[f"pulling {x['digest'][7:19]}" for x in published["layers"][1:]],
        f"pulling {published['config']['digest'][7:19]}",
        "verifying sha256 digest", "writing manifest"]
    bar = [u for u in progress.updates if u.get("digest") == weights]
    assert all(u["total"] == model_file.stat().st_size for u in bar)
    assert [u["completed"] for u in bar] == sorted(u["completed"] for u in bar)
    assert len(bar) >= 3 and bar[-1]["completed"] == bar[-1]["total"]
    manifest = tmp_path / "models/manifests/registry.ollama.ai/library/smollm2/135m"
    assert manifest.read_bytes() == loopback.manifests["library/smollm2:135m"]
    assert sha256_of(tmp_path / f"models/blobs/{weights.replace(':', '-')}") == weights
    model = store.resolve("smollm2:135m")
    assert model.template == TEMPLATE and model.parameters == {"stop": ["<|im_end|>"]}
    assert not list((tmp_path / "models/blobs").glob("*.partial"))


def test_pulling_again_downloads_nothing_and_reports_every_layer_complete(
        tmp_path, loopback, published, endpoints):
    store = ModelStore(tmp_path / "models")
    pull_smollm2(store, endpoints)
    loopback.seen.clear()
    progress = Recorder()
    pull_smollm2(store, endpoints, progress)
    assert loopback.bodies_sent("/blobs/") == []
    layers = [u for u in progress.updates if u.get("digest")]
    assert len(layers) == len(published["layers"]) + 1
    assert all(u["completed"] == u["total"] for u in layers)


def test_interrupted_pull_leaves_the_store_as_it_was_and_the_next_pull_resumes(
        tmp_path, loopback, published, endpoints, model_file):
    store = ModelStore(tmp_path / "models")
    store.create("other:latest", store.import_file(tiny_gguf(tmp_path / "other.gguf")))
    before = store_files(store.root)
    loopback.cut_after = CUT
    with pytest.raises(CorralError, match="pull again to resume"):
        pull_smollm2(store, endpoints)

    weights = published["layers"][0]["digest"]
    partial = store.partial_path(weights)
    assert store_files(store.root) - before == {str(partial.relative_to(store.root))}
    assert partial.stat().st_size == CUT
    assert [m.name.display() for m in store.list()] == ["other:latest"]

    loopback.cut_after, loopback.seen[:] = None, []
    pull_smollm2(store, endpoints)
    [resumed] = [s for s in loopback.bodies_sent(weights)]
    assert resumed.range == f"bytes={CUT}-" and resumed.status == 206
    assert resumed.sent == model_file.stat().st_size - CUT
    assert sha256_of(store.blob_path(weights)) == weights
    assert not partial.exists()


def test_corrupted_blob_is_refused_before_it_is_named_and_fetched_again_whole(
        tmp_path, loopback, published, endpoints):
    store = ModelStore(tmp_path / "models")
    weights = published["layers"][0]["digest"]
    loopback.corrupt = {weights}
    with pytest.raises(CorralError, match="digest mismatch, file must be downloaded again"):
        pull_smollm2(store, endpoints)
    assert not store.has_blob(weights) and not store.partial_path(weights).exists()
    assert not list((store.root / "blobs").glob("sha256-*[0-9a-f]"))  # nothing named
    assert not (store.root / "manifests").exists()

    loopback.corrupt, loopback.seen[:] = set(), []
    pull_smollm2(store, endpoints)
    assert [s.range for s in loopback.bodies_sent(weights)] == [None]
    assert store.resolve("smollm2:135m").model_path == store.blob_path(weights)


def test_full_disk_is_reported_and_the_next_pull_resumes(
        tmp_path, loopback, published, endpoints, model_file):
    """A real write failure: the pull runs in a process whose files may not pass 20 MiB."""
    root = tmp_path / "models"
    script = textwrap.dedent(f"""
        import resource, signal
        from service.models.registry import Endpoints, pull
        from service.models.store import ModelStore
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({20 << 20}, {20 << 20}))
        pull("smollm2:135m", ModelStore({str(root)!r}), lambda update: None, insecure=True,
             endpoints=Endpoints({{"registry.ollama.ai": {loopback.url!r}}}))
    """)
    failed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert failed.returncode != 0
    assert "File too large" in failed.stderr and "pull again to resume" in failed.stderr
    store = ModelStore(root)
    weights = published["layers"][0]["digest"]
    assert store.list() == [] and not store.has_blob(weights)
    kept = store.partial_path(weights).stat().st_size
    assert 0 < kept <= 20 << 20

    loopback.seen.clear()
    pull_smollm2(store, endpoints)
    assert [s.range for s in loopback.bodies_sent(weights)] == [f"bytes={kept}-"]
    assert sha256_of(store.blob_path(weights)) == weights


def test_a_server_that_ignores_range_sends_the_whole_file_and_the_pull_still_verifies(
        tmp_path, loopback, endpoints):
    store = ModelStore(tmp_path / "models")
    loopback.add_model("library/tiny", "latest", tiny_gguf(tmp_path / "t.gguf").read_bytes())
    loopback.cut_after = 100
    with pytest.raises(CorralError):
        pull("tiny", store, Recorder(), insecure=True, endpoints=endpoints)
    loopback.cut_after, loopback.ignore_range = None, True
    pull("tiny", store, Recorder(), insecure=True, endpoints=endpoints)
    assert store.resolve("tiny").details()["family"] == "llama"


def test_unknown_model_and_plain_http_without_insecure_are_refused(
        tmp_path, loopback, endpoints):
    store = ModelStore(tmp_path / "models")
    with pytest.raises(NotFound, match="file does not exist"):
        pull("nothing:here", store, Recorder(), insecure=True, endpoints=endpoints)
    with pytest.raises(InvalidRequest, match="insecure"):
        pull("nothing:here", store, Recorder(), endpoints=endpoints)
    assert store_files(store.root) == set()


def test_invalid_manifest_is_refused_without_downloading(tmp_path, loopback, endpoints):
    loopback.manifests["library/bad:latest"] = json.dumps(
        {"layers": [{"digest": "sha256:nothex", "size": 1}]}).encode()
    with pytest.raises(CorralError, match="invalid manifest"):
        pull("bad", ModelStore(tmp_path / "m"), Recorder(), insecure=True, endpoints=endpoints)
    assert loopback.bodies_sent("/blobs/") == []


def test_hugging_face_name_picks_the_gguf_of_its_quantization(tmp_path, loopback, endpoints):
    q4 = tiny_gguf(tmp_path / "a.gguf", quant=15).read_bytes()
    q8 = tiny_gguf(tmp_path / "b.gguf", quant=7).read_bytes()
    loopback.add_hf_repo("someone/Tiny-GGUF", {"README.md": b"hi", "Tiny-Q4_K_M.gguf": q4,
                                                "Tiny-Q8_0.gguf": q8, "mmproj-Q8_0.gguf": q8})
    store = ModelStore(tmp_path / "models")
    eight = pull("hf.co/someone/Tiny-GGUF:Q8_0", store, Recorder(), insecure=True,
                 endpoints=endpoints)
    default = pull("hf.co/someone/Tiny-GGUF", store, Recorder(), insecure=True,
                   endpoints=endpoints)
    assert eight.display() == "hf.co/someone/Tiny-GGUF:Q8_0"
    assert store.resolve(eight).details()["quantization_level"] == "Q8_0"
    assert store.resolve(default).details()["quantization_level"] == "Q4_K_M"
    assert (store.root / "manifests/hf.co/someone/Tiny-GGUF/latest").is_file()
    with pytest.raises(NotFound, match="Tiny-Q4_K_M.gguf, Tiny-Q8_0.gguf"):
        pull("hf.co/someone/Tiny-GGUF:Q2_K", store, Recorder(), insecure=True,
             endpoints=endpoints)


def test_hugging_face_file_that_does_not_match_its_lfs_digest_is_refused(
        tmp_path, loopback, endpoints):
    loopback.add_hf_repo("someone/Tiny", {"Tiny-Q4_K_M.gguf": tiny_gguf(tmp_path / "a.gguf")})
    loopback.corrupt = {"/someone/Tiny/resolve/main/Tiny-Q4_K_M.gguf"}
    store = ModelStore(tmp_path / "models")
    with pytest.raises(CorralError, match="digest mismatch"):
        pull("hf.co/someone/Tiny", store, Recorder(), insecure=True, endpoints=endpoints)
    assert store_files(store.root) == set()


def test_url_pull_names_the_model_after_its_file_and_checks_a_given_digest(
        tmp_path, loopback, endpoints):
    content = tiny_gguf(tmp_path / "x.gguf").read_bytes()
    loopback.files["/files/Tiny-Model.Q4_K_M.gguf"] = content
    url = f"{loopback.url}/files/Tiny-Model.Q4_K_M.gguf"
    store, progress = ModelStore(tmp_path / "models"), Recorder()
    with pytest.raises(CorralError, match="digest mismatch"):
        pull(url + "#sha256=" + "0" * 64, store, progress, insecure=True)
    assert store_files(store.root) == set()
    name = pull(url + "#sha256=" + hashlib.sha256(content).hexdigest(), store, progress,
                insecure=True)
    assert name.display() == "Tiny-Model.Q4_K_M:latest"
    assert store.resolve(name).model_path.read_bytes() == content
    plain = pull(url, ModelStore(tmp_path / "other"), Recorder(), insecure=True)
    assert plain == name


def test_url_that_is_not_a_gguf_is_refused_and_nothing_is_kept(tmp_path, loopback):
    loopback.files["/files/page.gguf"] = b"<html>not a model</html>"
    store = ModelStore(tmp_path / "models")
    with pytest.raises(InvalidRequest, match="not a usable GGUF"):
        pull(f"{loopback.url}/files/page.gguf", store, Recorder(), insecure=True)
    assert store_files(store.root) == set()


def test_two_pulls_of_one_model_at_once_download_it_once(tmp_path, loopback, published,
                                                         endpoints, model_file):
    import threading

    store, results = ModelStore(tmp_path / "models"), []
    threads = [threading.Thread(target=lambda: results.append(pull_smollm2(store, endpoints)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    weights = published["layers"][0]["digest"]
    assert [n.display() for n in results] == ["smollm2:135m"] * 2
    assert sum(s.sent for s in loopback.bodies_sent(weights)) == model_file.stat().st_size
    assert sha256_of(store.blob_path(weights)) == weights
