"""`corral report`: concurrency read from overlapping job runs, and the per-level figures."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from cli.report import plot, table
from service.history.report import percentile, report, series
from service.history.runs import Run, concurrency_levels
from service.jobs.records import Job

T0 = 1_700_000_000.0


def run(start: float, end: float, *, model: str = "a", tokens: int = 100, status: str = "succeeded",
        ttft: float = 0.5, queued: float = 0.0) -> Run:
    """A job created `queued` s before it started at T0+start and ended at T0+end."""
    decode_s = max(end - start - ttft, 0.001)
    return Run(model, status, T0 + start - queued, T0 + start, T0 + end,
               T0 + start + ttft, tokens, int(decode_s * 1e9))


def test_the_series_spreads_each_jobs_tokens_over_the_time_it_ran() -> None:
    edge = 40  # T0 + 40 s is a whole minute since the epoch, where buckets begin
    runs = [run(edge, edge + 110, tokens=1100, queued=2),  # 60 s in one minute, 50 in the next
            run(edge + 30, edge + 40, tokens=50, queued=4),
            run(edge + 70, edge + 80, model="b", tokens=30),
            run(edge, edge + 10, tokens=999, status="failed")]  # not counted, as in the report
    points = {(p.model, p.start - T0 - edge): p for p in series(runs, 60)}
    assert sorted(points) == [("a", 0), ("a", 60), ("b", 60)]
    assert [points[("a", 0)].tokens, points[("a", 60)].tokens, points[("b", 60)].tokens] == [
        650, 500, 30]
    assert points[("a", 0)].tokens_per_s == pytest.approx(650 / 60)
    # Jobs count, with their queue wait, in the bucket where they finished.
    assert (points[("a", 0)].jobs, points[("a", 0)].queue_wait_p50_ms) == (1, 4000)
    assert (points[("a", 60)].jobs, points[("a", 60)].queue_wait_p50_ms) == (1, 2000)


def test_concurrency_is_the_mean_number_running_during_each_job() -> None:
    runs = [
        run(0, 10), run(20, 30),  # one at a time
        *[run(100, 110) for _ in range(4)],  # four together
        run(100, 110, model="b"),  # another model does not count
        run(200, 210), run(209, 219),  # overlapping for a tenth of their runs
        run(300, 310), run(300, 305), run(305, 310),  # two others, one after the other
    ]
    assert concurrency_levels(runs, now=T0 + 1000) == [1, 1, 4, 4, 4, 4, 1, 1, 1, 2, 2, 2]


def test_report_groups_by_model_and_level_with_rates_and_percentiles() -> None:
    runs = [
        run(0, 10, ttft=1.0, queued=1.0), run(20, 30, ttft=3.0),  # gap: not counted as busy
        *[run(100, 110, tokens=50) for _ in range(3)],
        run(100, 110, tokens=50, status="cancelled"),  # held a slot; not a row
        run(100, 110, model="b", tokens=30),
        Run("a", "running", T0 + 500, T0 + 500, None),  # not finished: not a row
    ]
    rows = report(runs, now=T0 + 1000)
    assert [(r.model, r.concurrency, r.requests, r.tokens) for r in rows] == [
        ("a", 1, 2, 200), ("a", 4, 3, 150), ("b", 1, 1, 30)]
    solo, together, other = rows
    assert solo.tokens_per_s_aggregate == pytest.approx(200 / 20)
    assert solo.tokens_per_s_request == pytest.approx((100 / 9 + 100 / 7) / 2, rel=1e-6)
    assert (solo.ttft_p50_ms, solo.ttft_p95_ms) == pytest.approx((2500, 2950))
    assert (solo.latency_p50_s, solo.latency_p95_s) == pytest.approx((10.5, 10.95))
    assert together.tokens_per_s_aggregate == pytest.approx(15)
    assert other.tokens_per_s_aggregate == pytest.approx(3)
    recent = report(runs, since=T0 + 15, now=T0 + 1000)
    assert [(r.model, r.concurrency, r.requests) for r in recent] == [
        ("a", 1, 1), ("a", 4, 3), ("b", 1, 1)]


def test_percentile_interpolates_and_is_none_for_nothing() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([10], 95) == 10
    assert percentile([], 50) is None


def _insert(app, start: datetime, seconds: float, model: str = "smollm2:135m",
            tokens: int = 64) -> None:
    """A finished generate job row, as a worker would have recorded it."""
    job = Job(id=uuid.uuid4().hex, kind="generate", model=model, status="succeeded", queue="cpu",
              request={}, created_at=start - timedelta(milliseconds=5), started_at=start,
              first_token_at=start + timedelta(milliseconds=50),
              finished_at=start + timedelta(seconds=seconds), eval_count=tokens,
              eval_duration=int((seconds - 0.05) * 1e9))
    with app.extensions["corral"].jobs.sessions.begin() as session:
        session.add(job)


def test_report_endpoint_reads_the_history(app, client, tmp_path) -> None:
    base = datetime.now(UTC) - timedelta(minutes=30)
    _insert(app, base - timedelta(hours=5), 1.0)  # outside --since 1h
    for i in range(3):
        _insert(app, base + timedelta(seconds=10 * i), 1.0)
    for _ in range(4):
        _insert(app, base + timedelta(seconds=100), 2.0)
    _insert(app, base, 1.0, model="other")

    res = client.get("/jobs/report?since=1h&model=smollm2:135m")
    assert res.status_code == 200, res.get_json()
    rows = res.get_json()["rows"]
    assert [(r["concurrency"], r["requests"], r["tokens"]) for r in rows] == [(1, 3, 192),
                                                                             (4, 4, 256)]
    assert rows[1]["tokens_per_s_aggregate"] == pytest.approx(256 / 2.0)
    assert rows[0]["ttft_p50_ms"] == pytest.approx(55, abs=1)
    assert len(client.get("/jobs/report").get_json()["rows"]) == 3  # all time, both models
    assert client.get("/jobs/report?since=yesterday").status_code == 400

    lines = table(rows)
    assert lines[0].split()[:3] == ["MODEL", "CONCURRENCY", "REQUESTS"]
    assert lines[2].split()[:4] == ["smollm2:135m", "4", "4", "256"]
    pytest.importorskip("matplotlib")
    plot(rows, tmp_path / "tokens.png")
    assert (tmp_path / "tokens.png").read_bytes().startswith(b"\x89PNG")
