"""/api/pull as a job on a real worker, and /api/ps, stop and delete across workers."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from service.models.store import ModelStore
from tests.conftest import running_worker
from tests.test_pull import TEMPLATE
from tests.waiting import wait_until

MODEL = "smollm2:135m"


def ndjson(response) -> list[dict]:
    return [json.loads(x) for x in response.get_data(as_text=True).splitlines() if x]


@pytest.fixture
def fleet_settings(settings, tmp_path, loopback):
    return dataclasses.replace(settings, models=tmp_path / "models",
                               registry_mirrors=(("registry.ollama.ai", loopback.url),),
                               hf_endpoint=loopback.url)


@pytest.fixture
def fapp(fleet_settings):
    from service.http.app import create_app

    app = create_app({"TESTING": True}, settings=fleet_settings)
    yield app
    app.extensions["corral"].close()


@pytest.fixture
def fclient(fapp):
    return fapp.test_client()


@pytest.fixture
def fworker(fleet_settings):
    with running_worker(fleet_settings) as runtime:
        yield runtime


def test_pull_runs_as_a_job_streaming_ollamas_progress_and_the_model_answers(
        fapp, fclient, fworker, loopback, model_file):
    manifest = loopback.add_model("library/smollm2", "135m", model_file, {"template": TEMPLATE})
    res = fclient.post("/api/pull", json={"model": MODEL, "insecure": True})
    assert res.status_code == 200 and res.mimetype == "application/x-ndjson"
    lines = ndjson(res)
    weights = manifest["layers"][0]["digest"]
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-3:] == [{"status": "verifying sha256 digest"},
                          {"status": "writing manifest"}, {"status": "success"}]
    bar = [x for x in lines if x.get("digest") == weights]
    assert bar[0]["status"] == f"pulling {weights[7:19]}" and len(bar) >= 2
    assert bar[-1]["completed"] == bar[-1]["total"] == model_file.stat().st_size
    [job] = fapp.extensions["corral"].jobs.recent()
    assert (job.kind, job.status, job.model, job.output) == ("pull", "succeeded", MODEL, MODEL)

    res = fclient.post("/api/generate", json={"model": MODEL, "prompt": "Say hi.",
                                              "stream": False, "options": {"num_predict": 4}})
    assert res.status_code == 200 and res.get_json()["response"]


def test_failed_pull_is_an_error_line_streamed_and_a_500_whole(fclient, fworker):
    lines = ndjson(fclient.post("/api/pull", json={"model": "nothing:here", "insecure": True}))
    assert lines[0] == {"status": "pulling manifest"}
    assert "file does not exist" in lines[-1]["error"]
    res = fclient.post("/api/pull", json={"model": "nothing:here", "insecure": True,
                                          "stream": False})
    assert res.status_code == 500 and "file does not exist" in res.get_json()["error"]


def test_pull_with_a_bad_name_is_400_before_any_job(fapp, fclient):
    res = fclient.post("/api/pull", json={"model": "a/b/c/d"})
    assert res.status_code == 400 and "invalid model name" in res.get_json()["error"]
    assert fapp.extensions["corral"].jobs.recent() == []


@pytest.fixture
def with_smollm2(fleet_settings, model_file):
    store = ModelStore(fleet_settings.models)
    store.create(MODEL, store.import_file(model_file))
    return store


def test_ps_shows_what_workers_loaded_and_an_empty_chat_loads_and_unloads(
        fclient, fworker, with_smollm2):
    assert fclient.get("/api/ps").get_json()["models"] == []
    res = fclient.post("/api/chat", json={"model": MODEL, "messages": [], "keep_alive": "10m",
                                          "stream": False})
    assert res.get_json()["done_reason"] == "load"
    [entry] = fclient.get("/api/ps").get_json()["models"]
    model = with_smollm2.resolve(MODEL)
    assert entry["name"] == entry["model"] == MODEL and entry["digest"] == model.digest
    assert entry["size"] >= model.model_path.stat().st_size and entry["size_vram"] == 0
    assert entry["details"]["family"] == "llama"
    expires = datetime.fromisoformat(entry["expires_at"].replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(UTC) + timedelta(minutes=10))) < timedelta(seconds=30)

    res = fclient.post("/api/chat", json={"model": MODEL, "messages": [], "keep_alive": 0,
                                          "stream": False})
    assert res.get_json()["done_reason"] == "unload"
    assert fclient.get("/api/ps").get_json()["models"] == []
    assert fworker.pool.loaded() == []


def test_stop_and_delete_unload_the_model_on_every_worker(fleet_settings, fclient, fworker,
                                                          with_smollm2):
    with running_worker(fleet_settings) as second:

        def both_loaded() -> tuple[list, list]:
            return fworker.pool.loaded(), second.pool.loaded()

        model = with_smollm2.resolve(MODEL)
        for runtime in (fworker, second):  # loaded on both workers, kept forever
            runtime.pool.acquire("pinned", model, {"name": MODEL})
            runtime.pool.release("pinned", -1)
            runtime.heartbeat.publish()
        assert len(fclient.get("/api/ps").get_json()["models"]) == 2
        res = fclient.post("/api/generate", json={"model": MODEL, "keep_alive": 0,
                                                  "stream": False})  # what `corral stop` sends
        assert res.get_json()["done_reason"] == "unload"
        # Unloading reaches the other worker by a control message, broadcast and not awaited.
        wait_until(both_loaded, ready=lambda loaded: loaded == ([], []), interval=0.1,
                   message="both workers to unload the model")
        wait_until(lambda: fclient.get("/api/ps").get_json()["models"], ready=lambda m: m == [],
                   interval=0.1, message="/api/ps to show no model")

        fclient.post("/api/chat", json={"model": MODEL, "messages": [], "stream": False})
        wait_until(both_loaded, ready=any, interval=0.1, message="a worker to load the model")
        assert fclient.delete("/api/delete", json={"model": MODEL}).status_code == 200
        wait_until(both_loaded, ready=lambda loaded: loaded == ([], []), interval=0.1,
                   message="both workers to unload the deleted model")
    assert fclient.get("/api/tags").get_json() == {"models": []}


def test_a_worker_that_stops_leaves_ps(fleet_settings, fclient, with_smollm2):
    with running_worker(fleet_settings):
        fclient.post("/api/chat", json={"model": MODEL, "messages": [], "keep_alive": -1,
                                        "stream": False})
        [entry] = fclient.get("/api/ps").get_json()["models"]
        assert entry["expires_at"].startswith("2318")  # kept forever, as Ollama shows it
    assert fclient.get("/api/ps").get_json()["models"] == []
