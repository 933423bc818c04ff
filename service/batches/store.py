"""Batches: many requests from one file, fed to the queue a window at a time.

A batch's lines are validated and stored when it is created (`batch_lines`, one row each;
a bad line keeps its error and never runs). Only `CORRAL_BATCH_WINDOW` of them are jobs
at any moment: each time one of its jobs ends, the worker that ran it asks its `Feeder`
to submit the next lines. So a 100,000-line file costs Redis a
window's worth of messages, and interactive requests (on their own queue, at higher broker
priority) never wait behind more than the lines already running.

Feeding is serialised per batch by a Redis lock, and each line is claimed by a conditional
UPDATE (`job_id IS NULL`), so two workers finishing at once never submit the same line.
Every step is recomputed from the rows, so `refresh` (called when a batch is read) resumes a
batch whose feeder died between steps.

Status: validating → in_progress → finalizing → completed, or failed (no valid line),
cancelling → cancelled, expired (its completion window passed; checked lazily).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

from redis.exceptions import LockError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from service.batches.records import Batch, BatchLine, BatchStatus, Counts, LineSpec
from service.core.db import aware, now
from service.core.errors import Conflict, NotFound, ServiceUnavailable
from service.jobs.control import request_cancel
from service.jobs.events import Publisher
from service.jobs.kinds import JobKind
from service.jobs.queue import JobQueue, batch_queue
from service.jobs.records import Job, JobStatus

log = logging.getLogger(__name__)

__all__ = ["Batch", "BatchLine", "BatchStatus", "BatchStore", "Counts", "Feeder", "LineSpec"]

WINDOWS = {"24h": timedelta(hours=24)}
# A queued batch job this old, with nothing waiting in Redis, lost its message.
LOST_AFTER = timedelta(seconds=60)
_INSERT_CHUNK = 1000
_READ_CHUNK = 1000


def new_id() -> str:
    return f"batch_{uuid.uuid4().hex}"


class BatchStore:
    """Create, feed, cancel and read batches; jobs go out through `queue`."""

    def __init__(self, queue: JobQueue, window: int, result_ttl: float = 86400.0) -> None:
        self.queue = queue
        # Lines are submitted a step at a time, once that much of the window is free: each
        # feed takes the batch's lock and reads its rows, which per line cost more CPU than
        # the line's own job bookkeeping (2 cores, a batch of 16-token lines).
        self.step = max(1, window // 4)
        self.jobs = queue.jobs
        self.sessions = queue.jobs.sessions
        self.redis = queue.redis
        self.window = window
        self.result_ttl = result_ttl

    # ---- creation --------------------------------------------------------------------
    def create(self, lines: Iterable[LineSpec], *, endpoint: str, queue: str,
               model: str | None = None, input_file_id: str | None = None,
               priority: int = 0, metadata: dict[str, Any] | None = None,
               idempotency_key: str | None = None, completion_window: str = "24h",
               owner: str | None = None) -> Batch:
        """Store every line, then start feeding; a batch with no valid line is failed.

        A repeated idempotency_key returns the existing batch (resumed if it was
        cancelled or expired) instead of creating another one.
        """
        if idempotency_key and (existing := self.by_key(idempotency_key)) is not None:
            return self.resume(existing.id)
        created = now()
        batch = Batch(id=new_id(), status=BatchStatus.VALIDATING.value, endpoint=endpoint,
                      model=model, input_file_id=input_file_id, meta=metadata,
                      completion_window=completion_window, idempotency_key=idempotency_key,
                      queue=queue, priority=priority, created_at=created,
                      expires_at=created + WINDOWS[completion_window], total=0, fed=0,
                      owner=owner)
        try:
            with self.sessions.begin() as session:
                session.add(batch)
                session.flush()
                total, errors = self._insert_lines(session, batch.id, lines)
                self._validated(batch, total, errors)
        except IntegrityError:
            if idempotency_key and (existing := self.by_key(idempotency_key)) is not None:
                return self.resume(existing.id)
            raise
        self.feed(batch.id)
        return self.get(batch.id)

    def _insert_lines(self, session, batch_id: str, lines: Iterable[LineSpec]
                      ) -> tuple[int, list[dict[str, Any]]]:
        """Insert lines in chunks; return the count and the rejected lines' errors."""
        total, errors, chunk = 0, [], []
        for spec in lines:
            total += 1
            if spec.error is not None:
                errors.append({**spec.error, "line": spec.line})
            chunk.append({
                "batch_id": batch_id, "line": spec.line, "custom_id": spec.custom_id,
                "kind": spec.kind.value if spec.kind else None, "model": spec.model,
                "body": spec.body, "job_id": None,
                "error": None if spec.error is None else json.dumps(spec.error)})
            if len(chunk) >= _INSERT_CHUNK:
                session.execute(BatchLine.__table__.insert(), chunk)
                chunk = []
        if chunk:
            session.execute(BatchLine.__table__.insert(), chunk)
        return total, errors

    @staticmethod
    def _validated(batch: Batch, total: int, errors: list[dict[str, Any]]) -> None:
        """in_progress if any line can run; otherwise failed, listing why (as OpenAI does)."""
        batch.total = total
        if total and len(errors) < total:
            batch.status, batch.in_progress_at = BatchStatus.IN_PROGRESS.value, now()
            return
        batch.status, batch.failed_at = BatchStatus.FAILED.value, now()
        batch.errors = errors[:100] or [{"code": "empty_file", "line": None, "param": None,
                                         "message": "the input file has no requests"}]

    # ---- reading ---------------------------------------------------------------------
    def get(self, batch_id: str) -> Batch:
        with self.sessions() as session:
            batch = session.get(Batch, batch_id)
        if batch is None:
            raise NotFound(f"batch '{batch_id}' not found")
        return batch

    def by_key(self, key: str) -> Batch | None:
        with self.sessions() as session:
            return session.scalars(select(Batch).where(Batch.idempotency_key == key)).first()

    def list(self, *, after: str | None = None, limit: int = 20,
             owner: str | None = None) -> list[Batch]:
        """Batches newest first; `after` is the last id of the previous page, `owner` the
        key whose batches alone are wanted."""
        query = select(Batch)
        if owner:
            query = query.where(Batch.owner == owner)
        if after:
            last = self.get(after)
            query = query.where((Batch.created_at < last.created_at) |
                                ((Batch.created_at == last.created_at) & (Batch.id < last.id)))
        query = query.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit)
        with self.sessions() as session:
            return list(session.scalars(query))

    def counts(self, batch_id: str) -> Counts:
        """Count the lines by where they are (one grouped query over the batch's rows)."""
        invalid = BatchLine.error.is_not(None)
        query = (select(Job.status, invalid, func.count(), func.sum(Job.eval_count),
                        func.sum(Job.eval_duration))
                 .select_from(BatchLine).outerjoin(Job, Job.id == BatchLine.job_id)
                 .where(BatchLine.batch_id == batch_id).group_by(Job.status, invalid))
        counts = Counts()
        with self.sessions() as session:
            for status, bad, n, tokens, eval_ns in session.execute(query):
                name = "invalid" if bad else (status or "pending")
                setattr(counts, name, getattr(counts, name) + n)
                counts.total += n
                counts.tokens += int(tokens or 0)
                counts.eval_ns += int(eval_ns or 0)
        return counts

    def rows(self, batch_id: str) -> Iterator[tuple[BatchLine, Job | None]]:
        """Every line with its job (if any), in input order, read a chunk at a time."""
        last = 0
        while True:
            query = (select(BatchLine, Job).outerjoin(Job, Job.id == BatchLine.job_id)
                     .where(BatchLine.batch_id == batch_id, BatchLine.line > last)
                     .order_by(BatchLine.line).limit(_READ_CHUNK))
            with self.sessions() as session:
                chunk = [(line, job) for line, job in session.execute(query)]
            yield from chunk
            if len(chunk) < _READ_CHUNK:
                return
            last = chunk[-1][0].line

    def in_flight(self, batch: Batch) -> list[str]:
        """Ids of the batch's queued or running jobs (bounded by the window)."""
        live = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
        query = select(Job.id).where(Job.queue == batch_queue(batch.queue),
                                     Job.status.in_(live), Job.batch_id == batch.id)
        with self.sessions() as session:
            return list(session.scalars(query))

    # ---- feeding ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self, batch_id: str) -> Iterator[None]:
        """Hold the batch's feeder lock: feeding, cancelling and expiring never interleave."""
        with self.redis.lock(f"corral:batch:{batch_id}:feed", timeout=120,
                             blocking_timeout=60):
            yield

    def refresh(self, batch_id: str) -> Batch:
        """Expire the batch if its window has passed, recover lost jobs, feed it; return it.

        The faces call this whenever a batch is read, which is the sweep that keeps a batch
        moving after a feeder died between steps.
        """
        batch = self.get(batch_id)
        expires = batch.expires_at
        if BatchStatus(batch.status).active and expires and aware(expires) <= now():
            with contextlib.suppress(LockError), self._exclusive(batch_id):
                if self._move(batch_id, _ACTIVE, BatchStatus.EXPIRED, expired_at=now()):
                    self._stop_jobs(batch)
        self._recover(batch)
        self.feed(batch_id)
        return self.get(batch_id)

    def sweep(self) -> None:
        """Refresh every unfinished batch; workers run this now and then, so a batch nobody
        reads still recovers from a feeder that died between steps, and still expires."""
        live = [s.value for s in BatchStatus if not s.ended]
        with self.sessions() as session:
            ids = list(session.scalars(select(Batch.id).where(Batch.status.in_(live))))
        for batch_id in ids:
            self.refresh(batch_id)

    def _recover(self, batch: Batch) -> None:
        """Re-send queued jobs whose messages are gone (a feeder died between claiming and
        enqueueing, or Redis lost its lists). A duplicate is harmless: Runtime.run starts a
        job only if its row is still queued."""
        queue = batch_queue(batch.queue)
        if not BatchStatus(batch.status).active or self.queue.waiting(queue):
            return
        query = select(Job).where(Job.queue == queue, Job.status == JobStatus.QUEUED.value,
                                  Job.batch_id == batch.id, Job.created_at < now() - LOST_AFTER)
        with self.sessions() as session:
            lost = list(session.scalars(query))
        for job in lost:
            log.warning("batch %s: re-sending job %s, whose message was lost", batch.id, job.id)
            self.queue.enqueue(job)

    def feed(self, batch_id: str) -> None:
        """Fill the window with the next lines, then settle the status; safe to call anytime."""
        try:
            with self._exclusive(batch_id):
                batch = self.get(batch_id)
                flying = len(self.in_flight(batch))
                if BatchStatus(batch.status).active:
                    flying += self._fill(batch, flying)
                self._settle(batch, flying)
        except LockError:
            log.warning("batch %s: feeder lock busy, leaving it to the next feed", batch_id)

    def _fill(self, batch: Batch, flying: int) -> int:
        """Submit the next lines once a step's worth of the window is free (`step`), `flying`
        being the batch's jobs queued or running; return how many were submitted. One
        transaction records their jobs and claims their lines, however many they are."""
        room = self.window - flying
        if room < self.step and (room <= 0 or not self._starving(batch)):
            return 0
        query = (select(BatchLine).where(BatchLine.batch_id == batch.id,
                                         BatchLine.job_id.is_(None), BatchLine.error.is_(None))
                 .order_by(BatchLine.line).limit(room))
        with self.sessions() as session:
            lines = list(session.scalars(query))
        jobs = self._submit(batch, lines)
        for job in jobs:
            self.queue.enqueue(job)
        return len(jobs)

    def _starving(self, batch: Batch) -> bool:
        """Whether the batch's queue has run dry while the window has room: feed what room
        there is rather than wait for a whole step's worth."""
        return self.queue.waiting(batch_queue(batch.queue)) == 0

    def _submit(self, batch: Batch, lines: list[BatchLine]) -> list[Job]:
        """Record the lines' jobs and claim each line for its job, in one transaction, and
        return the jobs to enqueue.

        A line that another feeder claimed meanwhile (this one's lock lapsed) keeps that
        feeder's job; the job made here for it is deleted in the same transaction, so no
        worker ever sees it. Per line, the submission was a transaction to record the job
        and one to claim the line; a step of 16 lines now costs one.
        """
        rows = [self.jobs.queued(JobKind(line.kind), line.model or "", line.body or {},
                                 queue=batch_queue(batch.queue), priority=batch.priority,
                                 batch_id=batch.id, owner=batch.owner) for line in lines]
        if not rows:
            return []
        lost: set[str] = set()
        with self.sessions.begin() as session:
            self.jobs.insert(session, rows)
            for line, row in zip(lines, rows, strict=True):
                claimed = session.execute(
                    update(BatchLine).where(BatchLine.batch_id == batch.id,
                                            BatchLine.line == line.line,
                                            BatchLine.job_id.is_(None))
                    .values(job_id=row["id"])).rowcount == 1
                if not claimed:
                    lost.add(row["id"])
            if lost:
                session.execute(delete(Job).where(Job.id.in_(lost)))
            if len(rows) > len(lost):
                session.execute(update(Batch).where(Batch.id == batch.id)
                                .values(fed=Batch.fed + len(rows) - len(lost)))
        return [Job(**row) for row in rows if row["id"] not in lost]

    def _pending(self, batch_id: str) -> bool:
        query = select(BatchLine.line).where(
            BatchLine.batch_id == batch_id, BatchLine.job_id.is_(None),
            BatchLine.error.is_(None)).limit(1)
        with self.sessions() as session:
            return session.scalar(query) is not None

    def _settle(self, batch: Batch, flying: int) -> None:
        """Move the status on once nothing is left in flight (`flying`: the batch's jobs
        queued or running) and, if running, nothing left to feed."""
        if flying:
            return
        status = BatchStatus(self.get(batch.id).status)
        waiting = (BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, BatchStatus.FINALIZING)
        if status not in waiting:
            return
        if status is BatchStatus.CANCELLING:
            self._move(batch.id, (status,), BatchStatus.CANCELLED, cancelled_at=now())
            return
        if status is BatchStatus.IN_PROGRESS:
            if self._pending(batch.id):
                return
            self._move(batch.id, (status,), BatchStatus.FINALIZING, finalizing_at=now())
        # Output files are rendered from the rows when read, so finalizing has no work.
        self._move(batch.id, (BatchStatus.FINALIZING,), BatchStatus.COMPLETED,
                   completed_at=now())

    def _move(self, batch_id: str, allowed: Iterable[BatchStatus], to: BatchStatus,
              **values: Any) -> bool:
        """Compare-and-set the batch's status; False if it was not in `allowed`."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(Batch).where(Batch.id == batch_id,
                                    Batch.status.in_([s.value for s in allowed]))
                .values(status=to.value, **values))
            return result.rowcount == 1

    # ---- stopping and resuming -------------------------------------------------------
    def cancel(self, batch_id: str) -> Batch:
        """Stop feeding, cancel queued jobs, stop running ones; 409 if the batch has ended."""
        batch = self.get(batch_id)
        try:
            with self._exclusive(batch_id):
                moved = self._move(batch_id, _ACTIVE, BatchStatus.CANCELLING,
                                   cancelling_at=now())
                if moved:
                    self._stop_jobs(batch)
        except LockError:
            raise ServiceUnavailable(f"batch '{batch_id}' is busy, retry") from None
        current = self.get(batch_id).status
        if not moved and current not in (BatchStatus.CANCELLING.value,
                                         BatchStatus.CANCELLED.value):
            raise Conflict(f"batch '{batch_id}' already {current}")
        self.feed(batch_id)
        return self.get(batch_id)

    def _stop_jobs(self, batch: Batch) -> None:
        for job_id in self.in_flight(batch):
            if self.jobs.cancel_queued(job_id):
                Publisher(self.redis, job_id, self.result_ttl).emit("done", done_reason="cancel")
            else:
                request_cancel(self.redis, job_id)

    def resume(self, batch_id: str) -> Batch:
        """Run again the lines a cancelled or expired batch did not finish; others as they are.

        Lines that succeeded or failed keep their jobs, so re-submitting a file never redoes
        work already done.
        """
        batch = self.get(batch_id)
        ended = (BatchStatus.CANCELLED, BatchStatus.EXPIRED)
        if BatchStatus(batch.status) not in ended or self.in_flight(batch):
            return self.refresh(batch_id)
        cancelled = select(Job.id).where(Job.batch_id == batch_id,
                                         Job.status == JobStatus.CANCELLED.value)
        with self.sessions.begin() as session:
            moved = session.execute(
                update(Batch).where(Batch.id == batch_id,
                                    Batch.status.in_([s.value for s in ended]))
                .values(status=BatchStatus.IN_PROGRESS.value, cancelling_at=None,
                        cancelled_at=None, expired_at=None, output_file_id=None,
                        error_file_id=None, expires_at=now() + WINDOWS[batch.completion_window]))
            if moved.rowcount == 1:
                session.execute(update(BatchLine).where(BatchLine.batch_id == batch_id,
                                                        BatchLine.job_id.in_(cancelled))
                                .values(job_id=None))
        return self.refresh(batch_id)

    def attach_files(self, batch_id: str, output_id: str | None, error_id: str | None,
                     records: Iterable[Any]) -> bool:
        """Set the batch's output/error file ids and add their rows, once (first caller wins)."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(Batch).where(Batch.id == batch_id, Batch.output_file_id.is_(None),
                                    Batch.error_file_id.is_(None))
                .values(output_file_id=output_id, error_file_id=error_id))
            if result.rowcount != 1:
                return False
            for row in records:
                session.add(row)
        return True

    def by_file(self, file_id: str) -> Batch | None:
        """The batch whose output or error file this is."""
        query = select(Batch).where((Batch.output_file_id == file_id) |
                                    (Batch.error_file_id == file_id))
        with self.sessions() as session:
            return session.scalars(query).first()


