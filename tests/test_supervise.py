"""Supervision: `corral serve` restarts a part that dies, answers 503 while Redis is away, and
drains in order on SIGTERM.

The Supervisor is first driven with small real processes (python -c ...), so its backoff, its
giving up and its drain order show without a model; then a real `corral serve` has its worker,
its API and its embedded redis-server SIGKILLed, and the time until a job succeeds again is
printed (measured, not asserted: speed is the benchmarks' business).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cli.serve import Child, Supervisor
from service.core.redis_server import EmbeddedRedis, free_port
from tests.conftest import running_worker, serving
from tests.test_serve import MODEL, Served, port_open
from tests.waiting import wait_until

SLEEP = "import time; time.sleep(120)"


def python(code: str, *args: str) -> Callable[[], subprocess.Popen]:
    """A spawn function for a small real child, in its own process group as serve's are."""
    return lambda: subprocess.Popen([sys.executable, "-c", code, *args], process_group=0)


@contextlib.contextmanager
def supervising(supervisor: Supervisor) -> Iterator[dict[str, int]]:
    """Run `supervisor` in a thread (signals are not needed: stop() is what they call)."""
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.update(code=supervisor.run()), daemon=True)
    thread.start()
    try:
        yield result
    finally:
        supervisor.stop()
        thread.join(30)
        supervisor.drain()
    assert not thread.is_alive()


def restarted(child: Child, old_pid: int) -> bool:
    return child.alive() and child.process.pid != old_pid


def test_a_child_that_dies_is_restarted_with_backoff_and_the_others_keep_running():
    lines: list[str] = []
    supervisor = Supervisor(backoff=0.1, log=lines.append)
    dying = supervisor.add(Child("dying", python(SLEEP)))
    steady = supervisor.add(Child("steady", python(SLEEP)))
    steady_pid = steady.process.pid
    with supervising(supervisor) as result:
        for _ in range(2):
            pid = dying.process.pid
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid: restarted(dying, pid), 10,
                       message="the killed child to restart")
    assert result == {"code": 0}
    assert [line for line in lines if "exited" in line] == [
        "corral: dying exited with -9; restarting in 0.2 s",  # each exit fast: backoff doubles
        "corral: dying exited with -9; restarting in 0.4 s",
    ]
    assert f"corral: dying restarted (pid {dying.process.pid})" in lines
    assert steady.process.pid == steady_pid and steady.process.returncode == -signal.SIGTERM
    assert not dying.alive()


def test_a_child_that_keeps_failing_fast_makes_it_give_up_and_stop_the_rest():
    lines: list[str] = []
    supervisor = Supervisor(backoff=0.05, log=lines.append)
    supervisor.add(Child("broken", python("import sys; sys.exit(3)")))
    steady = supervisor.add(Child("steady", python(SLEEP)))
    with supervising(supervisor) as result:
        wait_until(lambda: "code" in result, 30, message="the supervisor to give up")
    assert result == {"code": 1}
    exits = [line for line in lines if "exited" in line]
    assert exits == [f"corral: broken exited with 3; restarting in {s} s"
                     for s in ("0.1", "0.2", "0.4", "0.8")] + [
        "corral: broken exited with 3, 5 times in a row within 10 s of starting; giving up"]
    assert steady.process.returncode == -signal.SIGTERM  # the rest was stopped


def test_a_child_that_ran_a_while_before_it_exited_starts_its_backoff_over():
    lines: list[str] = []
    supervisor = Supervisor(backoff=0.1, fast_exit=0.3, give_up=2, log=lines.append)
    supervisor.add(Child("flaky", python("import sys, time; time.sleep(0.5); sys.exit(2)")))
    with supervising(supervisor) as result:
        wait_until(lambda: sum("exited" in line for line in lines) >= 3, 30,
                   message=lambda _: f"three exits; log: {lines}")
        assert "code" not in result  # never gives up: no exit was fast
    exits = [line for line in lines if "exited" in line][:3]
    assert exits == ["corral: flaky exited with 2; restarting in 0.1 s"] * 3


