"""Throughput by model and concurrency, from the job history (`corral report`).

A job's concurrency level is read from the history (service.history.runs). Per (model, level):
- tokens/s per request: the mean of each job's eval_count / eval_duration (Ollama's eval rate);
- aggregate tokens/s: the jobs' generated tokens over the time at least one of them was running
  (the union of their runs, so idle gaps between separate bursts do not count);
- time to first token and latency: from the job's creation (the request accepted) to its first
  token and to its end; p50 and p95 with linear interpolation.

Recent jobs are read raw and their figures are exact; older ones come from the rollups
(service.history.rollups), where percentiles are read from 5 % bins and `since` holds to the
minute (to the hour past a week, the day past 90 days), so the report costs the same at a
million jobs as at a thousand, and outlives the job rows that CORRAL_RETENTION expires.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from service.history.histogram import Histogram
from service.history.rollups import UNFINISHED, Cell, JobRollup, Rollups
from service.history.runs import (
    RUNS,
    Run,
    concurrency_levels,
    percentile,
    run_of,
    ts,
    union_seconds,
)
from service.jobs.records import Job, JobStore


@dataclass(frozen=True)
class Row:
    """One line of the report: a model at one concurrency level."""

    model: str
    concurrency: int
    requests: int
    tokens: int
    tokens_per_s_request: float
    tokens_per_s_aggregate: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    latency_p50_s: float
    latency_p95_s: float
    queue_wait_p50_ms: float | None = None  # created → started: waiting for a slot
    queue_wait_p95_ms: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def load_runs(jobs: JobStore, since: datetime | None = None, model: str | None = None,
              session: Session | None = None) -> tuple[list[Run], float | None]:
    """Read the started generate/chat jobs that may matter after `since`; return (runs, since).

    Jobs that ended before `since` are skipped, but jobs created before it that were still
    running are kept, since they count toward the concurrency of the jobs reported. With a
    `since`, two index ranges (finished_at; status) and the model picked out here: given
    `model = ?` and an OR, SQLite walked the model's index instead, every job it ever ran
    (148 ms at 1,000,000 jobs).
    """
    if session is None:
        with jobs.sessions() as session:
            return load_runs(jobs, since, model, session)
    if not since:
        query = RUNS.where(Job.model == model) if model else RUNS
        return [run_of(row) for row in session.execute(query)], None
    rows = [*session.execute(RUNS.where(Job.finished_at >= since)),
            *session.execute(RUNS.where(Job.status.in_(UNFINISHED)))]
    runs = [run_of(row) for row in rows]
    return [run for run in runs if not model or run.model == model], ts(since)


@dataclass(frozen=True)
class History:
    """What the report reads: raw runs after the rollups' minute mark, and the rows before."""

    runs: list[Run]
    rows: list[JobRollup]
    since: float | None  # jobs created before it are not reported
    raw_from: float | None  # raw runs that finished before it are in the rows

    def reported(self, run: Run) -> bool:
        return (run.reported and (self.since is None or run.created >= self.since)
                and (self.raw_from is None or run.finished >= self.raw_from))


def load(jobs: JobStore, rollups: Rollups | None, since: datetime | None = None,
         model: str | None = None) -> History:
    """The history for a report from `since` on: a few index ranges of rollup rows, then
    the jobs since the minute mark, on one connection, however many jobs the table holds."""
    with jobs.sessions() as session:
        rows, mark = rollups.cover(since, model, session) if rollups else ([], None)
        start = max(since, mark) if since and mark else (since or mark)
        runs, _ = load_runs(jobs, start, model, session)
    return History(runs, rows, ts(since), ts(mark))