_ACTIVE = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)


GATHER_S = 0.1  # a Feeder's pass waits this long after the first job's end for others


class Feeder:
    """Feeds batches from one background thread of a worker.

    The task thread that ran a job is free to take its next job at once instead of waiting
    for the feed, and the jobs of a batch that end within GATHER_S of each other are fed in
    one pass (a batch's lines end a few at a time, tens of them a second).
    """

    def __init__(self, batches: BatchStore) -> None:
        self.batches = batches
        self._due: set[str] = set()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="corral-batch-feeder",
                                        daemon=True)
        self._thread.start()

    def notify(self, batch_id: str) -> None:
        """A job of batch_id ended (any status): feed its next lines soon."""
        with self._wake:
            first = not self._due  # later ones join the pass that is gathering
            self._due.add(batch_id)
            if first:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due and not self._closed:
                    self._wake.wait()
                if not self._due:
                    return
                if not self._closed:  # the other lines ending about now come in this pass
                    self._wake.wait(GATHER_S)
                due, self._due = self._due, set()
            for batch_id in due:
                try:
                    with contextlib.suppress(NotFound):  # a /jobs "batch" label, no batch row
                        self.batches.feed(batch_id)
                except Exception:  # the next job's end, or the sweep, feeds it again
                    log.exception("feeding batch %s failed", batch_id)

    def close(self, timeout: float = 10.0) -> None:
        """Finish the feeds already asked for, then stop."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)