# Each stage's children log "<name> term" on SIGTERM, wait `delay` and log "<name> exit".
STAGED = """
import signal, sys, time
log, name, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
def note(text):
    with open(log, "a") as f:
        f.write(f"{name} {text}\\n")
def term(*_):
    note("term")
    time.sleep(delay)
    note("exit")
    sys.exit(0)
signal.signal(signal.SIGTERM, term if delay >= 0 else signal.SIG_IGN)
note("ready")
while True:
    time.sleep(1)
"""


def test_drain_stops_each_stage_before_the_next_and_kills_what_ignores_sigterm(tmp_path):
    log = tmp_path / "log"
    supervisor = Supervisor(log=lambda _: None)
    for name, stage, delay in [("redis", 2, 0), ("api", 0, 0.3), ("worker", 1, 0.3),
                               ("stubborn", 1, -1)]:
        supervisor.add(Child(name, python(STAGED, str(log), name, str(delay)), stage=stage,
                             grace=1.0))
    wait_until(lambda: log.exists() and log.read_text().count("ready") == 4, 30)
    started = time.monotonic()
    supervisor.drain()
    took = time.monotonic() - started
    print(f"\ndrain of 4 children (one ignoring SIGTERM, grace 1 s) took {took:.2f} s")
    notes = [line for line in log.read_text().splitlines() if not line.endswith("ready")]
    assert notes == ["api term", "api exit", "worker term", "worker exit",
                     "redis term", "redis exit"]
    codes = {child.name: child.process.returncode for child in supervisor.children}
    assert codes == {"redis": 0, "api": 0, "worker": 0, "stubborn": -signal.SIGKILL}
    assert took < 20  # bounded: the stubborn one is killed after its grace, not waited for


def test_a_second_signal_during_the_drain_kills_at_once(tmp_path):
    log = tmp_path / "log"
    supervisor = Supervisor(log=lambda _: None)
    stubborn = supervisor.add(Child("stubborn", python(STAGED, str(log), "stubborn", "-1"),
                                    grace=120.0))
    wait_until(lambda: log.exists() and "ready" in log.read_text(), 30)
    draining = threading.Thread(target=supervisor.drain)
    started = time.monotonic()
    draining.start()
    wait_until(lambda: supervisor.stopping, 10)
    supervisor.stop()  # as on_signal does for a second SIGTERM or Ctrl-C
    draining.join(30)
    assert not draining.is_alive() and time.monotonic() - started < 30  # not the 120 s grace
    assert stubborn.process.returncode == -signal.SIGKILL


# The API's answer while Redis is unreachable --------------------------------------------
def test_an_unreachable_redis_is_a_503_with_retry_after_in_both_shapes(settings):
    from service.http.app import create_app

    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = create_app({"TESTING": True}, settings=dataclasses.replace(settings, redis_url=nowhere))
    try:
        client = app.test_client()
        plain = client.post("/api/generate", json={"model": MODEL, "prompt": "Hi"})
        assert plain.status_code == 503 and plain.headers["Retry-After"] == "2"
        assert "Redis" in plain.get_json()["error"]
        openai = client.post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
        assert openai.status_code == 503 and openai.headers["Retry-After"] == "2"
        assert openai.get_json()["error"]["type"] == "server_error"
    finally:
        app.extensions["corral"].close()


def test_celery_failing_to_send_a_task_is_a_503_too(settings):
    """Celery's send_task raises kombu's OperationalError, not redis-py's, once it gives up."""
    from service.http.app import create_app
    from service.http.services import services

    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app({"TESTING": True}, settings=dataclasses.replace(settings, redis_url=nowhere))
    app.add_url_rule("/send", "send", methods=["POST"], view_func=lambda: str(
        services().queue.celery.send_task("corral.generate", args=["x"], queue="cpu")))
    try:
        started = time.monotonic()
        answer = app.test_client().post("/send")
        print(f"\nsend_task to a dead broker failed after {time.monotonic() - started:.1f} s")
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "2"
        assert "Redis" in answer.get_json()["error"]
    finally:
        app.extensions["corral"].close()


