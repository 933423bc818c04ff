"""The front door: what a local service refuses (foreign Host, foreign Origin, non-JSON bodies,
oversized and absurdly nested JSON) while curl, the official SDKs and local pages still work.

Refusals are checked through the app (test client) and, where the wire matters (a rebinding
browser's Host, chunked bodies, gunicorn's own limits), over real HTTP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import io
import json
import os
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from cli.serve import web_command
from service.access.keys import Role
from service.core.redis_server import free_port
from service.http.app import create_app
from service.http.front_door import host_name, loopback_bind
from service.models.store import ModelStore
from tests.conftest import openai_client
from tests.waiting import wait_until

MODEL = "smollm2:135m"
EVIL = "https://evil.example"


def jobs(app) -> list:
    return app.extensions["corral"].jobs.recent()


def send(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, chunked: bool = False) -> tuple[int, Any]:
    """One raw HTTP request to 127.0.0.1:port with exactly these headers (Host included);
    the status and the decoded JSON answer (None for an empty one: never HTML)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        elif body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body is not None:
            conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body)
        res = conn.getresponse()
        raw = res.read()
        if not raw:
            return res.status, None
        assert res.getheader("Content-Type", "").startswith("application/json"), raw[:200]
        return res.status, json.loads(raw)
    finally:
        conn.close()


# Host ------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", [
    "localhost", "localhost:11434", "127.0.0.1:11434", "127.1.2.3", "[::1]:11434", "0.0.0.0",
    "10.1.2.3", "172.16.0.9:11434", "192.168.1.20", "[fd00::7]:80", "ui.localhost:3000",
    "printer.local", "corral.internal", "LOCALHOST", socket.gethostname(), ""])
def test_local_hosts_are_admitted_on_a_loopback_bind(client, host):
    res = client.get("/api/version", headers={"Host": host})
    assert res.status_code == 200, res.get_json()


@pytest.mark.parametrize("host", [
    "evil.example", "evil.example:11434", "localhost.evil.example", "internal.example",
    "8.8.8.8", "[2001:4860:4860::8888]:11434", "172.32.0.1", "evil.localhost.example"])
def test_foreign_hosts_are_refused_on_a_loopback_bind(client, host):
    res = client.get("/api/tags", headers={"Host": host})
    assert res.status_code == 403
    assert f"host '{host_name(host)}' is not allowed" in res.get_json()["error"]


def test_a_refused_host_under_v1_keeps_openais_error_shape(client):
    res = client.post("/v1/chat/completions", json={"model": MODEL, "messages": []},
                      headers={"Host": "evil.example"})
    assert res.status_code == 403
    assert res.get_json()["error"]["type"] == "invalid_request_error"
    assert "evil.example" in res.get_json()["error"]["message"]


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "203.0.113.7"])
def test_any_host_is_admitted_when_the_api_listens_beyond_loopback(make_app, bind):
    """Beyond loopback the Host is not checked; the API key is (tests/test_access.py)."""
    app = make_app(host=bind)
    key = app.extensions["corral"].keys.create("admin", Role.ADMIN)[1]
    answer = app.test_client().get("/api/tags", headers={"Host": "evil.example:11434",
                                                         "Authorization": f"Bearer {key}"})
    assert answer.status_code == 200


