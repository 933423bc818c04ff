"""Keeping the history: roll finished jobs up for the report, then expire what is too old.

Every worker runs `HistoryKeeper.tick` now and then; a Redis lock lets one process at a time
do it, and every step is safe to repeat (the rollups move their marks by compare-and-set), so a
keeper killed halfway leaves nothing half done that the next one does not finish.

With CORRAL_RETENTION set, finished jobs older than it are deleted, but only once the rollups
hold them, so `corral report` keeps their figures; a batch's jobs go with the batch (its row
and lines) when the batch ended longer ago than the retention, never while it can still be
read line by line. Uploaded files stay until deleted through /v1/files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from service.batches.records import Batch, BatchLine, BatchStatus
from service.core.db import now
from service.history.rollups import MINUTE, Rollups
from service.jobs.records import Job, JobStatus

log = logging.getLogger(__name__)

LOCK = "corral:history:keeper"
LOCK_S = 300  # a keeper that dies holding the lock holds it no longer than this
BUDGET_S = 2.0  # roll steps one tick may take: a backfill goes on over later ticks
BATCH_ROWS = 5000  # jobs deleted per statement: short transactions beside live writers
FINAL = [s.value for s in JobStatus if s.finished]
ENDED_BATCH = [s.value for s in BatchStatus if s.ended]


@dataclass(frozen=True)
class Expired:
    """What one sweep removed."""

    jobs: int = 0
    batches: int = 0


class HistoryKeeper:
    """Rolls the history up and applies the retention; `retention` 0 keeps every row."""

    def __init__(self, sessions: sessionmaker[Session], client: redis.Redis,
                 retention: float) -> None:
        self.sessions = sessions
        self.redis = client
        self.retention = retention
        self.rollups = Rollups(sessions)

    def tick(self, at: datetime | None = None) -> bool:
        """One round if no other process is at it: a roll step, then expiry; True if run."""
        lock = self.redis.lock(LOCK, timeout=LOCK_S, blocking=False)
        if not lock.acquire():
            return False
        try:
            at = at or now()
            self.roll(at)
            self.expire(at)
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:  # it timed out; another keeper may hold it
                pass
        return True

    def roll(self, at: datetime) -> None:
        """Roll steps until up to date or BUDGET_S is spent (a first roll over a long
        history takes about 90 s per million jobs: many ticks, none of them long)."""
        self.rollups.roll_all(at, BUDGET_S)

    def cutoff(self, at: datetime) -> datetime | None:
        """Jobs that finished before this may go: past the retention and rolled up."""
        if self.retention <= 0:
            return None
        mark = self.rollups.marks()[MINUTE]
        if mark is None:
            return None
        return min(at - timedelta(seconds=self.retention), mark)

    def expire(self, at: datetime) -> Expired:
        """Delete the jobs and batches that the retention lets go."""
        cutoff = self.cutoff(at)
        if cutoff is None:
            return Expired()
        batches = self._expire_batches(cutoff)
        jobs = self._expire_jobs(cutoff)
        if jobs or batches:
            log.info("history: %d jobs and %d batches older than the retention deleted",
                     jobs, batches)
        return Expired(jobs, batches)

    def _expire_jobs(self, cutoff: datetime) -> int:
        """Standalone finished jobs that finished before `cutoff`, a slice at a time."""
        total = 0
        while True:
            with self.sessions.begin() as session:
                ids = list(session.scalars(select(Job.id).where(
                    Job.finished_at < cutoff, Job.batch_id.is_(None),
                    Job.status.in_(FINAL)).limit(BATCH_ROWS)))
                if ids:
                    session.execute(delete(Job).where(Job.id.in_(ids)))
            total += len(ids)
            if len(ids) < BATCH_ROWS:
                return total

    def _expire_batches(self, cutoff: datetime) -> int:
        """Ended batches whose end is before `cutoff`: their jobs, lines and row."""
        ended = func.coalesce(Batch.completed_at, Batch.failed_at, Batch.cancelled_at,
                              Batch.expired_at)
        with self.sessions() as session:
            ids = list(session.scalars(select(Batch.id).where(
                Batch.status.in_(ENDED_BATCH), ended < cutoff).limit(100)))
        for batch_id in ids:
            with self.sessions.begin() as session:
                session.execute(delete(Job).where(Job.batch_id == batch_id,
                                                  Job.status.in_(FINAL)))
                session.execute(delete(BatchLine).where(BatchLine.batch_id == batch_id))
                session.execute(delete(Batch).where(Batch.id == batch_id))
        return len(ids)