# A real `corral serve` -------------------------------------------------------------------
class Supervised(Served):
    """`corral serve` with its stderr in a file, and its children found by what they run."""

    def __init__(self, home: Path, **env: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.stderr_path = home.parent / f"{home.name}.stderr"
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        self.env.update(CORRAL_HOME=str(home), CORRAL_HOST=f"127.0.0.1:{self.port}",
                        CORRAL_NUM_PARALLEL="2", **env)
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"],
                                            env=self.env, stderr=stderr)
        self.url = f"http://127.0.0.1:{self.port}"
        self.redis_port = 0
        self._wait_up()
        url = (home / "redis" / "url").read_text()
        self.redis_port = int(url.rsplit(":", 1)[1].split("/")[0])

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def children(self) -> dict[str, psutil.Process]:
        """serve's live children by role: "redis", "api" (gunicorn's master), "worker"."""
        found = {}
        for proc in psutil.Process(self.process.pid).children():
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                command = " ".join(proc.cmdline())
            except psutil.NoSuchProcess:
                continue
            for role, mark in (("redis", "redis-server"), ("api", "gunicorn"),
                               ("worker", "cli.main worker")):
                if mark in command:
                    found[role] = proc
        return found

    def child(self, role: str, other_than: int | None = None,
              timeout: float = 60) -> psutil.Process:
        """The live child playing `role` (a new one, when other_than names the old pid)."""
        return wait_until(lambda: self.children().get(role), timeout, 0.1,
                          ready=lambda p: p is not None and p.pid != other_than,
                          message=f"a {role} process other than pid {other_than}")


