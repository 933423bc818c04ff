"""Batch rows: a batch, its input lines, and the value types the faces hand to BatchStore.

The schema is Alembic's (migrations 0002 and 0003); these classes mirror it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, aware
from service.jobs.kinds import JobKind


class BatchStatus(str, Enum):
    """OpenAI's batch statuses, which corral's native face shares."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """Lines are still being fed."""
        return self in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)

    @property
    def ended(self) -> bool:
        return self in (BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED,
                        BatchStatus.CANCELLED)


class Batch(Base):
    """One batch. Columns mirror migrations 0002 and 0003."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(255))
    input_file_id: Mapped[str | None] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16), default="24h")
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    fed: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    queue: Mapped[str] = mapped_column(String(64), default="cpu")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    output_file_id: Mapped[str | None] = mapped_column(String(64))
    error_file_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    in_progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finalizing_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelling_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    owner: Mapped[str | None] = mapped_column(String(32))  # the API key it was made with

    def unix(self, name: str) -> int | None:
        """A time column in unix seconds (OpenAI's format), or None."""
        value = getattr(self, name)
        return None if value is None else int(aware(value).timestamp())

    def iso(self, name: str) -> str | None:
        value = getattr(self, name)
        return None if value is None else aware(value).isoformat()


class BatchLine(Base):
    """One input line: what to run (kind, model, body = the job request) or why not (error)."""

    __tablename__ = "batch_lines"

    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    custom_id: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str | None] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(255))
    body: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)  # JSON {"code", "message", "param"}
    job_id: Mapped[str | None] = mapped_column(String(32))

    @property
    def problem(self) -> dict[str, Any] | None:
        return None if self.error is None else json.loads(self.error)


@dataclass
class LineSpec:
    """A parsed input line: runnable (kind, model, body) or rejected (error)."""

    line: int  # 1-based line number in the file
    custom_id: str | None = None
    kind: JobKind | None = None
    model: str | None = None
    body: dict[str, Any] | None = None  # the job request, as the worker reads it
    error: dict[str, Any] | None = None  # {"code", "message", "param"}


@dataclass
class Counts:
    """Where a batch's lines are; `tokens`/`eval_ns` sum the finished jobs' generation."""

    total: int = 0
    pending: int = 0  # not fed yet
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0  # jobs that failed
    invalid: int = 0  # lines rejected at creation
    cancelled: int = 0
    tokens: int = 0
    eval_ns: int = 0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.invalid + self.cancelled
