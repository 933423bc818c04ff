"""API keys and roles: who may reach corral, run which model, and see whose work.

Against the real app (real Redis, SQLite at head) with keys made through the KeyStore and
through `corral keys`; the official ollama and openai clients send their keys as Bearer.
"""

from __future__ import annotations

import dataclasses
import io
import json

import ollama
import openai
import pytest
from click.testing import CliRunner

from cli.main import cli
from service.access.keys import KeyStore, Principal, Role
from service.http.access import keys_required
from tests.conftest import openai_client, serving

MODEL = "smollm2:135m"


@pytest.fixture
def secured(make_app):
    """An app that requires keys (CORRAL_AUTH=required on loopback)."""
    return make_app(auth="required")


def keystore(app) -> KeyStore:
    return app.extensions["corral"].keys


def new_key(app, name: str, role: Role = Role.USER, models: list[str] | None = None) -> str:
    return keystore(app).create(name, role, models)[1]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def submit(client, secret: str, model: str = MODEL):
    return client.post("/jobs", json={"model": model, "prompt": "hi"}, headers=bearer(secret))


# ---- when keys are needed ------------------------------------------------------------
def test_keys_are_off_on_loopback_required_when_asked_and_always_beyond_loopback(settings):
    assert not keys_required(dataclasses.replace(settings, host="127.0.0.1"))
    assert keys_required(dataclasses.replace(settings, host="127.0.0.1", auth="required"))
    assert keys_required(dataclasses.replace(settings, host="0.0.0.0"))
    assert keys_required(dataclasses.replace(settings, host="192.168.1.5"))


def test_a_non_loopback_bind_refuses_a_request_without_a_key(make_app):
    client = make_app(host="0.0.0.0").test_client()
    answer = client.get("/api/tags")
    assert answer.status_code == 401
    assert "API key is required" in answer.get_json()["error"]


def test_on_loopback_without_corral_auth_no_key_is_needed(client):
    assert client.get("/api/tags").status_code == 200
    assert client.post("/jobs", json={"model": MODEL, "prompt": "hi"}).status_code == 202
    # an unknown key (OpenAI's client always sends one) is ignored, not refused
    assert client.get("/api/tags", headers=bearer("unused")).status_code == 200


# ---- 401 ---------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer"},
                                     {"Authorization": "Basic dXNlcjpwdw=="},
                                     bearer("corral-not-a-key")],
                         ids=["none", "empty", "basic", "wrong"])
def test_a_missing_or_wrong_key_is_a_401_json_error_with_a_challenge(secured, headers):
    client = secured.test_client()
    for method, path in (("GET", "/api/tags"), ("POST", "/api/generate"), ("GET", "/jobs"),
                         ("GET", "/batches"), ("GET", "/keys")):
        answer = client.open(path, method=method, headers=headers, json={})
        assert answer.status_code == 401, (method, path)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert "API key" in answer.get_json()["error"]


def test_the_openai_face_answers_401_in_openai_shape_so_its_client_raises(secured):
    with openai_client(secured) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.models.list()
    assert caught.value.status_code == 401
    assert "API key" in caught.value.body["message"]


def test_a_revoked_key_stops_working_at_once(secured):
    secret = new_key(secured, "alice")
    client = secured.test_client()
    assert client.get("/api/tags", headers=bearer(secret)).status_code == 200
    keystore(secured).revoke("alice")
    answer = client.get("/api/tags", headers=bearer(secret))
    assert answer.status_code == 401
    assert "revoked" in answer.get_json()["error"]


def test_health_checks_and_preflights_need_no_key(secured):
    client = secured.test_client()
    assert client.get("/api/version").status_code == 200
    assert client.get("/").status_code == 200
    preflight = client.options("/api/chat", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]


# ---- roles -------------------------------------------------------------------------
ADMIN_ROUTES = [
    ("POST", "/api/pull", {"model": "other:1b"}),
    ("POST", "/api/push", {"model": MODEL}),
    ("POST", "/api/create", {"model": "mine", "from": MODEL}),
    ("POST", "/api/copy", {"source": MODEL, "destination": "copied"}),
    ("DELETE", "/api/delete", {"model": MODEL}),
    ("POST", "/api/blobs/sha256:" + "0" * 64, None),
    ("GET", "/keys", None),
    ("POST", "/keys", {"name": "mallory", "role": "admin"}),
    ("DELETE", "/keys/alice", None),
    ("GET", "/jobs/report", None),
]