def call(method: str, url: str, body: dict | None = None) -> tuple[int, Any, Any]:
    """(status, headers, JSON body) of one request; a refused connection is status 0."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status, res.headers, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, {}, None


def job_succeeds(served: Supervised, timeout: float = 180) -> dict:
    """Submit a small job (again while the API is away or says 503) and wait for its end."""
    body = {"kind": "generate", "model": MODEL, "prompt": "Hi", "options": {"num_predict": 4}}
    status, _, job = wait_until(lambda: call("POST", served.url + "/jobs", body), timeout, 0.2,
                                ready=lambda answer: answer[0] in (200, 201, 202),
                                message="the API to accept a job")
    job = wait_until(lambda: call("GET", f"{served.url}/jobs/{job['id']}")[2], timeout, 0.2,
                     ready=lambda j: j and j.get("status") in ("succeeded", "failed"),
                     message=f"job {job['id']} to end")
    assert job["status"] == "succeeded" and job["output"], job
    return job


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_file):
    server = Supervised(tmp_path_factory.mktemp("supervised") / "home")
    try:
        created = server.corral("create", MODEL, "--from", str(model_file))
        assert created.returncode == 0, created.stderr
        job_succeeds(server)  # the model is loaded: what follows times recovery, not loading
        yield server
    finally:
        if server.process.poll() is None:
            assert server.stop() == 0
        print(f"\ncorral serve's stderr:\n{server.stderr}")


def test_a_killed_worker_is_restarted_and_takes_new_jobs(served):
    before = served.children()
    worker = before["worker"]
    worker.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    served.child("worker", other_than=worker.pid)
    job_succeeds(served)
    print(f"\nworker SIGKILL: a job succeeded {time.monotonic() - killed:.1f} s after the kill")
    assert served.process.poll() is None
    assert re.search(r"corral: worker exited with -9; restarting in \d+\.\d s", served.stderr)
    now = served.children()
    assert now["api"].pid == before["api"].pid and now["redis"].pid == before["redis"].pid


def test_a_killed_api_is_restarted_and_its_orphans_are_gone(served):
    api = served.children()["api"]
    orphans = api.children()  # gunicorn's worker process
    assert orphans
    api.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    served.child("api", other_than=api.pid)
    job_succeeds(served)
    print(f"\nAPI SIGKILL: a job succeeded {time.monotonic() - killed:.1f} s after the kill")
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in orphans)
    assert re.search(r"corral: api exited with -9; restarting in \d+\.\d s", served.stderr)


def test_while_redis_is_down_the_api_says_503_then_redis_returns_on_its_port(served):
    before = served.children()
    redis_server = before["redis"]
    # Hold serve still, so Redis stays down for as long as the 503s are checked.
    os.kill(served.process.pid, signal.SIGSTOP)
    try:
        redis_server.send_signal(signal.SIGKILL)
        wait_until(lambda: not port_open(served.redis_port), 10)
        for path, body in [("/jobs", {"kind": "generate", "model": MODEL, "prompt": "Hi"}),
                           ("/api/generate", {"model": MODEL, "prompt": "Hi"})]:
            status, headers, answer = call("POST", served.url + path, body)
            assert status == 503, (path, status, answer)
            assert headers["Retry-After"] == "2" and "Redis" in answer["error"]
    finally:
        os.kill(served.process.pid, signal.SIGCONT)
    resumed = time.monotonic()
    new = served.child("redis", other_than=redis_server.pid)
    job_succeeds(served)
    print(f"\nredis SIGKILL (serve held for the 503s): a job succeeded "
          f"{time.monotonic() - resumed:.1f} s after serve could see the kill")
    assert not psutil.pid_exists(redis_server.pid)  # reaped: no zombie left behind
    assert any(c.laddr.port == served.redis_port and c.status == psutil.CONN_LISTEN
               for c in new.net_connections("tcp"))  # the same port: clients' URLs hold
    now = served.children()  # the same worker consumes again: Celery reconnected by itself
    assert now["worker"].pid == before["worker"].pid and now["api"].pid == before["api"].pid


def test_a_killed_redis_is_back_and_serving_jobs_again(served):
    redis_server = served.children()["redis"]
    redis_server.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    job_succeeds(served)
    print(f"\nredis SIGKILL: a job succeeded {time.monotonic() - killed:.1f} s after the kill")
    assert served.children()["redis"].pid != redis_server.pid


def test_sigterm_drains_everything_and_exits_0(served):
    """The API stops first; the worker still finishes the job it is running (warm shutdown)."""
    body = {"kind": "generate", "model": MODEL, "prompt": "Write a long story about a dragon.",
            "options": {"num_predict": 8}}  # short: it must end within the worker's grace
    status, _, job = call("POST", served.url + "/jobs", body)
    assert status in (200, 201, 202), job
    wait_until(lambda: call("GET", f"{served.url}/jobs/{job['id']}")[2], 60, 0.05,
               ready=lambda j: j and j.get("status") != "queued", message="the job to start")
    family = psutil.Process(served.process.pid).children(recursive=True)
    assert len(family) >= 4  # redis, gunicorn's master and worker, the Celery worker
    started = time.monotonic()
    assert served.stop() == 0
    print(f"\nSIGTERM with a job running: corral serve exited 0 after "
          f"{time.monotonic() - started:.1f} s")
    gone, alive = psutil.wait_procs(family, timeout=5)
    assert not alive
    assert not port_open(served.port) and not port_open(served.redis_port)
    home = Path(served.env["CORRAL_HOME"])
    assert not (home / "redis" / "url").exists()
    with contextlib.closing(sqlite3.connect(home / "corral.db")) as db:
        [(state, output)] = db.execute("SELECT status, output FROM jobs WHERE id = ?",
                                       (job["id"],)).fetchall()
    assert state == "succeeded" and output


def test_a_killed_serve_takes_its_children_with_it(tmp_path):
    """SIGKILL leaves serve no time to drain; Linux's parent-death signal stops the rest."""
    served = Supervised(tmp_path / "home")
    family = psutil.Process(served.process.pid).children(recursive=True)
    served.process.kill()
    served.process.wait()
    started = time.monotonic()
    gone, alive = psutil.wait_procs(family, timeout=30)
    print(f"\nserve SIGKILL: its {len(family)} processes were gone "
          f"{time.monotonic() - started:.1f} s later")
    for proc in alive:
        proc.kill()
    assert not alive and not port_open(served.port) and not port_open(served.redis_port)


