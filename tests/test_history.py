"""History at scale: the report read from rollups matches the report read from every job,
rolling is safe to race and repeat, and CORRAL_RETENTION expires rows only once rolled up."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import func, insert, select

from service.batches.records import Batch, BatchLine
from service.core.db import make_engine, make_sessionmaker, upgrade
from service.core.settings import _retention
from service.history import histogram
from service.history.histogram import Histogram
from service.history.report import load, report_of, series_of
from service.history.retention import LOCK, HistoryKeeper
from service.history.rollups import DAY, HOUR, MINUTE, JobRollup, Rollups
from service.history.runs import Coverage, union_seconds
from service.jobs.records import Job, JobStore

NOW = datetime(2026, 11, 20, 12, 0, 30, tzinfo=UTC)


def _job(start: datetime, seconds: float, *, model: str = "m", tokens: int = 64,
         status: str = "succeeded", queued: float = 0.02, batch_id: str | None = None) -> dict:
    return {"id": uuid.uuid4().hex, "kind": "generate", "model": model, "status": status,
            "queue": "cpu", "priority": 0, "request": {}, "attempts": 1, "batch_id": batch_id,
            "created_at": start - timedelta(seconds=queued), "started_at": start,
            "first_token_at": start + timedelta(seconds=min(0.05, seconds / 2)),
            "finished_at": start + timedelta(seconds=seconds), "eval_count": tokens,
            "eval_duration": int(seconds * 0.9e9)}


def _history(rng: random.Random, start: datetime, hours: float) -> list[dict]:
    """Bursts of 1 to 4 jobs at random times over `hours`, of two models."""
    rows, at = [], start
    while at < start + timedelta(hours=hours):
        width = rng.choice((1, 1, 2, 4))
        model = rng.choice(("m", "m", "other"))
        seconds = rng.uniform(0.5, 4.0)
        rows += [_job(at, seconds * rng.uniform(0.9, 1.0), model=model,
                      tokens=rng.randint(8, 128),
                      status="failed" if rng.random() < 0.05 else "succeeded")
                 for _ in range(width)]
        at += timedelta(seconds=rng.uniform(seconds, 120))
    return rows


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path) -> JobStore:
    """A JobStore on a fresh database at head: SQLite, and PostgreSQL when configured."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'history.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("postgres_url")
        upgrade(url)
    engine = make_engine(url)
    yield JobStore(make_sessionmaker(engine))
    engine.dispose()


def _insert(store: JobStore, rows: list[dict]) -> None:
    with store.sessions.begin() as session:
        session.execute(insert(Job), rows)


def _key(rows) -> list[tuple]:
    return [(r.model, r.concurrency, r.requests, r.tokens) for r in rows]


def test_the_report_from_rollups_matches_the_report_from_every_job(store) -> None:
    rng = random.Random(7)
    _insert(store, _history(rng, NOW - timedelta(hours=60), 60))  # up to NOW
    exact = report_of(load(store, None), now=NOW.timestamp())
    rollups = Rollups(store.sessions)
    assert rollups.roll_all(NOW) > 0
    marks = rollups.marks()
    assert marks[MINUTE] == datetime(2026, 11, 20, 11, 55, tzinfo=UTC)  # 5 min settle
    assert marks[HOUR] == datetime(2026, 11, 20, 11, tzinfo=UTC)
    assert marks[DAY] == datetime(2026, 11, 20, tzinfo=UTC)
    history = load(store, rollups)
    assert history.rows and {r.period for r in history.rows} == {MINUTE, HOUR, DAY}
    assert len(history.runs) < 20  # only the jobs since the minute mark are read raw
    rolled = report_of(history, now=NOW.timestamp())
    assert _key(rolled) == _key(exact)
    for a, b in zip(rolled, exact, strict=True):
        assert a.tokens_per_s_request == pytest.approx(b.tokens_per_s_request, rel=1e-9)
        assert a.tokens_per_s_aggregate == pytest.approx(b.tokens_per_s_aggregate, rel=0.01)
        for name in ("ttft_p50_ms", "ttft_p95_ms", "latency_p50_s", "latency_p95_s"):
            assert getattr(a, name) == pytest.approx(getattr(b, name), rel=0.05), name

    # A span read at a whole minute matches the exact report of the jobs created in it.
    since = datetime(2026, 11, 18, 17, 0, tzinfo=UTC)
    assert _key(report_of(load(store, rollups, since), now=NOW.timestamp())) == _key(
        report_of(load(store, None, since), now=NOW.timestamp()))
    # The chart's hourly tokens add up to the report's.
    points = series_of(load(store, rollups, since), 3600)
    assert sum(p.tokens for p in points) == sum(r.tokens for r in report_of(
        load(store, None, since), now=NOW.timestamp()))


