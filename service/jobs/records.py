"""Job records: the history of every request, and the one place that changes a job's state.

A job moves queued → running → succeeded | failed | cancelled. Every transition is a
conditional UPDATE (compare-and-set on the current status), so a worker and an API process
racing on the same job — a timeout failing it while a worker starts it — never both win.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Integer,
    String,
    Text,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from service.core.db import Base, aware, now
from service.jobs.kinds import JobKind
from service.jobs.metrics import Ended, JobMeter


class JobStatus(str, Enum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job(Base):
    """One row per request. Columns mirror migrations/versions; Alembic owns the schema."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    batch_id: Mapped[str | None] = mapped_column(String(64))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    done_reason: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    prompt_eval_count: Mapped[int | None] = mapped_column(Integer)
    prompt_eval_duration: Mapped[int | None] = mapped_column(BigInteger)
    eval_count: Mapped[int | None] = mapped_column(Integer)
    eval_duration: Mapped[int | None] = mapped_column(BigInteger)
    load_duration: Mapped[int | None] = mapped_column(BigInteger)
    total_duration: Mapped[int | None] = mapped_column(BigInteger)
    first_token_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker_host: Mapped[str | None] = mapped_column(String(255))
    worker_node: Mapped[str | None] = mapped_column(String(255))  # its Celery node (0007)
    device: Mapped[str | None] = mapped_column(String(32))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # times a worker took it
    lease_owner: Mapped[str | None] = mapped_column(String(255))  # the worker holding it
    # running: until when its worker's hold lasts; queued again after a loss: when to resend
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lost_by: Mapped[list[str] | None] = mapped_column(JSON)  # workers that vanished holding it
    owner: Mapped[str | None] = mapped_column(String(32))  # the API key it was made with
    # the answer as sent: {"content", "thinking"?, "tool_calls"?, "logprobs"?} (0006)
    reply: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    def elapsed_ns(self) -> int:
        """Nanoseconds from the job's creation (request accepted) until now."""
        return int((now() - aware(self.created_at)).total_seconds() * 1e9)

    def answer(self) -> tuple[str, dict[str, Any]]:
        """The answer's text, and the data its `done` event had as the record keeps it:
        reason, counts, and what the reply split out (reasoning, tool calls, logprobs); the raw
        output alone for a job recorded before replies were (migration 0006)."""
        reply = self.reply or {"content": self.output or ""}
        done = {k: v for k, v in reply.items() if k != "content"}
        done.update(done_reason=self.done_reason or "stop", eval_count=self.eval_count,
                    prompt_eval_count=self.prompt_eval_count)
        return reply.get("content", ""), done

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON for the API and CLI."""
        data = {c.name: getattr(self, c.name) for c in self.__table__.columns}
        for key in ("created_at", "started_at", "finished_at", "first_token_at",
                    "lease_expires_at"):
            if data[key] is not None:
                data[key] = aware(data[key]).isoformat()
        return data


METRIC_FIELDS = (
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
    "load_duration",
    "total_duration",
)


_JOBS = Job.__table__
# Every request creates a row and its worker claims it before the first token. Both statements
# are built once, on the table: building an ORM statement per call cost more than running it
# (SQLite, hot loop: create 0.70 → 0.38 ms, claim 1.24 → 0.49 ms).
_INSERT = insert(_JOBS)
_CLAIM = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.status == JobStatus.QUEUED.value)
    .values(status=JobStatus.RUNNING.value, started_at=bindparam("started_at"),
            worker_host=bindparam("worker_host"), worker_node=bindparam("worker_node"),
            device=bindparam("device"), lease_owner=bindparam("holder"),
            lease_expires_at=bindparam("expires"),
            attempts=_JOBS.c.attempts + 1)
    .returning(*_JOBS.c)
)
_RUNNING, _QUEUED = JobStatus.RUNNING.value, JobStatus.QUEUED.value
_FINAL = {s.value for s in JobStatus if s.finished}
# What the meter counts of a job that ends, returned by the UPDATE that ends it.
_METERED = (Job.model, Job.kind, Job.status, Job.created_at, Job.finished_at, Job.first_token_at,
            Job.eval_count, Job.prompt_eval_count)


class JobStore:
    """Create, read and transition job rows through one sessionmaker.

    With a `meter`, every job this store moves to a final state is counted once in Redis
    (service.jobs.metrics), whichever process ends it: a worker, the API or a sweep.
    """

    def __init__(self, sessions: sessionmaker[Session], meter: JobMeter | None = None) -> None:
        self.sessions = sessions
        self.meter = meter

    def create(
        self,
        kind: JobKind,
        model: str,
        request: dict[str, Any],
        *,
        queue: str,
        priority: int = 0,
        batch_id: str | None = None,
        idempotency_key: str | None = None,
        owner: str | None = None,
        resend_at: datetime | None = None,
    ) -> Job:
        """Record a new queued job and return it (detached: a plain record of the row);
        `resend_at`: when the lease sweep sends it again if no worker has claimed it by then
        (every interactive job has one: service.jobs.queue)."""
        values = self.queued(kind, model, request, queue=queue, priority=priority,
                             batch_id=batch_id, idempotency_key=idempotency_key, owner=owner,
                             resend_at=resend_at)
        with self.sessions.begin() as session:
            self.insert(session, [values])
        return Job(**values)

    @staticmethod
    def queued(kind: JobKind, model: str, request: dict[str, Any], *, queue: str,
               priority: int = 0, batch_id: str | None = None,
               idempotency_key: str | None = None, owner: str | None = None,
               resend_at: datetime | None = None) -> dict[str, Any]:
        """The row of a new queued job, for `insert` (create() is both in one)."""
        return {
            "id": uuid.uuid4().hex,
            "kind": kind.value,
            "model": model,
            "status": JobStatus.QUEUED.value,
            "queue": queue,
            "priority": priority,
            "batch_id": batch_id,
            "request": request,
            "created_at": now(),
            "idempotency_key": idempotency_key,
            "owner": owner,
            "lease_expires_at": resend_at,
        }

    @staticmethod
    def insert(session: Session, rows: list[dict[str, Any]]) -> None:
        """Add `queued` rows inside the caller's transaction (a batch's feeder records a
        step's jobs and claims their lines in one)."""
        if rows:
            session.execute(_INSERT, rows)

    def get(self, job_id: str) -> Job | None:
        with self.sessions() as session:
            return session.get(Job, job_id)

    def claim(self, job_id: str, *, worker_host: str, device: str, owner: str,
              lease: float, worker_node: str | None = None) -> Job | None:
        """Mark a queued job running under `owner`'s lease of `lease` seconds and return it;
        None if it is no longer queued (cancelled, timed out, or taken by another worker, so
        a repeated or late message is dropped).

        One UPDATE ... RETURNING, so a worker reads and takes its job in one round trip.
        """
        started = now()
        params = {"job_id": job_id, "started_at": started, "worker_host": worker_host,
                  "worker_node": worker_node, "device": device, "holder": owner,
                  "expires": started + timedelta(seconds=lease)}
        with self.sessions.begin() as session:
            row = session.execute(_CLAIM, params).first()
        return None if row is None else Job(**row._mapping)

    def renew(self, owner: str, lease: float) -> int:
        """Extend every lease `owner` holds by `lease` seconds from now; how many it holds."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(Job).where(Job.lease_owner == owner, Job.status == _RUNNING)
                .values(lease_expires_at=now() + timedelta(seconds=lease)))
            return result.rowcount

    def lapsed(self, limit: int = 100) -> list[Job]:
        """Running jobs whose lease ran out (their worker is gone), and jobs handed back that
        no worker took by their resend time (their message may be lost)."""
        due = Job.lease_expires_at < now()
        query = select(Job).where(due, (Job.status == _RUNNING) | (
            (Job.status == _QUEUED) & Job.lease_owner.is_(None))).limit(limit)
        with self.sessions() as session:
            return list(session.scalars(query))

    def hand_back(self, job: Job, lease: float) -> bool:
        """Queue a lapsed job again, noting the worker that lost it; resend due in `lease`."""
        lost = [*(job.lost_by or []), job.lease_owner or "?"]
        return self._transition(
            job.id, (JobStatus.RUNNING,), Job.lease_owner == job.lease_owner,
            Job.lease_expires_at == job.lease_expires_at, status=_QUEUED, lease_owner=None,
            lease_expires_at=now() + timedelta(seconds=lease), lost_by=lost, started_at=None)

    def give_up(self, job: Job, error: str) -> bool:
        """Fail a lapsed job that has been lost too often (same conditions as hand_back)."""
        return self._transition(
            job.id, (JobStatus.RUNNING,), Job.lease_owner == job.lease_owner,
            Job.lease_expires_at == job.lease_expires_at, status=JobStatus.FAILED.value,
            finished_at=now(), error=error, total_duration=job.elapsed_ns())

    def resend_due(self, job: Job, after: float) -> bool:
        """Push a handed-back job's resend time `after` seconds on; True if this caller is
        the one to resend it."""
        return self._transition(
            job.id, (JobStatus.QUEUED,), Job.lease_owner.is_(None),
            Job.lease_expires_at == job.lease_expires_at,
            lease_expires_at=now() + timedelta(seconds=after))

    def expect_pickup(self, job_id: str, by: datetime) -> bool:
        """Set a queued job's resend time to `by` (it is being routed to one worker); False
        if a worker holds it already."""
        return self._transition(job_id, (JobStatus.QUEUED,), Job.lease_owner.is_(None),
                                lease_expires_at=by)

    def release(self, job_id: str, owner: str) -> bool:
        """Give a running job back to the queue, due for resending at once (its worker lost
        Redis, not the job): the next sweep sends it again once Redis answers."""
        return self._transition(job_id, (JobStatus.RUNNING,), Job.lease_owner == owner,
                                status=_QUEUED, lease_owner=None, lease_expires_at=now(),
                                started_at=None)

    def cancel_abandoned(self, job: Job) -> bool:
        """Cancel a running job whose worker is gone, as long as that worker still holds it."""
        return self._transition(job.id, (JobStatus.RUNNING,),
                                Job.lease_owner == job.lease_owner,
                                status=JobStatus.CANCELLED.value, finished_at=now(),
                                done_reason="cancel", lease_owner=None)

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        output: str | None = None,
        error: str | None = None,
        done_reason: str | None = None,
        metrics: dict[str, int] | None = None,
        first_token_at: datetime | None = None,
        lease_owner: str | None = None,
        reply: dict[str, Any] | None = None,
    ) -> bool:
        """Record a job's end; False if it had already ended. A worker passes its
        `lease_owner`: then only a job it still holds ends, so a worker that lost its lease
        (the job went to another) never completes it a second time."""
        assert status.finished, status
        values: dict[str, Any] = {
            "status": status.value,
            "finished_at": now(),
            "output": output,
            "error": error,
            "done_reason": done_reason,
            "first_token_at": first_token_at,
            "reply": reply,
        }
        values.update({k: v for k, v in (metrics or {}).items() if k in METRIC_FIELDS})
        if lease_owner is not None:
            return self._transition(job_id, (JobStatus.RUNNING,), Job.lease_owner == lease_owner,
                                    **values)
        return self._transition(job_id, (JobStatus.QUEUED, JobStatus.RUNNING), **values)

    def forget(self, job_id: str) -> bool:
        """Drop a finished job's text (its messages, output and reply) at its owner's asking;
        what it cost (model, counts, durations) stays for the report."""
        job = self.get(job_id)
        if job is None or not JobStatus(job.status).finished:
            return False
        request = {k: v for k, v in job.request.items() if k not in ("messages", "prompt",
                                                                     "system", "suffix")}
        return self._transition(job_id, (JobStatus(job.status),), output=None, reply=None,
                                request={**request, "deleted": True})

    def _transition(self, job_id: str, allowed: Iterable[JobStatus], *where: Any,
                    **values: Any) -> bool:
        """One compare-and-set UPDATE: the job moves only from an `allowed` status, and only
        while every `where` clause still holds."""
        statuses = [s.value for s in allowed]
        statement = (update(Job).where(Job.id == job_id, Job.status.in_(statuses), *where)
                     .values(**values))
        ends = self.meter is not None and values.get("status") in _FINAL
        if not ends:
            with self.sessions.begin() as session:
                return session.execute(statement).rowcount == 1
        # The row that this UPDATE ended, if it won; counted only once its end is committed.
        with self.sessions.begin() as session:
            row = session.execute(statement.returning(*_METERED)).first()
        if row is None:
            return False
        self.meter.ended(Ended(**row._mapping))
        return True

    def by_idempotency_key(self, key: str) -> Job | None:
        with self.sessions() as session:
            return session.scalars(select(Job).where(Job.idempotency_key == key)).first()

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job that no worker has started; False if it already started or ended."""
        return self._transition(job_id, (JobStatus.QUEUED,), status=JobStatus.CANCELLED.value,
                                finished_at=now(), done_reason="cancel")

    def position(self, job: Job) -> int:
        """How many queued jobs on the same queue run before this one (0 = next)."""
        # Priorities share broker levels in pairs (service.jobs.queue.broker_priority).
        level, mine = Job.priority // 2, job.priority // 2
        ahead = (level > mine) | ((level == mine) & (Job.created_at < job.created_at))
        query = select(func.count()).select_from(Job).where(
            Job.queue == job.queue, Job.status == JobStatus.QUEUED.value, ahead)
        with self.sessions() as session:
            return int(session.scalar(query) or 0)

    def queued_ids(self, queues: Iterable[str], kinds: Iterable[str], since: datetime,
                   limit: int = 64) -> list[str]:
        """Ids of jobs of `kinds` queued on `queues` since `since`: the ones on their way to
        a worker of those queues (workers/arrivals)."""
        query = select(Job.id).where(Job.status == _QUEUED, Job.queue.in_(list(queues)),
                                     Job.kind.in_(list(kinds)), Job.created_at >= since
                                     ).limit(limit)
        with self.sessions() as session:
            return list(session.scalars(query))

    def unfinished(self) -> dict[str, int]:
        """How many jobs are queued and how many running: counted on an index that leads with
        status, alone, so it stays cheap however many finished jobs the table holds."""
        query = (select(Job.status, func.count()).where(Job.status.in_([_QUEUED, _RUNNING]))
                 .group_by(Job.status))
        with self.sessions() as session:
            counts = {status: int(n) for status, n in session.execute(query)}
        return {status: counts.get(status, 0) for status in (_QUEUED, _RUNNING)}

    def waiting_by_model(self) -> dict[str, int]:
        """Queued jobs per model, for `corral ps` and /api/ps."""
        query = (select(Job.model, func.count()).where(Job.status == JobStatus.QUEUED.value)
                 .group_by(Job.model))
        with self.sessions() as session:
            return {model: int(count) for model, count in session.execute(query)}

    def search(self, *, status: list[str] | None = None, model: str | None = None,
               batch_id: str | None = None, since: datetime | None = None,
               until: datetime | None = None, before: tuple[datetime, str] | None = None,
               owner: str | None = None, limit: int = 50) -> list[Job]:
        """Jobs newest first, filtered; `before` = (created_at, id) of the last row seen,
        `owner` a key whose jobs alone are wanted.

        Several statuses are read one by one and merged: each is a range of the index
        (status, created_at, id) in page order, where `status IN (...)` made the database
        sort every matching row first (34 ms at 100,000 jobs on SQLite, growing with them).
        """
        query = select(Job)
        if owner:
            query = query.where(Job.owner == owner)
        if model:
            query = query.where(Job.model == model)
        if batch_id:
            query = query.where(Job.batch_id == batch_id)
        if since:
            query = query.where(Job.created_at >= since)
        if until:
            query = query.where(Job.created_at < until)
        if before:
            created, last_id = before
            query = query.where((Job.created_at < created) |
                                ((Job.created_at == created) & (Job.id < last_id)))
        query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        statuses = list(dict.fromkeys(status or []))
        with self.sessions() as session:
            if len(statuses) < 2:
                chosen = query.where(Job.status == statuses[0]) if statuses else query
                return list(session.scalars(chosen))
            found = [job for one in statuses
                     for job in session.scalars(query.where(Job.status == one))]
        found.sort(key=lambda job: (aware(job.created_at), job.id), reverse=True)
        return found[:limit]

    def recent(self, limit: int = 100) -> list[Job]:
        """The newest jobs first."""
        return self.search(limit=limit)
