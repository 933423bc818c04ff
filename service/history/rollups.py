"""The report's history in rollups, so `corral report` stays fast at millions of jobs and
keeps its figures after old job rows expire (CORRAL_RETENTION).

Every finished generate or chat job is counted once in a minute row per (model, concurrency
level), by the minute it finished in; minute rows add up into hour rows, hour rows into day
rows. A row holds what the report's figures are made of: requests, tokens, the sum of the
per-request rates, the busy seconds (the union of the runs, each second counted in the first
minute whose job covered it, so minutes add up without counting overlaps twice) and
histograms of time to first token, latency and queue wait (service.history.histogram).

A minute is rolled once it lies SETTLE_S in the past, so jobs still running then count toward
its levels; jobs that finish later land in a later minute. Marks say how far each period is
rolled; a roll moves its mark with a compare-and-set in the same transaction that writes its
rows, so two processes rolling at once never count a job twice. The report reads the
coarsest rows that cover its span, then minute rows, then the raw jobs after the minute mark.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from service.core.db import Base, aware
from service.history.histogram import Histogram
from service.history.runs import (
    DECODE_KINDS,
    RUNS,
    Coverage,
    Run,
    concurrency_levels,
    percentile,
    run_of,
)
from service.jobs.records import Job, JobStatus

MINUTE, HOUR, DAY = 60, 3600, 86400
PERIODS = (DAY, HOUR, MINUTE)  # coarsest first: the order the report reads them in
SETTLE_S = 300  # a minute is rolled this long after it ends (jobs running then, clock skew)
KEEP_S = {MINUTE: 7 * DAY, HOUR: 90 * DAY}  # finer rows pruned once older (days stay)
CHUNK_S = {MINUTE: 6 * HOUR, HOUR: 7 * DAY, DAY: 90 * DAY}  # most one roll step covers
OVERLAP = timedelta(hours=6)  # longest run across a step's end that counts for its levels
UNFINISHED = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)  # `since` not given: from the first row


class JobRollup(Base):
    """One (period, start, model, concurrency) cell of the history (migration 0008)."""

    __tablename__ = "job_rollups"

    period: Mapped[int] = mapped_column(Integer, primary_key=True)
    start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    concurrency: Mapped[int] = mapped_column(Integer, primary_key=True)
    requests: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(BigInteger)
    rate_sum: Mapped[float] = mapped_column(Float)  # sum of eval_count / eval_duration
    rated: Mapped[int] = mapped_column(Integer)  # jobs with a decode time (in rate_sum)
    busy_s: Mapped[float] = mapped_column(Float)
    # histograms (service.history.histogram) of milliseconds from the job's creation:
    ttft: Mapped[str] = mapped_column(Text)  # to its first token
    latency: Mapped[str] = mapped_column(Text)  # to its end
    wait: Mapped[str] = mapped_column(Text)  # to its start (queue wait)


_ROLLUPS = JobRollup.__table__  # read as plain rows: ORM objects cost 20 µs each


class RollupMark(Base):
    """How far a period is rolled: every job that finished before `until` is in its rows."""

    __tablename__ = "job_rollup_marks"

    period: Mapped[int] = mapped_column(Integer, primary_key=True)
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))


HISTOGRAMS = ("ttft", "latency", "wait")


@dataclass
class Cell:
    """The figures of one (model, level) over some stretch: rollup rows and raw runs add in."""

    requests: int = 0
    tokens: int = 0
    rate_sum: float = 0.0
    rated: int = 0
    busy_s: float = 0.0
    bins: dict[str, Histogram] = field(default_factory=dict)  # made as first needed
    exact: dict[str, list[float]] | None = field(default_factory=lambda: {
        name: [] for name in HISTOGRAMS})  # None once any rolled-up row is in

    def add_run(self, run: Run) -> None:
        """Count one reported job (its busy time is the caller's: it is a union)."""
        self.requests += 1
        self.tokens += run.eval_count
        if run.eval_duration > 0:
            self.rate_sum += run.eval_count / (run.eval_duration / 1e9)
            self.rated += 1
        values = {"latency": (run.finished - run.created) * 1000,
                  "wait": (run.started - run.created) * 1000}
        if run.first_token is not None:
            values["ttft"] = (run.first_token - run.created) * 1000
        for name, value in values.items():
            self.histogram(name).add(value)
            if self.exact is not None:
                self.exact[name].append(value)

    def add_row(self, row: JobRollup, names: tuple[str, ...] = HISTOGRAMS) -> None:
        """Count a rolled-up row in; only the histograms `names` (merging is the cost)."""
        self.requests += row.requests
        self.tokens += row.tokens
        self.rate_sum += row.rate_sum
        self.rated += row.rated
        self.busy_s += row.busy_s
        for name in names:
            self.histogram(name).merge(getattr(row, name))
        self.exact = None

    def histogram(self, name: str) -> Histogram:
        if name not in self.bins:
            self.bins[name] = Histogram()
        return self.bins[name]

    def stored(self, name: str) -> str:
        return self.bins[name].stored() if name in self.bins else ""

    def percentile(self, name: str, q: float) -> float | None:
        """Exact while only raw runs are in; read from the bins once rollups are."""
        if self.exact is not None:
            return percentile(self.exact[name], q)
        return self.histogram(name).percentile(q)


class Rollups:
    """Roll finished jobs into rows, add rows up into coarser ones, and read them back."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    # --- reading ------------------------------------------------------------------------

    def marks(self, session: Session | None = None) -> dict[int, datetime | None]:
        if session is None:
            with self.sessions() as session:
                return self.marks(session)
        found = {period: aware(until) for period, until in
                 session.execute(select(RollupMark.period, RollupMark.until))}
        return {period: found.get(period) for period in PERIODS}

    def cover(self, since: datetime | None, model: str | None = None,
              session: Session | None = None) -> tuple[list[JobRollup], datetime | None]:
        """The rollup rows that cover [since, minute mark), coarsest first, without overlap;
        and the minute mark, from which on the raw jobs are the report's (None: no rows)."""
        if session is None:
            with self.sessions() as session:
                return self.cover(since, model, session)
        marks = self.marks(session)
        if marks[MINUTE] is None:
            return [], None
        lo = _floor(since, MINUTE) if since else BEGINNING
        covered: list[tuple[datetime, datetime]] = []
        rows: list[JobRollup] = []
        for period in PERIODS:
            mark = marks[period]
            if mark is None:
                continue
            for piece_lo, piece_hi in _subtract(_ceil(lo, period), mark, covered):
                query = select(*_ROLLUPS.c).where(JobRollup.period == period,
                                                  JobRollup.start >= piece_lo,
                                                  JobRollup.start < piece_hi)
                if model:
                    query = query.where(JobRollup.model == model)
                rows.extend(session.execute(query))
                covered.append((piece_lo, piece_hi))
        return rows, marks[MINUTE]

    # --- rolling ------------------------------------------------------------------------

    def roll(self, now: datetime) -> int:
        """One step for each period (minutes from jobs, hours from minutes, days from
        hours), then prune fine rows past keeping; how many rows were written."""
        written = self._roll_minutes(now)
        written += self._add_up(HOUR, MINUTE)
        written += self._add_up(DAY, HOUR)
        self._prune(now)
        return written

    def roll_all(self, now: datetime, budget_s: float | None = None) -> int:
        """Roll until every period is up to date (a backfill, or a benchmark), or until
        `budget_s` seconds are spent; how many rows were written."""
        deadline = None if budget_s is None else time.monotonic() + budget_s
        total = 0
        while deadline is None or time.monotonic() < deadline:
            before = self.marks()
            total += self.roll(now)
            if self.marks() == before:
                break
        return total

    def _roll_minutes(self, now: datetime) -> int:
        target = _floor(now - timedelta(seconds=SETTLE_S), MINUTE)
        mark = self._mark_or_start(MINUTE, self._first_finish, target)
        if mark is None or mark >= target:
            return 0
        hi = min(target, mark + timedelta(seconds=CHUNK_S[MINUTE]))
        runs, context = self._runs_finished(mark, hi)
        rows = minute_rows(runs, context, hi.timestamp())
        return self._commit(MINUTE, mark, hi, rows)

    def _add_up(self, period: int, finer: int) -> int:
        """Sum `finer` rows into `period` rows for every whole period `finer` has rolled."""
        finer_mark = self.marks()[finer]
        if finer_mark is None:
            return 0
        target = _floor(finer_mark, period)
        mark = self._mark_or_start(period, lambda: self._first_row(finer), target)
        if mark is None or mark >= target:
            return 0
        hi = min(target, mark + timedelta(seconds=CHUNK_S[period]))
        with self.sessions() as session:
            parts = list(session.scalars(select(JobRollup).where(
                JobRollup.period == finer, JobRollup.start >= mark, JobRollup.start < hi)))
        cells: dict[tuple[datetime, str, int], Cell] = defaultdict(Cell)
        for part in parts:
            cells[(_floor(aware(part.start), period), part.model, part.concurrency)].add_row(part)
        return self._commit(period, mark, hi, [_row(period, *key, cell)
                                               for key, cell in cells.items()])

    def _commit(self, period: int, mark: datetime, hi: datetime, rows: list[dict]) -> int:
        """Write `rows` and move the mark from `mark` to `hi`, or neither if another
        process moved it first."""
        with self.sessions.begin() as session:
            moved = session.execute(update(RollupMark).where(
                RollupMark.period == period, RollupMark.until == mark).values(until=hi))
            if moved.rowcount != 1:
                session.rollback()
                return 0
            if rows:
                session.execute(insert(JobRollup), rows)
        return len(rows)

    def _mark_or_start(self, period: int, first, target: datetime) -> datetime | None:
        """The period's mark; on a first roll, set it at the start of the oldest history
        (or at `target` when there is none yet)."""
        mark = self.marks()[period]
        if mark is not None:
            return mark
        oldest = first()
        start = _floor(oldest, period) if oldest is not None else target
        try:
            with self.sessions.begin() as session:
                session.execute(insert(RollupMark), {"period": period, "until": start})
        except IntegrityError:  # another process set it first
            pass
        return self.marks()[period]

    def _first_finish(self) -> datetime | None:
        with self.sessions() as session:
            first = session.scalar(select(func.min(Job.finished_at)).where(
                Job.kind.in_(DECODE_KINDS)))
        return aware(first) if first else None

    def _first_row(self, period: int) -> datetime | None:
        with self.sessions() as session:
            first = session.scalar(select(func.min(JobRollup.start)).where(
                JobRollup.period == period))
        return aware(first) if first else None

    def _runs_finished(self, lo: datetime, hi: datetime) -> tuple[list[Run], list[Run]]:
        """Decode jobs that finished in [lo, hi), and the others whose runs overlap theirs,
        for the levels: finished since the earliest of them started, running across hi (ending
        up to OVERLAP after it), or not finished.

        Bounded ranges of the finished_at and status indexes: a range open to the future
        would read every later job for each step of a backfill.
        """
        with self.sessions() as session:
            ended = [run_of(row) for row in session.execute(RUNS.where(
                Job.finished_at >= lo, Job.finished_at < hi))]
            if not ended:
                return [], []
            earliest = datetime.fromtimestamp(min(run.started for run in ended), UTC)
            rows = [*session.execute(RUNS.where(Job.finished_at >= earliest,
                                                Job.finished_at < lo)),
                    *session.execute(RUNS.where(
                        Job.finished_at >= hi, Job.finished_at < hi + OVERLAP,
                        Job.started_at < hi)),
                    *session.execute(RUNS.where(Job.status.in_(UNFINISHED),
                                                Job.started_at < hi))]
        return ended, [run_of(row) for row in rows]

    def _prune(self, now: datetime) -> None:
        """Drop minute and hour rows that coarser rows already hold, once past keeping."""
        marks = self.marks()
        with self.sessions.begin() as session:
            for period, coarser in ((MINUTE, HOUR), (HOUR, DAY)):
                if marks[coarser] is None:
                    continue
                until = min(marks[coarser], now - timedelta(seconds=KEEP_S[period]))
                session.execute(delete(JobRollup).where(JobRollup.period == period,
                                                        JobRollup.start < until))


def minute_rows(ended: list[Run], others: list[Run], now: float) -> list[dict]:
    """The minute rows for the runs in `ended`, their levels read against `others` too.

    Busy seconds go to the first minute whose job covers them: a minute's share of a level
    is what its jobs' runs add to the union of that level's runs that finished before.
    """
    everyone = [*ended, *others]
    levels = concurrency_levels(everyone, now)
    cells: dict[tuple[datetime, str, int], Cell] = defaultdict(Cell)
    coverage: dict[tuple[str, int], Coverage] = defaultdict(Coverage)
    order = sorted((i for i, run in enumerate(everyone) if run.reported),
                   key=lambda i: everyone[i].finished)
    for i in order:
        run, level = everyone[i], levels[i]
        added = coverage[(run.model, level)].add(run.started, run.finished)
        if i < len(ended):  # one of this step's; the others only give levels and cover
            minute = datetime.fromtimestamp(math.floor(run.finished / MINUTE) * MINUTE, UTC)
            cell = cells[(minute, run.model, level)]
            cell.add_run(run)
            cell.busy_s += added
    return [_row(MINUTE, *key, cell) for key, cell in cells.items()]


def _row(period: int, start: datetime, model: str, level: int, cell: Cell) -> dict:
    return {"period": period, "start": start, "model": model, "concurrency": level,
            "requests": cell.requests, "tokens": cell.tokens, "rate_sum": cell.rate_sum,
            "rated": cell.rated, "busy_s": cell.busy_s,
            **{name: cell.stored(name) for name in HISTOGRAMS}}


def _subtract(lo: datetime, hi: datetime, covered: list[tuple[datetime, datetime]]
              ) -> list[tuple[datetime, datetime]]:
    """The parts of [lo, hi) that no `covered` span holds."""
    pieces = [(lo, hi)]
    for c_lo, c_hi in covered:
        pieces = [part for p_lo, p_hi in pieces
                  for part in ((p_lo, min(p_hi, c_lo)), (max(p_lo, c_hi), p_hi))
                  if part[0] < part[1]]
    return pieces


def _floor(value: datetime, period: int) -> datetime:
    seconds = aware(value).timestamp()
    return datetime.fromtimestamp(math.floor(seconds / period) * period, UTC)


def _ceil(value: datetime, period: int) -> datetime:
    seconds = aware(value).timestamp()
    return datetime.fromtimestamp(math.ceil(seconds / period) * period, UTC)
