"""/api/push and `corral push` as a job on a real worker, against a registry on loopback that
takes uploads (tests/registry_server.py): what the registry receives, a round trip back through
a pull, blobs it has already not sent again, and refusals as Ollama's error lines."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from cli.main import cli
from service.models.push import manifest_blobs
from service.models.registry import pull
from service.models.store import ModelStore
from tests.conftest import serving
from tests.registry_server import Loopback, digest_of, sha256_of
from tests.test_pull import Recorder

MODEL = "smollm2:135m"


@pytest.fixture
def settings(settings, tmp_path, model_file):
    """The conftest settings over a store this test may add names to (the weights linked)."""
    store = ModelStore(tmp_path / "models")
    store.create(MODEL, store.import_file(model_file))
    return dataclasses.replace(settings, models=store.root)


@pytest.fixture
def target(client, loopback: Loopback) -> str:
    """smollm2 copied to a name on the loopback registry, as `ollama cp` before a push."""
    name = f"{loopback.url.removeprefix('http://')}/me/smol:1"
    res = client.post("/api/copy", json={"source": MODEL, "destination": name})
    assert res.status_code == 200
    return name


def ndjson(response) -> list[dict]:
    return [json.loads(x) for x in response.get_data(as_text=True).splitlines() if x]


def local_manifest(app, name: str) -> bytes:
    store = app.extensions["corral"].store
    return store.existing_name(name).manifest_path(store.root).read_bytes()


def push(client, name: str, **body):
    return client.post("/api/push", json={"model": name, "insecure": True, **body})


def test_push_uploads_every_blob_and_the_manifest_and_pulls_back_the_same_model(
        app, client, worker, loopback, target, tmp_path):
    lines = ndjson(push(client, target))
    raw = local_manifest(app, target)
    blobs = manifest_blobs(raw)
    assert lines[0] == {"status": "retrieving manifest"}
    assert lines[-2:] == [{"status": "pushing manifest"}, {"status": "success"}]
    for digest, size in blobs:
        bar = [x for x in lines if x.get("digest") == digest]
        assert bar[0]["status"] == f"pushing {digest[7:19]}"
        assert bar[-1]["completed"] == bar[-1]["total"] == size
        assert digest_of(loopback.blobs[digest]) == digest
    weights = [x for x in lines if x.get("digest") == blobs[0][0]]
    assert len(weights) >= 3 and [x["completed"] for x in weights] == sorted(
        x["completed"] for x in weights)  # the bar moves while the weights go up
    assert loopback.manifests["me/smol:1"] == raw
    print("\n".join(loopback.log()))
    [job] = [j for j in app.extensions["corral"].jobs.recent() if j.kind == "push"]
    assert (job.status, job.model, job.output) == ("succeeded", target, target)

    back = ModelStore(tmp_path / "back")
    pull(target, back, Recorder(), insecure=True)
    assert back.resolve(target).name.manifest_path(back.root).read_bytes() == raw
    for digest, _ in blobs:
        assert sha256_of(back.blob_path(digest)) == digest


def test_a_second_push_sends_no_blob_the_registry_has(client, worker, loopback, target):
    assert ndjson(push(client, target))[-1] == {"status": "success"}
    loopback.seen.clear()
    res = push(client, target, stream=False)
    assert res.status_code == 200 and res.get_json() == {"status": "success"}
    assert {s.method for s in loopback.seen} == {"HEAD", "PUT"}
    [manifest] = [s for s in loopback.seen if s.method == "PUT"]
    assert manifest.path == "/v2/me/smol/manifests/1" and manifest.status == 201
    assert all(s.status == 200 for s in loopback.seen if s.method == "HEAD")


def test_pushing_an_unknown_model_is_a_404_before_any_job(app, client, loopback):
    res = push(client, f"{loopback.url.removeprefix('http://')}/me/nothing:1")
    assert res.status_code == 404 and "not found" in res.get_json()["error"]
    assert app.extensions["corral"].jobs.recent() == []
    assert loopback.seen == []


def test_a_registry_that_refuses_fails_the_job_naming_its_status(
        app, client, worker, loopback, target):
    loopback.refuse = {"PUT": 500}
    lines = ndjson(push(client, target))
    error = lines[-1]["error"]
    assert "500" in error and "Internal Server Error" in error and "127.0.0.1" in error
    [job] = [j for j in app.extensions["corral"].jobs.recent() if j.kind == "push"]
    assert job.status == "failed" and "500" in job.error
    res = push(client, target, stream=False)
    assert res.status_code == 500 and "500" in res.get_json()["error"]
    assert "me/smol:1" not in loopback.manifests


def test_a_registry_that_is_not_there_is_an_error_line_and_https_unless_insecure(
        client, worker):
    name = "127.0.0.1:1/me/smol:1"
    assert client.post("/api/copy", json={"source": MODEL, "destination": name}
                       ).status_code == 200
    error = ndjson(push(client, name))[-1]["error"]
    assert "could not connect to the registry 127.0.0.1:1 (http://127.0.0.1:1)" in error
    error = ndjson(client.post("/api/push", json={"model": name}))[-1]["error"]
    assert "(https://127.0.0.1:1)" in error


def test_a_bearer_challenge_is_answered_with_the_registrys_token(
        client, worker, loopback, target):
    loopback.token = "t0ken"
    assert ndjson(push(client, target))[-1] == {"status": "success"}
    log = loopback.log()
    assert log[0].startswith("HEAD /v2/me/smol/blobs/") and log[0].endswith("-> 401")
    assert log[1].startswith("GET /token?") and "scope=repository" in log[1]
    assert all(line.endswith(("-> 200", "-> 201", "-> 202", "-> 404")) for line in log[2:])
    assert "me/smol:1" in loopback.manifests


def test_corral_push_prints_progress_like_pull(app, worker, loopback, target):
    with serving(app) as url:
        result = CliRunner().invoke(cli, ["push", target, "--insecure"],
                                    env={"CORRAL_HOST": url.removeprefix("http://")})
    assert result.exit_code == 0, result.output
    weights = manifest_blobs(local_manifest(app, target))[0][0]
    assert "retrieving manifest" in result.output
    assert f"pushing {weights[7:19]}: 100%" in result.output
    assert result.output.rstrip().endswith("success")
    assert "me/smol:1" in loopback.manifests
