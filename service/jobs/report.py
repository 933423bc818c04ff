"""Throughput by model and concurrency, computed from the job history (`corral report`).

Concurrency is read from the history, not from a label: a job's level is how many generate or
chat jobs of the same model were running (started, not yet finished; the job itself included)
on average over its own run, rounded to the nearest whole number. Four requests sent together
are level 4; one request at a time is level 1; a job that overlapped another for a tenth of its
run is still level 1. Jobs of every status count as running (a cancelled job held its slot), but
only succeeded jobs that generated tokens become report rows.

Per (model, level):
- tokens/s per request: the mean of each job's eval_count / eval_duration (Ollama's eval rate);
- aggregate tokens/s: the jobs' generated tokens over the time at least one of them was running
  (the union of their runs, so idle gaps between separate bursts do not count);
- time to first token and latency: from the job's creation (the request accepted) to its first
  token and to its end; p50 and p95 with linear interpolation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import or_, select

from service.jobs.kinds import JobKind
from service.jobs.records import Job, JobStatus, JobStore

DECODE_KINDS = (JobKind.GENERATE.value, JobKind.CHAT.value)


@dataclass(frozen=True)
class Run:
    """One job's timing, in seconds since the epoch (what the report needs of a row)."""

    model: str
    status: str
    created: float
    started: float
    finished: float | None  # None: still running
    first_token: float | None = None
    eval_count: int = 0
    eval_duration: int = 0  # ns


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

    def to_dict(self) -> dict:
        return asdict(self)


def load_runs(jobs: JobStore, since: datetime | None = None, model: str | None = None
              ) -> tuple[list[Run], float | None]:
    """Read the started generate/chat jobs that may matter after `since`; return (runs, since).

    Jobs that ended before `since` are skipped, but jobs created before it that were still
    running are kept, since they count toward the concurrency of the jobs reported.
    """
    query = select(Job.model, Job.status, Job.created_at, Job.started_at, Job.finished_at,
                   Job.first_token_at, Job.eval_count, Job.eval_duration).where(
        Job.kind.in_(DECODE_KINDS), Job.started_at.is_not(None))
    if model:
        query = query.where(Job.model == model)
    if since:
        query = query.where(or_(Job.finished_at.is_(None), Job.finished_at >= since))
    with jobs.sessions() as session:
        rows = session.execute(query).all()
    runs = [Run(m, status, _ts(created), _ts(started), _ts(finished), _ts(first),
                eval_count or 0, eval_duration or 0)
            for m, status, created, started, finished, first, eval_count, eval_duration in rows]
    return runs, _ts(since)


def concurrency_levels(runs: list[Run], now: float) -> list[int]:
    """Each run's level: the mean number of its model's runs running during it, rounded.

    The number running is a step function of time; its integral F is piecewise linear, so a
    run's mean is (F(end) - F(start)) / (end - start), read off with np.interp: O(n log n).
    """
    levels = [1] * len(runs)
    by_model: dict[str, list[int]] = defaultdict(list)
    for i, run in enumerate(runs):
        by_model[run.model].append(i)
    for indexes in by_model.values():
        starts = np.array([runs[i].started for i in indexes])
        ends = np.array([_end(runs[i], now) for i in indexes])
        times = np.concatenate([starts, ends])
        steps = np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])
        order = np.argsort(times, kind="stable")
        times, running = times[order], np.cumsum(steps[order])
        integral = np.concatenate([[0.0], np.cumsum(running[:-1] * np.diff(times))])
        for i, start, end in zip(indexes, starts, ends, strict=True):
            if end > start:
                mean = (np.interp(end, times, integral) - np.interp(start, times, integral)) / (
                    end - start)
            else:  # an instant run: those running at that instant, itself included
                mean = np.count_nonzero((starts <= start) & (ends >= start))
            levels[i] = max(1, int(np.floor(mean + 0.5)))
    return levels


def report(runs: list[Run], since: float | None = None, now: float | None = None) -> list[Row]:
    """The report's rows, by model then concurrency level."""
    now = datetime.now(UTC).timestamp() if now is None else now
    levels = concurrency_levels(runs, now)
    groups: dict[tuple[str, int], list[Run]] = defaultdict(list)
    for run, level in zip(runs, levels, strict=True):
        if _reported(run, since):
            groups[(run.model, level)].append(run)
    return [_row(model, level, groups[(model, level)]) for model, level in sorted(groups)]


def _reported(run: Run, since: float | None) -> bool:
    return (run.status == JobStatus.SUCCEEDED.value and run.finished is not None
            and run.eval_count > 0 and (since is None or run.created >= since))


def _row(model: str, level: int, runs: list[Run]) -> Row:
    tokens = sum(r.eval_count for r in runs)
    rates = [r.eval_count / (r.eval_duration / 1e9) for r in runs if r.eval_duration > 0]
    busy = _union_seconds([(r.started, r.finished) for r in runs])
    ttft = [(r.first_token - r.created) * 1000 for r in runs if r.first_token is not None]
    latency = [r.finished - r.created for r in runs]
    return Row(
        model=model,
        concurrency=level,
        requests=len(runs),
        tokens=tokens,
        tokens_per_s_request=sum(rates) / len(rates) if rates else 0.0,
        tokens_per_s_aggregate=tokens / busy if busy > 0 else 0.0,
        ttft_p50_ms=percentile(ttft, 50),
        ttft_p95_ms=percentile(ttft, 95),
        latency_p50_s=percentile(latency, 50) or 0.0,
        latency_p95_s=percentile(latency, 95) or 0.0,
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


def series(runs: list[Run], bucket_s: float, since: float | None = None) -> list[Point]:
    """Tokens/s by model over time, in buckets of `bucket_s`: each succeeded job's tokens are
    spread evenly over its decode (start to finish), so a long job fills every bucket it ran
    in, as the throughput a person watched would."""
    tokens: dict[tuple[str, int], float] = defaultdict(float)
    finished: dict[tuple[str, int], list[float]] = defaultdict(list)
    for run in runs:
        if not _reported(run, since):
            continue
        start, end = run.started, run.finished
        first, last = int(start // bucket_s), int(end // bucket_s)
        for index in range(first, last + 1):
            overlap = min(end, (index + 1) * bucket_s) - max(start, index * bucket_s)
            share = overlap / (end - start) if end > start else float(index == first)
            tokens[(run.model, index)] += run.eval_count * max(share, 0.0)
        finished[(run.model, int(end // bucket_s))].append((run.started - run.created) * 1000)
    keys = sorted(set(tokens) | set(finished), key=lambda key: (key[1], key[0]))
    return [Point(model, index * bucket_s, round(tokens[(model, index)]),
                  tokens[(model, index)] / bucket_s, len(finished[(model, index)]),
                  percentile(finished[(model, index)], 50))
            for model, index in keys]


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation (numpy's default); None when empty."""
    return float(np.percentile(values, q)) if values else None


def _union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of [start, end] intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _end(run: Run, now: float) -> float:
    return run.finished if run.finished is not None else max(now, run.started)


def _ts(value: datetime | None) -> float | None:
    """Seconds since the epoch; SQLite hands back naive datetimes, which are UTC here."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