def test_rolling_again_or_at_once_counts_every_job_once(store) -> None:
    rng = random.Random(3)
    rows = _history(rng, NOW - timedelta(hours=8), 7.5)
    _insert(store, rows)
    racers = [Rollups(store.sessions) for _ in range(3)]
    threads = [threading.Thread(target=r.roll_all, args=(NOW,)) for r in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    racers[0].roll_all(NOW)  # nothing left to do
    with store.sessions() as session:
        counted = session.scalar(select(func.sum(JobRollup.requests)).where(
            JobRollup.period == MINUTE))
    assert counted == sum(1 for r in rows if r["status"] == "succeeded")


def test_a_job_finishing_after_the_mark_is_read_raw(store) -> None:
    _insert(store, [_job(NOW - timedelta(hours=2), 2.0)])
    rollups = Rollups(store.sessions)
    rollups.roll_all(NOW)
    late = _job(NOW - timedelta(seconds=20), 3.0, tokens=10)
    _insert(store, [late])
    rows = report_of(load(store, rollups), now=NOW.timestamp())
    assert [(r.requests, r.tokens) for r in rows] == [(2, 74)]
    rollups.roll_all(NOW + timedelta(minutes=10))  # the late job's minute is rolled now
    assert [(r.requests, r.tokens) for r in report_of(load(store, rollups))] == [(2, 74)]


def test_minute_rows_past_a_week_are_pruned_once_hours_hold_them(store) -> None:
    _insert(store, [_job(NOW - timedelta(days=10, minutes=m), 1.0) for m in range(0, 90, 7)])
    rollups = Rollups(store.sessions)
    rollups.roll_all(NOW)
    with store.sessions() as session:
        periods = dict(session.execute(select(JobRollup.period, func.sum(JobRollup.requests))
                                       .group_by(JobRollup.period)).all())
    assert periods == {HOUR: 13, DAY: 13}  # the minute rows are gone, their counts kept
    assert [r.requests for r in report_of(load(store, rollups))] == [13]


def test_retention_deletes_only_rolled_up_jobs_and_ended_batches(store, redis_url) -> None:
    client = redis.Redis.from_url(redis_url)
    old = [_job(NOW - timedelta(days=40, minutes=m), 1.0) for m in range(5)]
    recent = [_job(NOW - timedelta(days=2, minutes=m), 1.0) for m in range(3)]
    with store.sessions.begin() as session:
        for batch_id, status in (("old-done", "completed"), ("old-running", "in_progress")):
            session.add(Batch(id=batch_id, status=status, endpoint="/v1/completions",
                              created_at=NOW - timedelta(days=41),
                              completed_at=NOW - timedelta(days=40) if status == "completed"
                              else None, queue="cpu"))
    batched = [_job(NOW - timedelta(days=40), 1.0, batch_id=b)
               for b in ("old-done", "old-running")]
    _insert(store, old + recent + batched)
    with store.sessions.begin() as session:
        session.add_all([BatchLine(batch_id=row["batch_id"], line=0, job_id=row["id"])
                         for row in batched])

    keeper = HistoryKeeper(store.sessions, client, retention=_retention("30d"))
    assert keeper.expire(NOW).jobs == 0  # nothing is rolled up yet: nothing may go
    assert keeper.tick(NOW)
    with store.sessions() as session:
        left = set(session.scalars(select(Job.id)))
        batches = set(session.scalars(select(Batch.id)))
        lines = session.scalar(select(func.count()).select_from(BatchLine))
    assert left == {r["id"] for r in recent} | {batched[1]["id"]}
    assert batches == {"old-running"} and lines == 1
    # The report still counts the deleted jobs, from the rollups.
    assert sum(r.requests for r in report_of(load(store, keeper.rollups))) == 10

    # One keeper at a time across the fleet.
    client.set(LOCK, "another")
    assert not keeper.tick(NOW)
    client.delete(LOCK)
    client.close()


def test_histogram_percentiles_are_within_their_bin() -> None:
    import numpy as np

    rng = random.Random(1)
    values = [rng.lognormvariate(5, 1.5) for _ in range(5000)]
    halves = Histogram(), Histogram()
    for i, value in enumerate(values):
        halves[i % 2].add(value)
    merged = Histogram()
    for half in halves:  # stored (as JSON holds it), then added up
        merged.merge(half.stored())
    for q in (50, 95, 99):
        assert merged.percentile(q) == pytest.approx(np.percentile(values, q), rel=0.05)
    assert merged.total() == 5000 and merged.stored() == histogram.histogram(values)
    assert Histogram().percentile(50) is None and Histogram().stored() == ""
    assert histogram.histogram([0.0, 0.0]) == "0,2"
    assert histogram.histogram([1e15]) == f"{histogram.BINS - 1},1"  # past two years


def test_coverage_adds_what_each_interval_adds_to_the_union() -> None:
    rng = random.Random(5)
    intervals = [(s, s + rng.uniform(0, 5)) for s in (rng.uniform(0, 100) for _ in range(300))]
    coverage, seen, total = Coverage(), [], 0.0
    for start, end in intervals:
        seen.append((start, end))
        total += coverage.add(start, end)
        grid = sum(1 for t in range(0, 10_500) if any(a <= t / 100 < b for a, b in seen)) / 100
        assert total == pytest.approx(grid, abs=0.02 * len(seen) ** 0.5 + 0.05)
    assert union_seconds(intervals) == pytest.approx(total)


def test_retention_parses_days_and_keeps_everything_at_zero() -> None:
    assert _retention("30d") == 30 * 86400 and _retention("90m") == 5400
    assert _retention("0") == 0 and _retention("-1") == 0
    with pytest.raises(ValueError):
        _retention("soon")


def test_the_report_endpoint_reads_rollups_and_recent_jobs(app, client, redis_url) -> None:
    services = app.extensions["corral"]
    now = datetime.now(UTC)
    _insert(services.jobs, [_job(now - timedelta(days=2, minutes=m), 1.0) for m in range(4)])
    keeper = HistoryKeeper(services.jobs.sessions, services.redis, retention=0)
    assert keeper.tick()
    _insert(services.jobs, [_job(now - timedelta(seconds=30), 1.0, tokens=10)])  # raw
    for since in ("", "?since=7d", "?since=168h"):
        res = client.get(f"/jobs/report{since}")
        assert res.status_code == 200, res.get_json()
        assert [(r["requests"], r["tokens"]) for r in res.get_json()["rows"]] == [(5, 266)]
        assert sum(p["jobs"] for p in res.get_json()["series"]) == 5
    assert client.get("/jobs/report?since=1h").get_json()["rows"][0]["requests"] == 1
    res = client.get("/jobs/report?since=7x")
    assert res.status_code == 400 and "since" in res.get_json()["error"]
