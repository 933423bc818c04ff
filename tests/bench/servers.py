"""The served systems: a real `corral serve` and llama.cpp's llama-server, each driven over HTTP.

corral is measured through its whole path (HTTP → Redis → Celery worker → engine → pub/sub →
HTTP), started exactly as a user starts it, in its own CORRAL_HOME with an embedded Redis.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from service.core.redis_server import free_port
from tests.bench.measure import N_PREDICT, Sample
from workers.llama_loader import cpu_has_amx

MODEL = "smollm2:135m"
ROOT = Path(__file__).resolve().parents[2]


def _wait_http(url: str, process: subprocess.Popen, ok: bytes | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as res:
                if res.status == 200 and (ok is None or ok in res.read()):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:g}s")


def _stream(port: int, path: str, body: dict, on_line) -> Sample:
    """POST body and feed each response line to on_line(sample, line)."""
    sample = Sample(sent=time.perf_counter())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        res = conn.getresponse()
        if res.status != 200:
            sample.error = f"HTTP {res.status}: {res.read()[:200]!r}"
        else:
            while line := res.readline():
                on_line(sample, line)
    except OSError as exc:
        sample.error = repr(exc)
    finally:
        conn.close()
    sample.end = time.perf_counter()
    return sample


class CorralServer:
    """`corral serve` with CORRAL_NUM_PARALLEL slots and the SmolLM2 model registered."""

    def __init__(self, home: Path, model_file: str, n_parallel: int, threads: int, n_ctx: int,
                 log: Path, **env: str):
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        self.env.update(CORRAL_HOME=str(home), CORRAL_HOST=f"127.0.0.1:{self.port}",
                        CORRAL_NUM_PARALLEL=str(n_parallel), CORRAL_NUM_THREADS=str(threads),
                        CORRAL_NUM_CTX=str(n_ctx), CORRAL_KEEP_ALIVE="-1", **env)
        self.url = f"http://127.0.0.1:{self.port}"
        with log.open("w") as out:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"],
                                            env=self.env, cwd=ROOT, stdout=out, stderr=out)
        _wait_http(self.url + "/", self.process, b"corral is running", 60)
        subprocess.run([sys.executable, "-m", "cli.main", "create", MODEL, "--from", model_file],
                       env=self.env, cwd=ROOT, check=True, capture_output=True)

    def load(self) -> float:
        """Load the model (an empty generate, as `ollama run` does); return seconds taken."""
        started = time.perf_counter()
        body = json.dumps({"model": MODEL}).encode()
        req = urllib.request.Request(self.url + "/api/generate", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=120).read()
        return time.perf_counter() - started

    def send(self, prompt: str) -> Sample:
        """One streamed /api/generate of a raw prompt, greedy, N_PREDICT tokens."""
        body = {"model": MODEL, "prompt": prompt, "raw": True, "stream": True,
                "options": {"temperature": 0, "num_predict": N_PREDICT, "repeat_penalty": 1.0}}
        return _stream(self.port, "/api/generate", body, _corral_line)

    def worker_pid(self) -> int | None:
        """The pid of the Celery worker `corral serve` started (a child running `worker`)."""
        return self.child_pid(lambda args: b"worker" in args)

    def child_pid(self, match: Callable[[list[bytes]], bool]) -> int | None:
        """The pid of the child of `corral serve` whose command line `match` accepts."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile
            if ppid == self.process.pid and match(cmdline):
                return int(stat.parent.name)
        return None

    def loaded_size(self) -> int | None:
        """What /api/ps reports for the loaded model: file size + KV cache."""
        with urllib.request.urlopen(self.url + "/api/ps", timeout=10) as res:
            models = json.loads(res.read())["models"]
        return models[0]["size"] if models else None

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _corral_line(sample: Sample, line: bytes) -> None:
    item = json.loads(line)
    if "error" in item:
        sample.error = item["error"]
    elif item.get("done"):
        sample.tokens = item.get("eval_count", 0)
    elif item.get("response"):
        sample.token()


def find_llama_server() -> str | None:
    """$LLAMA_SERVER, or what `make bench-peers` builds into out/peers/."""
    for candidate in (os.environ.get("LLAMA_SERVER"), ROOT / "out" / "peers" / "llama-server"):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class LlamaServer:
    """llama.cpp's own server with continuous batching over -np slots."""

    def __init__(self, binary: str, model_file: str, n_parallel: int, threads: int, n_ctx: int):
        self.port = free_port()
        args = [binary, "-m", model_file, "--host", "127.0.0.1", "--port", str(self.port),
                "-np", str(n_parallel), "-c", str(n_parallel * n_ctx),
                "-t", str(threads), "-tb", str(threads), "--no-webui", "--log-disable"]
        if cpu_has_amx():  # the same weight buffers corral's loader uses (see cpu_has_amx)
            args.append("--no-repack")
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        _wait_http(f"http://127.0.0.1:{self.port}/health", self.process, None, 60)

    def send(self, prompt: str) -> Sample:
        """One streamed /completion, greedy, N_PREDICT tokens."""
        body = {"prompt": prompt, "n_predict": N_PREDICT, "temperature": 0,
                "repeat_penalty": 1.0, "stream": True, "cache_prompt": True}
        return _stream(self.port, "/completion", body, _llama_server_line)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _llama_server_line(sample: Sample, line: bytes) -> None:
    if not line.startswith(b"data: "):
        return
    item = json.loads(line[6:])
    if item.get("content"):
        sample.token()
    if item.get("stop"):
        timings = item.get("timings") or {}
        sample.tokens = int(timings.get("predicted_n") or item.get("tokens_predicted") or 0)