def report(runs: list[Run], since: float | None = None, now: float | None = None,
           rows: list[JobRollup] | None = None, raw_from: float | None = None) -> list[Row]:
    """The report's rows, by model then concurrency level: `runs` read raw (those created
    before `since`, or finished before `raw_from`, count only toward levels), and `rows`
    rolled up before."""
    now = datetime.now(UTC).timestamp() if now is None else now
    history = History(runs, rows or [], since, raw_from)
    levels = concurrency_levels(runs, now)
    cells: dict[tuple[str, int], Cell] = defaultdict(Cell)
    spans: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for run, level in zip(runs, levels, strict=True):
        if history.reported(run):
            cells[(run.model, level)].add_run(run)
            spans[(run.model, level)].append((run.started, run.finished))
    for key, intervals in spans.items():
        cells[key].busy_s += union_seconds(intervals)
    for row in history.rows:
        cells[(row.model, row.concurrency)].add_row(row)
    return [_row(model, level, cells[(model, level)]) for model, level in sorted(cells)]


def report_of(history: History, now: float | None = None) -> list[Row]:
    return report(history.runs, history.since, now, history.rows, history.raw_from)


def _row(model: str, level: int, cell: Cell) -> Row:
    return Row(
        model=model,
        concurrency=level,
        requests=cell.requests,
        tokens=cell.tokens,
        tokens_per_s_request=cell.rate_sum / cell.rated if cell.rated else 0.0,
        tokens_per_s_aggregate=cell.tokens / cell.busy_s if cell.busy_s > 0 else 0.0,
        ttft_p50_ms=cell.percentile("ttft", 50),
        ttft_p95_ms=cell.percentile("ttft", 95),
        latency_p50_s=(cell.percentile("latency", 50) or 0.0) / 1000,
        latency_p95_s=(cell.percentile("latency", 95) or 0.0) / 1000,
        queue_wait_p50_ms=cell.percentile("wait", 50),
        queue_wait_p95_ms=cell.percentile("wait", 95),
    )


@dataclass(frozen=True)
class Point:
    """One model's output over one stretch of time, for the console's chart."""

    model: str
    start: float  # seconds since the epoch
    tokens: int  # finished jobs' tokens, spread over the time each job decoded
    tokens_per_s: float
    jobs: int  # jobs that finished in it
    queue_wait_p50_ms: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def series(runs: list[Run], bucket_s: float, since: float | None = None,
           rows: list[JobRollup] | None = None, raw_from: float | None = None) -> list[Point]:
    """Tokens/s by model over time, in buckets of `bucket_s`: each succeeded raw job's tokens
    are spread evenly over its decode (start to finish), so a long job fills every bucket it
    ran in, as the throughput a person watched would; a rolled-up row's tokens fall in the
    bucket of its start. Jobs count, with their queue wait, in the bucket they finished in."""
    history = History(runs, rows or [], since, raw_from)
    tokens: dict[tuple[str, int], float] = defaultdict(float)
    jobs: dict[tuple[str, int], int] = defaultdict(int)
    waits: dict[tuple[str, int], list[float]] = defaultdict(list)  # raw: exact
    binned: dict[tuple[str, int], Histogram] = {}  # once a rolled-up row is in
    for run in runs:
        if not history.reported(run):
            continue
        start, end = run.started, run.finished
        first, last = int(start // bucket_s), int(end // bucket_s)
        for index in range(first, last + 1):
            overlap = min(end, (index + 1) * bucket_s) - max(start, index * bucket_s)
            share = overlap / (end - start) if end > start else float(index == first)
            tokens[(run.model, index)] += run.eval_count * max(share, 0.0)
        key = (run.model, last)
        jobs[key] += 1
        waits[key].append((run.started - run.created) * 1000)
    for row in history.rows:
        key = (row.model, int(ts(row.start) // bucket_s))
        tokens[key] += row.tokens
        jobs[key] += row.requests
        binned.setdefault(key, Histogram()).merge(row.wait)
    points = []
    for model, index in sorted(set(tokens) | set(jobs), key=lambda key: (key[1], key[0])):
        key = (model, index)
        if key in binned:
            for wait in waits.get(key, ()):
                binned[key].add(wait)
            wait_p50 = binned[key].percentile(50)
        else:
            wait_p50 = percentile(waits.get(key, []), 50)
        points.append(Point(model, index * bucket_s, round(tokens[key]), tokens[key] / bucket_s,
                            jobs[key], wait_p50))
    return points


def series_of(history: History, bucket_s: float) -> list[Point]:
    return series(history.runs, bucket_s, history.since, history.rows, history.raw_from)