def test_a_worker_that_keeps_dying_fast_makes_serve_give_up(tmp_path):
    served = Supervised(tmp_path / "home")
    killed: set[int] = set()
    family: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while served.process.poll() is None and len(killed) < 8 and time.monotonic() < deadline:
            worker = served.children().get("worker")
            if worker is not None and worker.pid not in killed:
                family = psutil.Process(served.process.pid).children(recursive=True)
                worker.send_signal(signal.SIGKILL)  # as soon as each new worker appears
                killed.add(worker.pid)
            time.sleep(0.05)
        code = served.process.wait(60)
    finally:
        if served.process.poll() is None:
            served.stop()
    print(f"\ncorral serve's stderr:\n{served.stderr}")
    assert code == 1 and len(killed) in (5, 6)  # 6: the first worker had run 10 s already
    assert "worker exited with -9, 5 times in a row within 10 s of starting; giving up" in \
        served.stderr
    gone, alive = psutil.wait_procs(family, timeout=5)
    assert not alive and not port_open(served.port) and not port_open(served.redis_port)


def test_the_api_can_hold_a_redis_connection_for_every_request_thread(settings):
    """Each open stream holds a pub/sub connection: redis-py's default pool (100) refused the
    101st stream with 'Too many connections' once the API served more threads than that."""
    from service.http.services import build_services

    services = build_services(dataclasses.replace(settings, http_threads=300))
    try:
        assert services.redis.connection_pool.max_connections > 2 * 300
    finally:
        services.close()


# A stream open when Redis dies -----------------------------------------------------------
LONG = "Write a very long story about a dragon who learns to count, with many chapters."


@contextlib.contextmanager
def served_over_http(app) -> Iterator[int]:
    """`app` on a free loopback port (tests.conftest.serving); yields the port."""
    with serving(app) as url:
        yield int(url.rsplit(":", 1)[1])


def open_stream(port: int, method: str, path: str, body: dict | None = None
                ) -> http.client.HTTPResponse:
    """Send one request and return its response, headers read, body still to stream."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    return response


def lines_until(response: http.client.HTTPResponse, wanted: Callable[[str], bool],
                or_end: bool = False) -> list[str]:
    """Read non-blank lines until one is `wanted`; return them (at the end of the body: fail,
    or return what came when `or_end`)."""
    lines = []
    while True:
        line = response.readline().decode()
        if not line and or_end:
            return lines
        assert line, f"the stream ended before the line awaited; it sent {lines}"
        if line.strip():
            lines.append(line.strip())
            if wanted(line.strip()):
                return lines


def rest_of(response: http.client.HTTPResponse) -> list[str]:
    """The stream's remaining non-blank lines, read until the server ends it."""
    return [line.strip() for line in response.read().decode().splitlines() if line.strip()]


