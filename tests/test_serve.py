"""`corral serve` as a user runs it: embedded redis-server, gunicorn, one worker, real clients.

These tests start the real processes (no in-process shortcuts), so they show the path a user
gets: the official `ollama` client and corral's own CLI against a running service.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import ollama
import pytest

from service.core.redis_server import free_port
from tests.waiting import wait_until

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 10}


class Served:
    """One `corral serve` process and the environment its clients use."""

    def __init__(self, home: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        self.env.update(CORRAL_HOME=str(home), CORRAL_HOST=f"127.0.0.1:{self.port}",
                        CORRAL_NUM_PARALLEL="2")
        self.env.update(env)  # may override the defaults above
        self.process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", *args],
                                        env=self.env)
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_up()

    def _wait_up(self, timeout: float = 60.0) -> None:
        def up() -> bool:
            assert self.process.poll() is None, "corral serve exited early"
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1) as res:
                    return res.read() == b"corral is running"
            except OSError:
                return False

        wait_until(up, timeout, 0.2, message=f"corral serve to answer at {self.url}")

    def corral(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli.main", *args], env=self.env,
                              input=stdin, capture_output=True, text=True, timeout=300)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_file):
    server = Served(tmp_path_factory.mktemp("served"))
    try:
        created = server.corral("create", MODEL, "--from", str(model_file))
        assert created.returncode == 0, created.stderr
        yield server
    finally:
        assert server.stop() == 0


def test_ollama_client_lists_generates_and_chats(served):
    client = ollama.Client(host=served.url)
    assert [m.model for m in client.list().models] == [MODEL]
    whole = client.generate(model=MODEL, prompt="Say yes.", options=GREEDY)
    assert whole.done and whole.response.strip() and whole.eval_count > 0
    parts = list(client.generate(model=MODEL, prompt="Say yes.", options=GREEDY, stream=True))
    assert "".join(p.response for p in parts) == whole.response
    messages = [{"role": "system", "content": "You answer in one word."},
                {"role": "user", "content": "What is the capital of France?"}]
    chat = client.chat(model=MODEL, messages=messages, options=GREEDY)
    assert "paris" in chat.message.content.lower()
    streamed = list(client.chat(model=MODEL, messages=messages, options=GREEDY, stream=True))
    assert "".join(p.message.content for p in streamed) == chat.message.content
    assert streamed[-1].done and streamed[-1].eval_count == chat.eval_count


def test_ollama_client_sees_a_404_for_an_unknown_model(served):
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=served.url).generate(model="missing", prompt="x")
    assert info.value.status_code == 404 and "not found" in info.value.error


def test_cli_run_streams_an_answer(served):
    result = served.corral("run", MODEL, "What is the capital of France?", "--temperature", "0",
                           "--num-predict", "10", "--system", "You answer in one word.")
    assert result.returncode == 0, result.stderr
    assert "paris" in result.stdout.lower()


def test_cli_batch_submit_writes_results_in_input_order(served, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    lines = [{"prompt": f"Repeat the number {n}.", "options": {"num_predict": 8}}
             for n in range(6)]
    lines.insert(2, {"messages": [{"role": "user", "content": "Say hi."}],
                     "options": {"num_predict": 8}})
    prompts.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    out = tmp_path / "out.jsonl"
    result = served.corral("batch", "submit", str(prompts), "--model", MODEL, "--wait",
                           "-o", str(out))
    assert result.returncode == 0, result.stderr
    results = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["line"] for r in results] == list(range(1, 8))
    assert all(r["status"] == "succeeded" and r["output"] for r in results)
    assert all(0 < r["eval_count"] <= 8 for r in results)
    assert "tokens/s" in result.stderr


def test_cli_reports_service_errors_without_a_trace(served):
    result = served.corral("run", "missing", "hello")
    assert result.returncode == 1
    assert "model 'missing' not found" in result.stderr and "Traceback" not in result.stderr


def test_queued_jobs_survive_a_restart_and_sigterm_stops_everything(tmp_path, model_file):
    home = tmp_path / "restart"
    first = Served(home, "--no-worker")
    try:
        assert first.corral("create", MODEL, "--from", str(model_file)).returncode == 0
        body = json.dumps({"kind": "generate", "model": MODEL, "prompt": "Hi",
                           "options": {"num_predict": 4}}).encode()
        req = urllib.request.Request(first.url + "/jobs", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        job_id = json.loads(urllib.request.urlopen(req).read())["id"]
        redis_port = int((home / "redis" / "url").read_text().rsplit(":", 1)[1].split("/")[0])
    finally:
        assert first.stop() == 0
    assert not port_open(first.port) and not port_open(redis_port)

    second = Served(home)
    try:
        job = wait_until(
            lambda: json.loads(urllib.request.urlopen(f"{second.url}/jobs/{job_id}").read()),
            120, 0.3, ready=lambda job: job["status"] in ("succeeded", "failed"),
            message=f"the queued job {job_id} to run after the restart")
        assert job["status"] == "succeeded" and job["output"]
    finally:
        assert second.stop() == 0


def test_keys_made_with_the_cli_let_clients_in_and_keep_others_out(tmp_path, model_file):
    """`corral serve` with CORRAL_AUTH=required, as an operator starts it: the first admin key
    comes from `corral keys create` while the API already refuses keyless requests."""
    server = Served(tmp_path / "keys", "--no-worker", CORRAL_AUTH="required")
    try:
        refused = server.corral("list")
        assert refused.returncode == 1 and "API key is required" in refused.stderr
        made = server.corral("keys", "create", "ops", "--role", "admin")
        assert made.returncode == 0, made.stderr
        admin = made.stdout.strip()
        user = server.corral("keys", "create", "alice", "--models", "smollm2").stdout.strip()
        with_admin = {**server.env, "CORRAL_API_KEY": admin}
        created = subprocess.run([sys.executable, "-m", "cli.main", "create", MODEL, "--from",
                                  str(model_file)], env=with_admin, capture_output=True,
                                 text=True, timeout=300)
        assert created.returncode == 0, created.stderr
        models = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {user}"})
        assert [m.model for m in models.list().models] == [MODEL]
        with pytest.raises(ollama.ResponseError) as caught:
            models.delete(MODEL)
        assert caught.value.status_code == 403
        with pytest.raises(ollama.ResponseError) as caught:
            ollama.Client(host=server.url, headers={"Authorization": "Bearer nope"}).list()
        assert caught.value.status_code == 401
        assert server.corral("keys", "revoke", "alice").returncode == 0
        with pytest.raises(ollama.ResponseError) as caught:
            models.list()
        assert caught.value.status_code == 401
    finally:
        assert server.stop() == 0


# Model management with the official client and corral's CLI ------------------------------
@pytest.fixture(scope="module")
def registry(model_file):
    """A loopback Ollama registry publishing SmolLM2 as smollm2:135m."""
    from tests.registry_server import Loopback

    server = Loopback().start()
    server.add_model("library/smollm2", "135m", model_file)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served_models(tmp_path_factory, registry):
    """`corral serve` with an empty store whose registry.ollama.ai is the loopback one."""
    server = Served(tmp_path_factory.mktemp("models"),
                    CORRAL_REGISTRY_MIRRORS=f"registry.ollama.ai={registry.url}")
    try:
        yield server
    finally:
        assert server.stop() == 0


def test_ollama_client_lists_pulls_creates_shows_copies_runs_and_deletes(served_models,
                                                                        tmp_path):
    from tests.test_store import tiny

    client = ollama.Client(host=served_models.url)
    progress = list(client.pull(MODEL, insecure=True, stream=True))
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    assert any(p.digest and p.total and p.completed == p.total for p in progress)
    assert MODEL in [m.model for m in client.list().models]
    assert client.pull(MODEL, insecure=True).status == "success"  # again, whole: nothing new

    assert client.create(model="terse", from_=MODEL, system="You answer in one word.",
                         parameters={"temperature": 0, "num_predict": 8}).status == "success"
    shown = client.show("terse")
    assert shown.details.family == "llama" and shown.details.quantization_level == "Q4_1"
    assert shown.modelinfo["general.architecture"] == "llama"
    assert "temperature" in shown.parameters and "SYSTEM You answer in one word." in \
        shown.modelfile
    assert client.copy("terse", "terse-copy").status == "success"
    answer = client.chat(model="terse-copy", keep_alive="10m", messages=[
        {"role": "user", "content": "What is the capital of France?"}])
    assert "paris" in answer.message.content.lower()
    [loaded] = client.ps().models
    assert loaded.model == "terse-copy:latest" and loaded.size > 90_000_000
    assert loaded.expires_at is not None and loaded.details.family == "llama"

    digest = client.create_blob(tiny(tmp_path / "tiny.gguf"))
    assert client.create(model="tiny", files={"tiny.gguf": digest}).status == "success"
    assert client.delete("terse").status == "success"
    assert {m.model for m in client.list().models} >= {MODEL, "terse-copy:latest",
                                                        "tiny:latest"}
    with pytest.raises(ollama.ResponseError) as missing:
        client.show("terse")
    assert missing.value.status_code == 404


def test_cli_manages_models_with_ollamas_commands(served_models, tmp_path, model_file):
    pulled = served_models.corral("pull", "--insecure", MODEL)
    assert pulled.returncode == 0, pulled.stderr
    assert "pulling manifest" in pulled.stderr and pulled.stderr.rstrip().endswith("success")
    assert re.search(r"pulling [0-9a-f]{12}: 100% ", pulled.stderr)

    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {model_file.name}\nPARAMETER temperature 0\n"
                         "SYSTEM You answer in one word.\nLICENSE MIT\n")
    (tmp_path / model_file.name).symlink_to(model_file)
    created = served_models.corral("create", "cli-made", "-f", str(modelfile))
    assert created.returncode == 0 and "success" in created.stderr, created.stderr
    bad = tmp_path / "Bad"
    bad.write_text("FROM x\nPARAMETER temperature hot\n")
    failed = served_models.corral("create", "nope", "-f", str(bad))
    assert failed.returncode == 1 and "line 2" in failed.stderr

    listed = served_models.corral("list").stdout.splitlines()
    assert listed[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert any(row.startswith("cli-made:latest") and " MB " in row for row in listed)
    info = served_models.corral("show", "cli-made").stdout
    assert re.search(r"architecture\s+llama", info) and "MIT" in info
    assert served_models.corral("show", "--license", "cli-made").stdout.strip() == "MIT"
    assert served_models.corral("show", "--parameters", "cli-made").stdout.split() == \
        ["temperature", "0"]
    assert "copied" in served_models.corral("cp", "cli-made", "cli-copy").stdout

    answer = served_models.corral("run", "cli-copy", "Capital of France?", "--keepalive", "5m")
    assert "paris" in answer.stdout.lower()
    ps = served_models.corral("ps").stdout.splitlines()
    assert ps[0].split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL", "QUEUED"]
    assert any(row.startswith("cli-copy:latest") and "from now" in row for row in ps)
    assert served_models.corral("stop", "cli-copy").returncode == 0
    assert "cli-copy" not in served_models.corral("ps").stdout
    assert "deleted 'cli-copy'" in served_models.corral("rm", "cli-copy").stdout
    gone = served_models.corral("show", "cli-copy")
    assert gone.returncode == 1 and "not found" in gone.stderr


def test_cli_jobs_and_ps_show_the_queue(served):
    listed = served.corral("jobs", "--all", "--limit", "5")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "KIND", "MODEL", "STATUS"]
    assert len(lines) > 1 and "succeeded" in listed.stdout
    ps = served.corral("ps")
    assert ps.returncode == 0 and "QUEUED" in ps.stdout.splitlines()[0]
