"""Jobs as runs in time: what the report and its rollups both read of a job row.

Concurrency is read from the history, not from a label: a job's level is how many generate or
chat jobs of the same model were running (started, not yet finished; the job itself included)
on average over its own run, rounded to the nearest whole number. Four requests sent together
are level 4; one request at a time is level 1; a job that overlapped another for a tenth of its
run is still level 1. Jobs of every status count as running (a cancelled job held its slot), but
only succeeded jobs that generated tokens are reported.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import select

from service.jobs.kinds import JobKind
from service.jobs.records import Job, JobStatus

DECODE_KINDS = (JobKind.GENERATE.value, JobKind.CHAT.value)

# The columns a run is read from, for the started decode jobs (filters are the caller's).
RUNS = select(Job.model, Job.status, Job.created_at, Job.started_at, Job.finished_at,
              Job.first_token_at, Job.eval_count, Job.eval_duration).where(
    Job.kind.in_(DECODE_KINDS), Job.started_at.is_not(None))


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

    @property
    def reported(self) -> bool:
        """Succeeded jobs that generated tokens are the report's; the rest only held slots."""
        return (self.status == JobStatus.SUCCEEDED.value and self.finished is not None
                and self.eval_count > 0)


def run_of(row: Any) -> Run:
    """A Run from a row of RUNS."""
    model, status, created, started, finished, first, eval_count, eval_duration = row
    return Run(model, status, ts(created), ts(started), ts(finished), ts(first),
               eval_count or 0, eval_duration or 0)


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
        ends = np.array([end_of(runs[i], now) for i in indexes])
        times = np.concatenate([starts, ends])
        steps = np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])
        order = np.argsort(times, kind="stable")
        times, running = times[order], np.cumsum(steps[order])
        integral = np.concatenate([[0.0], np.cumsum(running[:-1] * np.diff(times))])
        means = (np.interp(ends, times, integral) - np.interp(starts, times, integral))
        spans = ends - starts
        for k, i in enumerate(indexes):
            if spans[k] > 0:
                mean = means[k] / spans[k]
            else:  # an instant run: those running at that instant, itself included
                mean = np.count_nonzero((starts <= starts[k]) & (ends >= starts[k]))
            levels[i] = max(1, int(np.floor(mean + 0.5)))
    return levels


class Coverage:
    """A growing union of [start, end] intervals; `add` says how much each one adds.

    So busy time can be given to the first stretch whose job covered it, and stretches
    summed later count no second twice.
    """

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []

    def add(self, start: float, end: float) -> float:
        """Take [start, end] into the union; return the length it added."""
        if end <= start:
            return 0.0
        i = bisect_left(self.ends, start)  # the first interval that ends at or after start
        j = bisect_right(self.starts, end)  # those from i up to j overlap [start, end]
        if i >= j:
            self.starts.insert(i, start)
            self.ends.insert(i, end)
            return end - start
        held = sum(self.ends[k] - self.starts[k] for k in range(i, j))
        low, high = min(start, self.starts[i]), max(end, self.ends[j - 1])
        self.starts[i:j] = [low]
        self.ends[i:j] = [high]
        return (high - low) - held


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of [start, end] intervals."""
    coverage = Coverage()
    return sum(coverage.add(start, end) for start, end in intervals)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation (numpy's default); None when empty."""
    return float(np.percentile(values, q)) if values else None


def end_of(run: Run, now: float) -> float:
    return run.finished if run.finished is not None else max(now, run.started)


def ts(value: datetime | None) -> float | None:
    """Seconds since the epoch; SQLite hands back naive datetimes, which are UTC here."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