@pytest.fixture
def own_redis(tmp_path) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own, to kill and restart (on its port, as `corral serve`
    does), with an append-only file as corral serve's has; the session's is shared."""
    server = EmbeddedRedis(tmp_path / "own-redis").start()
    yield server
    server.stop()


@dataclasses.dataclass
class Streams:
    """One job streamed by Ollama's NDJSON, one by OpenAI's SSE and followed natively too."""

    ndjson: http.client.HTTPResponse
    openai: http.client.HTTPResponse
    native: http.client.HTTPResponse
    openai_job: str
    seen: dict[str, list[str]]  # each stream's lines so far


TEXT = {"ndjson": lambda line: bool(json.loads(line).get("response")),
        "openai": lambda line: '"content"' in line,
        "native": lambda line: line == "event: token"}  # a line that carries text


def open_three_streams(port: int, tokens: int) -> Streams:
    """Start both jobs and read each stream to its first text, so a kill cuts them mid-way."""
    options = {"num_predict": tokens, "temperature": 0}
    ndjson = open_stream(port, "POST", "/api/generate",
                         {"model": MODEL, "prompt": LONG, "options": options})
    openai = open_stream(port, "POST", "/v1/chat/completions", {
        "model": MODEL, "stream": True, "max_tokens": tokens, "temperature": 0,
        "messages": [{"role": "user", "content": LONG}]})
    seen = {"ndjson": lines_until(ndjson, TEXT["ndjson"]),
            "openai": lines_until(openai, TEXT["openai"])}
    job_id = json.loads(seen["openai"][-1][6:])["id"].removeprefix("chatcmpl-")
    native = open_stream(port, "GET", f"/jobs/{job_id}/events")
    seen["native"] = lines_until(native, TEXT["native"])
    return Streams(ndjson, openai, native, job_id, seen)


def read_to_the_end(streams: Streams) -> dict[str, list[str]]:
    """Every stream's lines, from the first, once the server has ended it."""
    return {name: streams.seen[name] + rest_of(getattr(streams, name))
            for name in ("ndjson", "openai", "native")}


def kill(server: EmbeddedRedis) -> float:
    """SIGKILL the redis-server (no chance to say goodbye); when it died."""
    server.process.kill()
    server.process.wait()
    return time.monotonic()


def streamed_text(name: str, lines: list[str]) -> str:
    """The text a stream carried, in its face's shape."""
    if name == "ndjson":
        return "".join(json.loads(line).get("response", "") for line in lines)
    if name == "openai":
        blocks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        return "".join(b["choices"][0]["delta"].get("content") or "" for b in blocks
                       if b.get("choices"))
    data = [json.loads(line[6:]) for kind, line in zip(lines, lines[1:], strict=False)
            if kind == "event: token"]
    return "".join(d["text"] for d in data)


@pytest.fixture
def redis_app(settings, own_redis):
    """The app, against own_redis, with a short lease so handed-back jobs are sent again soon."""
    from service.http.app import create_app

    settings = dataclasses.replace(settings, redis_url=own_redis.url, lease=3.0)
    app = create_app({"TESTING": True}, settings=settings)
    yield app
    app.extensions["corral"].close()


def test_streams_carry_on_when_redis_is_back_within_the_grace(redis_app, own_redis):
    """Each follower reads the job's log again after its last event and goes on. A job whose
    worker rode out the loss goes on as if nothing happened (here until it is cancelled, its
    partial output kept); one whose worker gave up on Redis starts over, and a face that sent
    text already ends with its error line instead."""
    from service.http.relay import LOST_MID_STREAM

    settings = redis_app.extensions["corral"].settings
    jobs = redis_app.extensions["corral"].jobs
    with served_over_http(redis_app) as port, running_worker(settings):
        streams = open_three_streams(port, 3000)
        before = {name: len(seen) for name, seen in streams.seen.items()}
        killed = kill(own_redis)
        own_redis.start()  # back at once on its port, as corral serve brings it back
        with running_worker(settings):  # for a job handed back (see the test below)
            for name in streams.seen:  # text after the kill (or the stream's end)
                streams.seen[name] += lines_until(getattr(streams, name), TEXT[name], True)
            for job in jobs.search(limit=10):  # no need to wait for 3,000 tokens
                call("DELETE", f"http://127.0.0.1:{port}/jobs/{job.id}")
            lines = read_to_the_end(streams)
        print(f"\nredis SIGKILL and restart mid-stream: the streams ended "
              f"{time.monotonic() - killed:.1f} s after the kill; last lines: "
              f"{[lines[name][-1][:80] for name in lines]}")
    [ollama_job] = [job.id for job in jobs.search(limit=10) if job.id != streams.openai_job]
    for name, job_id in (("ndjson", ollama_job), ("openai", streams.openai_job),
                         ("native", streams.openai_job)):
        job, last = jobs.get(job_id), lines[name][-1]
        print(f"{name}: job {job.status} after {job.attempts} attempt(s)")
        if job.attempts > 1:  # handed back: started over, with a `retrying` event first
            assert name == "native" or LOST_MID_STREAM in last, (name, last)
            assert name != "native" or '"status": "retrying"' in "".join(lines[name])
            continue
        assert job.status == "cancelled" and job.output, (name, job.status)  # partial, kept
        assert any(map(TEXT[name], lines[name][before[name]:])), name  # it went on
        assert {"ndjson": '"done": true', "openai": "data: [DONE]",
                "native": '"done_reason"'}[name] in last, (name, last)
        assert streamed_text(name, lines[name]) == job.output, name  # nothing lost or twice