@pytest.mark.parametrize("method,path,body", ADMIN_ROUTES,
                         ids=[f"{m} {p[:16]}" for m, p, _ in ADMIN_ROUTES])
def test_a_user_key_on_an_admin_route_is_a_403_and_changes_nothing(secured, method, path,
                                                                   body):
    secret = new_key(secured, "alice")
    client = secured.test_client()
    answer = client.open(path, method=method, json=body, headers=bearer(secret))
    assert answer.status_code == 403
    assert "needs an admin key" in answer.get_json()["error"]
    assert [str(m.name) for m in secured.extensions["corral"].store.list()] == [
        "registry.ollama.ai/library/smollm2:135m"]
    assert [k.name for k in keystore(secured).list()] == ["alice"]


def test_an_admin_key_manages_keys_over_http_and_the_secret_is_shown_once(secured):
    admin = new_key(secured, "root", Role.ADMIN)
    client = secured.test_client()
    made = client.post("/keys", json={"name": "bob", "role": "user", "models": ["smollm2"]},
                       headers=bearer(admin))
    assert made.status_code == 201
    body = made.get_json()
    assert body["key"].startswith("corral-") and body["models"] == ["smollm2"]
    listed = client.get("/keys", headers=bearer(admin)).get_json()["keys"]
    assert [k["name"] for k in listed] == ["root", "bob"]
    assert all("key" not in k and "digest" not in k for k in listed)
    assert body["key"] not in json.dumps(listed)
    assert client.get("/api/tags", headers=bearer(body["key"])).status_code == 200
    assert client.delete("/keys/bob", headers=bearer(admin)).status_code == 200
    assert client.get("/api/tags", headers=bearer(body["key"])).status_code == 401


def test_any_key_learns_its_own_role_and_models_and_no_key_is_a_401(secured):
    admin = new_key(secured, "root", Role.ADMIN)
    user = new_key(secured, "ann", Role.USER, ["smollm2"])
    client = secured.test_client()
    mine = client.get("/keys/me", headers=bearer(user))
    assert mine.status_code == 200
    ann = mine.get_json()
    assert (ann["name"], ann["role"], ann["models"], ann["keys_required"]) == (
        "ann", "user", ["smollm2"], True)
    assert ann["id"] == next(k.id for k in keystore(secured).list() if k.name == "ann")
    root = client.get("/keys/me", headers=bearer(admin)).get_json()
    assert (root["name"], root["role"], root["models"]) == ("root", "admin", None)
    assert client.get("/keys/me").status_code == 401
    assert client.get("/keys/me", headers=bearer("corral-nonsense")).status_code == 401


def test_without_keys_the_page_is_told_it_is_the_local_admin(client):
    me = client.get("/keys/me").get_json()
    assert me == {"id": None, "name": "local", "role": "admin", "models": None,
                  "keys_required": False}


@pytest.mark.parametrize("body,field", [({"name": "x", "role": "root"}, "role"),
                                        ({"role": "user"}, "name"),
                                        ({"name": "x", "models": "smollm2"}, "models"),
                                        ({"name": "x", "models": ["../etc"]}, "model name")])
def test_bad_key_requests_are_400s_naming_the_field(secured, body, field):
    admin = new_key(secured, "root", Role.ADMIN)
    answer = secured.test_client().post("/keys", json=body, headers=bearer(admin))
    assert answer.status_code == 400
    assert field in answer.get_json()["error"]


def test_a_second_unrevoked_key_of_the_same_name_is_a_409(secured):
    admin = new_key(secured, "root", Role.ADMIN)
    client = secured.test_client()
    assert client.post("/keys", json={"name": "root"}, headers=bearer(admin)).status_code == 409


