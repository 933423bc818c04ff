"""Job history at a million rows: GET /jobs and `corral report` on SQLite and PostgreSQL.

    python -m tests.bench.history_bench [--rows 1000000] [--postgres URL]

Fills a fresh database (SQLite under a temporary CORRAL_HOME; PostgreSQL in a schema of its
own at --postgres, default $CORRAL_TEST_DATABASE_URL, skipped when unset) with ROWS jobs over
DAYS days up to now: five models, three kinds, 40 % of them lines of 400 batches, ten API
keys, a few hundred queued and running, the recent minutes unrolled as a live service has
them. It then rolls the history up (the one-off backfill a first worker does after upgrading),
and times each query through the Flask test client, the API's own code path with its JSON:
REPEAT runs after a warm-up, p50 and p95. The goal is p50 under 50 ms for every query.
Writes out/bench/history.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert, text

from service.core.db import make_engine, make_sessionmaker, upgrade
from service.core.redis_server import EmbeddedRedis
from service.core.settings import Settings
from service.history.retention import HistoryKeeper
from service.jobs.records import Job, JobStore

ROOT = Path(__file__).resolve().parents[2]
DAYS = 60
REPEAT = 30
GOAL_MS = 50.0
MODELS = ("smollm2:135m", "gemma3:270m", "qwen3:0.6b", "llama3.2:1b", "phi4-mini")
KINDS = ("chat", "chat", "generate", "embed")
CHUNK = 20_000


def rows(count: int, now: datetime, rng: random.Random):
    """`count` job rows spread over DAYS days up to `now`, oldest first, in chunks."""
    span = DAYS * 86400.0
    batches = [f"batch_{i:04d}" for i in range(400)]
    owners = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(10)]
    chunk = []
    for i in range(count):
        created = now - timedelta(seconds=span * (1 - i / count) + rng.random())
        recent = (now - created).total_seconds() < 120
        status = ("running" if rng.random() < 0.5 else "queued") if (
            recent and rng.random() < 0.3) else rng.choices(
            ("succeeded", "failed", "cancelled"), (95, 3, 2))[0]
        started = created + timedelta(seconds=rng.uniform(0.001, 0.2))
        seconds = rng.uniform(0.3, 6.0)
        tokens = rng.randint(4, 256)
        done = status in ("succeeded", "failed", "cancelled")
        chunk.append({
            "id": uuid.uuid4().hex, "kind": rng.choice(KINDS), "model": rng.choice(MODELS),
            "status": status, "queue": "cpu", "priority": 0,
            "batch_id": rng.choice(batches) if rng.random() < 0.4 else None,
            "request": {"messages": [{"role": "user", "content": f"question {i}"}]},
            "output": "an answer of a few words" if status == "succeeded" else None,
            "created_at": created,
            "started_at": None if status == "queued" else started,
            "first_token_at": started + timedelta(seconds=0.03) if done else None,
            "finished_at": started + timedelta(seconds=seconds) if done else None,
            "eval_count": tokens if done else None,
            "eval_duration": int(seconds * 0.95e9) if done else None,
            "prompt_eval_count": 20, "worker_host": "vm", "device": "cpu",
            "owner": rng.choice(owners), "attempts": 1,
        })
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def fill(url: str, count: int, now: datetime) -> float:
    """Insert the rows; seconds it took."""
    engine = make_engine(url)
    started = time.perf_counter()
    for chunk in rows(count, now, random.Random(17)):
        with engine.begin() as conn:
            conn.execute(insert(Job), chunk)
    if not url.startswith("sqlite"):
        with engine.begin() as conn:
            conn.execute(text("ANALYZE jobs"))  # what autovacuum does after a bulk load
    engine.dispose()
    return time.perf_counter() - started


def queries(client, now: datetime) -> dict[str, str]:
    """The history queries a user, the CLI and the console send, by name."""
    first = client.get("/jobs?limit=50").get_json()
    cursor = first["next_cursor"]
    deep = now - timedelta(days=DAYS / 2)
    job = first["jobs"][0]
    return {
        "GET /jobs (newest 50)": "/jobs?limit=50",
        "GET /jobs page 2 (cursor)": f"/jobs?limit=50&cursor={cursor}",
        "GET /jobs status=failed": "/jobs?status=failed&limit=50",
        "GET /jobs status=queued,running": "/jobs?status=queued,running&limit=50",
        "GET /jobs status=succeeded,failed": "/jobs?status=succeeded,failed&limit=50",
        "GET /jobs model=": f"/jobs?model={MODELS[3]}&limit=50",
        "GET /jobs batch=": f"/jobs?batch={job.get('batch_id') or 'batch_0007'}&limit=50",
        "GET /jobs since..until (a day, 30 d ago)":
            f"/jobs?since={deep.isoformat()}&until={(deep + timedelta(days=1)).isoformat()}"
            "&limit=50".replace("+00:00", "Z"),
        "GET /jobs model= status=failed": f"/jobs?model={MODELS[1]}&status=failed&limit=50",
        "GET /jobs/<id>": f"/jobs/{job['id']}",
        "report, all time (corral report)": "/jobs/report",
        "report, all time, series by the minute": "/jobs/report?bucket=60",
        "report since 1h": "/jobs/report?since=1h",
        "report since 24h (console, 15 min buckets)": "/jobs/report?since=24h&bucket=900",
        "report since 7d (console, hourly)": "/jobs/report?since=7d&bucket=3600",
        "report model=, all time": f"/jobs/report?model={MODELS[0]}",
    }


def time_queries(client, paths: dict[str, str]) -> list[dict]:
    results = []
    for name, path in paths.items():
        res = client.get(path)
        assert res.status_code == 200, (path, res.get_json())
        samples = []
        for _ in range(REPEAT):
            started = time.perf_counter()
            res = client.get(path)
            samples.append((time.perf_counter() - started) * 1000)
            assert res.status_code == 200
        samples.sort()
        results.append({"query": name, "p50_ms": statistics.median(samples),
                        "p95_ms": samples[int(0.95 * (len(samples) - 1))]})
    return results


def bench(name: str, url: str, count: int, redis_url: str, home: Path) -> dict:
    from service.http.app import create_app

    upgrade(url)
    now = datetime.now(UTC)
    fill_s = fill(url, count, now)
    print(f"[{name}] {count:,} rows inserted in {fill_s:.0f} s", flush=True)
    import redis

    engine = make_engine(url)
    client = redis.Redis.from_url(redis_url)
    keeper = HistoryKeeper(JobStore(make_sessionmaker(engine)).sessions, client, 0)
    started = time.perf_counter()
    written = keeper.rollups.roll_all(now)
    backfill_s = time.perf_counter() - started
    if not url.startswith("sqlite"):  # what autovacuum does after the backfill's deletes
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE job_rollups"))
    started = time.perf_counter()
    keeper.tick(now + timedelta(minutes=1))
    tick_ms = (time.perf_counter() - started) * 1000
    print(f"[{name}] backfill: {written:,} rollup rows in {backfill_s:.1f} s; a steady "
          f"tick {tick_ms:.0f} ms", flush=True)
    settings = dataclasses.replace(Settings.from_env(), redis_url=redis_url, database_url=url,
                                   home=home)
    app = create_app({"TESTING": True}, settings=settings)
    results = time_queries(app.test_client(), queries(app.test_client(), now))
    app.extensions["corral"].close()
    engine.dispose()
    client.close()
    for r in results:
        verdict = "met" if r["p50_ms"] < GOAL_MS else "MISSED"
        print(f"[{name}] {r['query']:44} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms"
              f"  {verdict}", flush=True)
    return {"database": name, "rows": count, "fill_s": fill_s, "backfill_s": backfill_s,
            "rollup_rows": written, "tick_ms": tick_ms, "queries": results}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", default=os.environ.get("CORRAL_TEST_DATABASE_URL", ""))
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
    args = parser.parse_args(argv)
    report = []
    with tempfile.TemporaryDirectory(prefix="corral-history-") as tmp:
        home = Path(tmp)
        redis_server = EmbeddedRedis(home / "redis", persist=False).start()
        try:
            report.append(bench("sqlite", f"sqlite:///{home / 'history.db'}", args.rows,
                                redis_server.url, home))
            if args.postgres.startswith("postgresql"):
                report.append(_postgres(args.postgres, args.rows, redis_server.url, home))
            else:
                print("PostgreSQL skipped: pass --postgres or set CORRAL_TEST_DATABASE_URL")
        finally:
            redis_server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "history.json").write_text(json.dumps(report, indent=2))
    worst = max(q["p50_ms"] for r in report for q in r["queries"])
    print(f"\nslowest p50 {worst:.1f} ms (goal < {GOAL_MS:.0f} ms): "
          f"{'met' if worst < GOAL_MS else 'MISSED'}; written {args.out / 'history.json'}")


def _postgres(url: str, count: int, redis_url: str, home: Path) -> dict:
    """The same run in a schema of its own, dropped afterwards."""
    schema = f"corral_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in url else "?"
    try:
        return bench("postgresql", f"{url}{separator}options=-csearch_path%3D{schema}", count,
                     redis_url, home)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