@pytest.mark.parametrize(("bind", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.5", False), ("myhost", False)])
def test_only_a_loopback_bind_checks_hosts(bind, loopback):
    assert loopback_bind(bind) is loopback


# Origin ----------------------------------------------------------------------------------
@pytest.fixture
def writable(settings, tmp_path, model_file):
    """Settings whose store is this test's own (so a delete that gets through harms nothing)."""
    store = ModelStore(tmp_path / "models")
    store.create(MODEL, store.import_file(model_file))
    return dataclasses.replace(settings, models=store.root)


def test_a_dns_rebinding_delete_deletes_nothing(writable):
    """evil.example resolves to 127.0.0.1: the browser connects here, with its own Host."""
    app = create_app({"TESTING": True}, settings=writable)
    body = json.dumps({"model": MODEL}).encode()
    try:
        with openai_client(app) as api:
            port = api.base_url.port
            for headers in (
                    {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
                    {"Host": f"evil.example:{port}"},  # the Host check alone
                    {"Host": f"127.0.0.1:{port}", "Origin": "http://evil.example"}):  # Origin
                status, answer = send(port, "DELETE", "/api/delete", body,
                                      {**headers, "Content-Type": "application/json"})
                assert status == 403 and "not allowed" in answer["error"]
                assert [m.id for m in api.models.list()] == [MODEL]
            status, _ = send(port, "DELETE", "/api/delete", body,
                             {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"})
            assert status == 200 and [m.id for m in api.models.list()] == []
    finally:
        app.extensions["corral"].close()


def test_a_cross_site_simple_post_queues_no_job(app, client):
    job = json.dumps({"kind": "generate", "model": MODEL, "prompt": "Hi"})
    res = client.post("/jobs", data=job, content_type="text/plain;charset=UTF-8",
                      headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
    assert res.status_code == 403 and EVIL in res.get_json()["error"]
    form = client.post("/jobs", data=job, content_type="application/x-www-form-urlencoded",
                       headers={"Origin": EVIL})
    assert form.status_code == 403
    assert jobs(app) == []


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_every_state_changing_method_from_a_foreign_origin_is_refused(client, method):
    res = client.open("/api/delete", method=method, json={"model": "x"},
                      headers={"Origin": EVIL})
    assert res.status_code == 403


def test_reads_from_a_foreign_origin_pass_without_cors_headers(client):
    res = client.get("/api/tags", headers={"Origin": EVIL})
    assert res.status_code == 200 and "Access-Control-Allow-Origin" not in res.headers


def test_allowed_origins_may_post_json(make_app):
    app = make_app(origins=("https://ui.example",))
    client = app.test_client()
    for origin in ("http://localhost:3000", "https://ui.example"):
        res = client.post("/jobs", json={"kind": "generate", "model": MODEL, "prompt": "Hi"},
                          headers={"Origin": origin, "Sec-Fetch-Site": "same-site"})
        assert res.status_code == 202, res.get_json()
        assert res.headers["Access-Control-Allow-Origin"] == origin
    assert len(jobs(app)) == 2


# Content-Type ----------------------------------------------------------------------------
SHOW = json.dumps({"model": "missing"})  # a 404 naming the model shows the body was read


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "Application/JSON",
    "application/vnd.corral+json", "application/x-www-form-urlencoded", None])
def test_json_and_curls_form_type_are_read_as_json(client, content_type):
    res = client.post("/api/show", data=SHOW, content_type=content_type)
    assert res.status_code == 404 and "missing" in res.get_json()["error"]


@pytest.mark.parametrize(("content_type", "headers"), [
    ("text/plain", {}),
    ("multipart/form-data; boundary=x", {}),
    ("application/x-ndjson", {}),
    ("application/x-www-form-urlencoded", {"Origin": "http://localhost:3000"}),
    ("application/x-www-form-urlencoded", {"Sec-Fetch-Site": "same-origin"}),
    (None, {"Origin": "http://localhost:3000"}),
])
def test_other_bodies_are_415_naming_the_content_type(client, content_type, headers):
    res = client.post("/api/show", data=SHOW, content_type=content_type, headers=headers)
    assert res.status_code == 415
    assert "Content-Type" in res.get_json()["error"]
    assert "application/json" in res.get_json()["error"]


def test_415_under_v1_keeps_openais_error_shape(app, client):
    res = client.post("/v1/chat/completions", content_type="text/plain",
                      data=json.dumps({"model": MODEL, "messages": [{"role": "user",
                                                                     "content": "Hi"}]}))
    assert res.status_code == 415
    assert set(res.get_json()["error"]) == {"message", "type", "param", "code"}
    assert jobs(app) == []


def test_an_empty_body_is_still_an_empty_object(client):
    res = client.post("/api/show", data="", content_type="text/plain")
    assert res.status_code == 400 and "'model'" in res.get_json()["error"]


# Size ------------------------------------------------------------------------------------
def test_a_json_body_over_the_limit_is_413_and_queues_nothing(make_app):
    app = make_app(max_request_bytes=1000)
    client = app.test_client()
    small = {"model": MODEL, "prompt": "Hi", "stream": False}
    assert client.post("/api/show", json={"model": "missing"}).status_code == 404
    res = client.post("/api/generate", json={**small, "prompt": "x" * 2000})
    assert res.status_code == 413
    assert "CORRAL_MAX_REQUEST_BYTES" in res.get_json()["error"]
    assert jobs(app) == []


def test_a_chunked_body_over_the_limit_is_413_over_http(make_app):
    app = make_app(max_request_bytes=1000)
    with openai_client(app) as api:
        port = api.base_url.port
        headers = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"}
        body = json.dumps({"model": MODEL, "prompt": "x" * 2000}).encode()
        status, answer = send(port, "POST", "/api/generate", body, headers, chunked=True)
        assert status == 413 and "CORRAL_MAX_REQUEST_BYTES" in answer["error"]
        exactly = b'{"model": "missing", "x": "%s"}' % (b"y" * 971)
        assert len(exactly) == 1000
        status, answer = send(port, "POST", "/api/show", exactly, headers, chunked=True)
        assert status == 404 and "missing" in answer["error"]  # read whole: at the limit
        status, answer = send(port, "POST", "/api/show", exactly + b" ", headers, chunked=True)
        assert status == 413
        with pytest.raises(openai.APIStatusError) as caught:
            api.chat.completions.create(model=MODEL,
                                        messages=[{"role": "user", "content": "x" * 2000}])
        assert caught.value.status_code == 413
    assert jobs(app) == []


def test_uploads_keep_their_own_limit(make_app, tmp_path):
    app = make_app(max_request_bytes=1000, models=tmp_path / "models")
    client = app.test_client()
    blob = os.urandom(5000)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    res = client.post(f"/api/blobs/{digest}", data=blob,
                      content_type="application/octet-stream")
    assert res.status_code == 201
    with openai_client(app) as api:
        line = {"custom_id": "q", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": MODEL, "messages": [{"role": "user", "content": "x" * 2000}]}}
        text = json.dumps(line) + "\n"
        uploaded = api.files.create(file=("big.jsonl", io.BytesIO(text.encode())),
                                    purpose="batch")
        assert uploaded.bytes == len(text)


# Nesting ---------------------------------------------------------------------------------
def nested(depth: int) -> str:
    """JSON arrays nested `depth` deep."""
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("path", ["/api/chat", "/jobs", "/v1/chat/completions"])
@pytest.mark.parametrize("deep", [
    "[" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000,
    # parsed whole, but deep enough to break the code behind the parser (asdict, here)
    f'{{"model": "{MODEL}", "stream": false, "messages": [], "format": {nested(500)}}}'])
def test_absurdly_nested_json_is_400_naming_the_body(app, client, path, deep):
    res = client.post(path, data=deep, content_type="application/json")
    assert res.status_code == 400
    error = res.get_json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert "JSON body" in message and "nested deeper than 100 levels" in message
    assert jobs(app) == []


def test_100_levels_are_read_and_101_are_not(client):
    def show(depth: int):  # the body object is the first level
        return client.post("/api/show", content_type="application/json",
                           data=f'{{"model": "missing", "x": {nested(depth - 1)}}}')

    assert show(100).status_code == 404
    assert show(101).status_code == 400


# The clients that work today still do ---------------------------------------------------
def test_the_openai_client_and_curl_d_still_work(app, worker):
    with openai_client(app) as api:
        answer = api.chat.completions.create(
            model=MODEL, max_tokens=4, temperature=0,
            messages=[{"role": "user", "content": "Say yes."}])
        assert answer.choices[0].message.content
        port = api.base_url.port
        # curl http://localhost:11434/api/generate -d '{...}', header for header
        body = json.dumps({"model": MODEL, "prompt": "Say yes.", "stream": False,
                           "options": {"num_predict": 4, "temperature": 0}}).encode()
        status, reply = send(port, "POST", "/api/generate", body, {
            "Host": f"localhost:{port}", "User-Agent": "curl/8.5.0", "Accept": "*/*",
            "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200 and reply["done"] and reply["response"]


# gunicorn, as `corral serve` runs it ------------------------------------------------------
@contextlib.contextmanager
def gunicorn_served(settings) -> Iterator[int]:
    """gunicorn started with `corral serve`'s command line on a free port; yields the port."""
    port = free_port()
    served = dataclasses.replace(settings, port=port)
    env = {**os.environ, "CORRAL_HOST": f"127.0.0.1:{port}",
           "CORRAL_REDIS_URL": settings.redis_url, "CORRAL_DATABASE_URL": settings.database_url,
           "CORRAL_MODELS": str(settings.models)}
    web = subprocess.Popen(web_command(served), env=env)
    try:
        def up() -> bool:
            assert web.poll() is None, "gunicorn exited early"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as res:
                    return res.status == 200
            except OSError:
                return False

        wait_until(up, 60, 0.2, message="gunicorn to answer")
        yield port
    finally:
        web.terminate()
        web.wait(30)


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as bytes on a new connection; (status, headers, body) of the answer,
    read to the end (gunicorn closes the connection after refusing a request)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip()
               for name, _, value in (field.partition(":") for field in fields)}
    return int(status_line.split()[1]), headers, body


def test_gunicorn_lets_a_long_digest_and_big_cookies_reach_flask(settings):
    with gunicorn_served(settings) as port:
        host = {"Host": f"127.0.0.1:{port}"}
        status, answer = send(port, "POST", "/api/blobs/sha256:" + "a" * 5000, b"", host)
        assert status == 400 and "invalid digest" in answer["error"]
        cookies = "; ".join(f"c{n}={'v' * 1000}" for n in range(20))  # ~20 KB from localhost
        status, answer = send(port, "GET", "/api/version", None, {**host, "Cookie": cookies})
        assert status == 200 and answer["version"]


def test_requests_gunicorn_refuses_itself_are_answered_in_json(settings):
    """What never reaches Flask (gunicorn cannot parse it, or it is over gunicorn's limits)
    is still `{"error": ...}` JSON with a 4xx, not gunicorn's HTML page."""
    host = b"Host: 127.0.0.1\r\n"
    cases = {
        "request line over 8190 bytes": (
            b"GET /api/version?" + b"a" * 9000 + b" HTTP/1.1\r\n" + host + b"\r\n", 414),
        "garbage request line": (b"NONSENSE\r\n" + host + b"\r\n", 400),
        "invalid header": (b"GET /api/version HTTP/1.1\r\n" + host + b"Bad Header: x\r\n\r\n",
                           400),
        "header field over 32 KiB": (
            b"GET /api/version HTTP/1.1\r\n" + host + b"X-Big: " + b"v" * 40000 + b"\r\n\r\n",
            431),
        "too many header fields": (
            b"GET /api/version HTTP/1.1\r\n" + host
            + b"".join(b"X-%d: v\r\n" % n for n in range(200)) + b"\r\n", 431),
    }
    with gunicorn_served(settings) as port:
        for name, (request, expected) in cases.items():
            status, headers, body = raw_exchange(port, request)
            assert status == expected, (name, status, body[:200])
            assert headers["content-type"] == "application/json", (name, headers)
            assert int(headers["content-length"]) == len(body), name
            error = json.loads(body)["error"]
            assert isinstance(error, str) and error, name
            print(f"\n{name}: {status} {body[:160].decode()}")
        # The worker still serves what follows on new connections.
        assert send(port, "GET", "/api/version", None, {"Host": f"127.0.0.1:{port}"})[0] == 200