def test_streams_cut_by_a_redis_that_stays_away_end_with_an_error_line(redis_app, own_redis):
    from service.jobs.events import Subscriber, retrying

    settings = redis_app.extensions["corral"].settings
    jobs = redis_app.extensions["corral"].jobs
    with served_over_http(redis_app) as port:
        with running_worker(settings):
            streams = open_three_streams(port, 3000)
            killed = kill(own_redis)
            lines = read_to_the_end(streams)  # Redis stays down until the streams have ended
            print(f"\nredis SIGKILL mid-stream, not restarted: the streams ended "
                  f"{time.monotonic() - killed:.1f} s after the kill")
            for name in lines:
                print(f"{name}: {lines[name][-2:] if name == 'native' else lines[name][-1]}")
            own_redis.start()  # (the in-process worker may not outlive its broker: a new one
            # takes the jobs below; `corral serve`'s Celery worker reconnects by itself)

        last = json.loads(lines["ndjson"][-1])
        assert list(last) == ["error"] and "Redis" in last["error"]
        assert "still recorded" in last["error"]
        assert lines["openai"][-1].startswith("data: {") and "[DONE]" not in lines["openai"]
        error = json.loads(lines["openai"][-1][6:])["error"]
        assert error["type"] == "server_error" and "Redis" in error["message"]
        assert streams.openai_job in error["message"]
        assert lines["native"][-2] == "event: error" and lines["native"][-1].startswith("data:")
        assert "Redis" in json.loads(lines["native"][-1][6:])["error"]
        assert not lines["native"][-3].startswith("id:")  # not in the job's log

        # Not lost: the worker gave up on Redis and handed both jobs back; once Redis is
        # back, each is sent again and starts over, and its log says so.
        ids = [job.id for job in jobs.search(limit=10)]
        assert len(ids) == 2 and all(jobs.get(i).status == "queued" for i in ids)
        with running_worker(settings):
            rows = wait_until(lambda: [jobs.get(i) for i in ids], 120, 0.2,
                              ready=lambda rows: all(r.status == "running" and r.attempts == 2
                                                     or r.status == "succeeded" for r in rows),
                              message=lambda rows: f"both jobs to run again: "
                                                   f"{[(r.status, r.attempts) for r in rows]}")
            client = redis_app.extensions["corral"].redis
            for i in ids:
                assert any(retrying(event) for event in Subscriber(client, i).replay())
                call("DELETE", f"http://127.0.0.1:{port}/jobs/{i}")  # not 3,000 tokens again
            wait_until(lambda: all(jobs.get(i).status in ("cancelled", "succeeded")
                                   for i in ids), 60, 0.2, message="the jobs to stop")
        assert not any(row.status == "failed" for row in rows)