# ---- model allowlists ----------------------------------------------------------------
def test_a_key_outside_its_model_allowlist_is_refused_on_every_face(secured):
    secret = new_key(secured, "alice", models=["gemma3"])
    client = secured.test_client()
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    for path, body in (("/api/generate", {"model": MODEL, "prompt": "hi"}), ("/api/chat", chat),
                       ("/api/embed", {"model": MODEL, "input": "hi"}),
                       ("/api/show", {"model": MODEL}), ("/v1/chat/completions", chat),
                       ("/jobs", {"model": MODEL, "prompt": "hi"})):
        answer = client.post(path, json=body, headers=bearer(secret))
        assert answer.status_code == 403, path
        assert "may not use the model" in json.dumps(answer.get_json())
    assert secured.extensions["corral"].jobs.recent() == []
    assert client.get("/api/tags", headers=bearer(secret)).get_json() == {"models": []}
    assert client.get("/v1/models", headers=bearer(secret)).get_json()["data"] == []


def test_an_allowlist_entry_without_a_tag_allows_every_tag_of_that_model():
    key = Principal("key_1", "alice", Role.USER, ("smollm2",))
    assert key.may_use("smollm2:135m") and key.may_use("SmolLM2") and key.may_use("smollm2")
    assert not key.may_use("gemma3:270m")
    tagged = Principal("key_1", "alice", Role.USER, ("smollm2:135m",))
    assert tagged.may_use("smollm2:135m") and not tagged.may_use("smollm2:360m")


def test_batch_lines_for_models_outside_the_allowlist_fail_and_the_rest_run(secured):
    secret = new_key(secured, "alice", models=["smollm2"])
    lines = "\n".join(json.dumps(line) for line in (
        {"custom_id": "ok", "model": MODEL, "prompt": "hi"},
        {"custom_id": "no", "model": "gemma3:270m", "prompt": "hi"})).encode()
    client = secured.test_client()
    made = client.post("/batches", data=lines, headers=bearer(secret))
    assert made.status_code == 201
    batch = made.get_json()
    assert batch["counts"]["invalid"] == 1 and batch["counts"]["total"] == 2
    refused = client.post("/batches?model=gemma3", data=b"hi\n", headers=bearer(secret))
    assert refused.status_code == 403


# ---- owners ------------------------------------------------------------------------
def test_a_user_sees_and_cancels_only_its_own_jobs_and_an_admin_sees_all(secured):
    alice, bob = new_key(secured, "alice"), new_key(secured, "bob")
    admin = new_key(secured, "root", Role.ADMIN)
    client = secured.test_client()
    mine = submit(client, alice).get_json()["id"]
    theirs = submit(client, bob).get_json()["id"]
    alice_id = keystore(secured).active("alice").id
    assert secured.extensions["corral"].jobs.get(mine).owner == alice_id
    listed = client.get("/jobs", headers=bearer(alice)).get_json()["jobs"]
    assert [job["id"] for job in listed] == [mine]
    for method, path in (("GET", f"/jobs/{theirs}"), ("GET", f"/jobs/{theirs}/events"),
                         ("DELETE", f"/jobs/{theirs}")):
        answer = client.open(path, method=method, headers=bearer(alice))
        assert answer.status_code == 403, (method, path)
        assert "belongs to another key" in answer.get_json()["error"]
    assert secured.extensions["corral"].jobs.get(theirs).status == "queued"
    assert client.delete(f"/jobs/{mine}", headers=bearer(alice)).status_code == 200
    everyone = client.get("/jobs", headers=bearer(admin)).get_json()["jobs"]
    assert {job["id"] for job in everyone} == {mine, theirs}
    assert client.delete(f"/jobs/{theirs}", headers=bearer(admin)).status_code == 200


def test_an_idempotency_key_does_not_hand_one_users_job_to_another(secured):
    alice, bob = new_key(secured, "alice"), new_key(secured, "bob")
    client = secured.test_client()
    body = {"model": MODEL, "prompt": "hi"}
    first = client.post("/jobs", json=body, headers={**bearer(alice), "Idempotency-Key": "k1"})
    assert first.status_code == 202
    again = client.post("/jobs", json=body, headers={**bearer(bob), "Idempotency-Key": "k1"})
    assert again.status_code == 403


def test_batches_and_files_belong_to_the_key_that_made_them(secured):
    alice, bob = new_key(secured, "alice"), new_key(secured, "bob")
    client = secured.test_client()
    native = client.post("/batches?model=smollm2:135m", data=b"hi\n", headers=bearer(alice))
    batch_id = native.get_json()["id"]
    assert client.get("/batches", headers=bearer(bob)).get_json() == {"batches": []}
    for method, path in (("GET", f"/batches/{batch_id}"), ("POST", f"/batches/{batch_id}/cancel"),
                         ("GET", f"/batches/{batch_id}/results")):
        assert client.open(path, method=method, headers=bearer(bob)).status_code == 403, path
    assert len(client.get("/batches", headers=bearer(alice)).get_json()["batches"]) == 1
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}}
    upload = client.post("/v1/files", headers=bearer(alice), data={
        "purpose": "batch", "file": (io.BytesIO(json.dumps(line).encode()), "in.jsonl")})
    file_id = upload.get_json()["id"]
    assert client.get("/v1/files", headers=bearer(bob)).get_json()["data"] == []
    for method, path in (("GET", f"/v1/files/{file_id}"), ("GET", f"/v1/files/{file_id}/content"),
                         ("DELETE", f"/v1/files/{file_id}")):
        assert client.open(path, method=method, headers=bearer(bob)).status_code == 403, path
    stolen = client.post("/v1/batches", headers=bearer(bob), json={
        "input_file_id": file_id, "endpoint": "/v1/chat/completions",
        "completion_window": "24h"})
    assert stolen.status_code == 403
    made = client.post("/v1/batches", headers=bearer(alice), json={
        "input_file_id": file_id, "endpoint": "/v1/chat/completions",
        "completion_window": "24h"}).get_json()
    assert client.get(f"/v1/batches/{made['id']}", headers=bearer(bob)).status_code == 403
    assert client.get("/v1/batches", headers=bearer(bob)).get_json()["data"] == []
    job = secured.extensions["corral"].jobs.search(batch_id=made["id"])
    assert job and job[0].owner == keystore(secured).active("alice").id


# ---- `corral keys` -----------------------------------------------------------------
def test_corral_keys_creates_lists_and_revokes_on_the_services_database(secured, settings,
                                                                        monkeypatch):
    monkeypatch.setenv("CORRAL_DATABASE_URL", settings.database_url)
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", "carol", "--role", "user",
                               "--models", "smollm2,gemma3:270m"])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[0]
    assert secret.startswith("corral-")
    assert "not shown again" in made.stderr
    listed = runner.invoke(cli, ["keys", "list"])
    assert "carol" in listed.output and "smollm2,gemma3:270m" in listed.output
    assert secret not in listed.output
    client = secured.test_client()
    assert client.get("/api/tags", headers=bearer(secret)).status_code == 200
    assert runner.invoke(cli, ["keys", "create", "carol"]).exit_code == 1  # name in use
    revoked = runner.invoke(cli, ["keys", "revoke", "carol"])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert client.get("/api/tags", headers=bearer(secret)).status_code == 401
    assert runner.invoke(cli, ["keys", "revoke", "carol"]).exit_code == 1
    assert "carol" in runner.invoke(cli, ["keys", "list", "--all"]).output


def test_only_a_hash_of_the_key_is_stored(secured):
    secret = new_key(secured, "alice")
    engine = secured.extensions["corral"].db
    with engine.connect() as conn:
        dumped = json.dumps([list(map(str, row)) for row in
                             conn.exec_driver_sql("SELECT * FROM api_keys")])
    assert secret not in dumped and secret[12:] not in dumped


# ---- the official clients ------------------------------------------------------------
@pytest.mark.model
def test_the_ollama_and_openai_clients_run_inference_with_a_user_key(secured, worker):
    secret = new_key(secured, "alice", models=["smollm2"])
    with serving(secured) as host:
        client = ollama.Client(host=host, headers=bearer(secret))
        reply = client.generate(model=MODEL, prompt="Say hi.", options={"num_predict": 4})
        assert reply.response
        with pytest.raises(ollama.ResponseError) as caught:
            ollama.Client(host=host).generate(model=MODEL, prompt="hi")
        assert caught.value.status_code == 401
        api = openai.OpenAI(base_url=f"{host}/v1", api_key=secret, max_retries=0)
        chat = api.chat.completions.create(model=MODEL, max_tokens=4,
                                           messages=[{"role": "user", "content": "hi"}])
        assert chat.choices[0].message.content
        job = secured.extensions["corral"].jobs.recent()[0]
        assert job.owner == keystore(secured).active("alice").id
