"""Counters of ended jobs, kept in Redis so that every process adds to the same ones.

corral runs many processes (gunicorn's API threads, Celery workers, perhaps on many hosts), and
a job may end in any of them: a worker finishes it, the API fails or cancels it, a sweep gives
it up. A counter in process memory would need prometheus_client's multiprocess mode on one
host and could not add up across hosts; a Redis hash can. The JobStore calls `JobMeter.ended`
once for each job it moves to a final state (the compare-and-set UPDATE that did it returned
the row, so a repeated or late end is never counted twice), which writes one MULTI of a few
HINCRBYs: the cost is per job, never per token.

Each family is one hash under `corral:metrics:<family>`; a field is the JSON list of the label
values (model names hold ':' and '/'), with the bucket index appended for a histogram, whose
buckets are kept apart (not cumulative) so an observation is one increment, plus a `sum`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import redis

from service.core.db import aware

log = logging.getLogger(__name__)

PREFIX = "corral:metrics:"
# Seconds: from a short embedding to a long generation waiting behind a batch.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
SUM = "sum"

# family → its labels; counters sum a value per label set, histograms count observations.
COUNTERS = {
    "jobs": ("model", "kind", "status"),
    "generated_tokens": ("model",),
    "prompt_tokens": ("model",),
}
HISTOGRAMS = {
    "request_latency": ("model", "kind"),  # created → finished, every ended job
    "first_token_latency": ("model",),  # created → first token, jobs that produced one
}

Labels = tuple[str, ...]


@dataclass(frozen=True)
class Ended:
    """What the meter needs of a job that has just ended, as the UPDATE that ended it
    returned the row."""

    model: str
    kind: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    first_token_at: datetime | None = None
    eval_count: int | None = None
    prompt_eval_count: int | None = None


@dataclass(frozen=True)
class Histogram:
    """One label set's observations: cumulative counts per bucket bound (the last one +Inf),
    and their sum."""

    buckets: list[tuple[float, int]]
    sum: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1] if self.buckets else 0


def bucket_index(seconds: float, bounds: Sequence[float] = LATENCY_BUCKETS) -> int:
    """The first bucket whose upper bound holds `seconds` (len(bounds) means +Inf)."""
    for index, bound in enumerate(bounds):
        if seconds <= bound:
            return index
    return len(bounds)


def _seconds(start: datetime, end: datetime | None) -> float | None:
    if end is None:
        return None
    return max(0.0, (aware(end) - aware(start)).total_seconds())


def _field(*values: object) -> str:
    return json.dumps([str(v) for v in values])


class JobMeter:
    """Writes (`ended`) and reads (`counters`, `histograms`) the job counters in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def ended(self, job: Ended) -> None:
        """Count one job that reached a final state. A Redis that cannot be reached loses
        this count (logged) rather than failing the job, whose end is already recorded."""
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(PREFIX + "jobs", _field(job.model, job.kind, job.status), 1)
                if job.eval_count:
                    pipe.hincrby(PREFIX + "generated_tokens", _field(job.model), job.eval_count)
                if job.prompt_eval_count:
                    pipe.hincrby(PREFIX + "prompt_tokens", _field(job.model),
                                 job.prompt_eval_count)
                self._observe(pipe, "request_latency", (job.model, job.kind),
                              _seconds(job.created_at, job.finished_at))
                self._observe(pipe, "first_token_latency", (job.model,),
                              _seconds(job.created_at, job.first_token_at))
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("job counters not updated (%s: %s)", type(exc).__name__, exc)

    @staticmethod
    def _observe(pipe: redis.client.Pipeline, family: str, labels: Labels,
                 seconds: float | None) -> None:
        if seconds is None or not math.isfinite(seconds):
            return
        key = PREFIX + family
        pipe.hincrby(key, _field(*labels, bucket_index(seconds)), 1)
        pipe.hincrbyfloat(key, _field(*labels, SUM), seconds)

    def counters(self, family: str) -> dict[Labels, float]:
        """A counter family's value per label set."""
        width = len(COUNTERS[family])
        found: dict[Labels, float] = {}
        for labels, value in self._read(family):
            if len(labels) == width:
                found[labels] = float(value)
        return found

    def histograms(self, family: str,
                   bounds: Sequence[float] = LATENCY_BUCKETS) -> dict[Labels, Histogram]:
        """A histogram family per label set, its buckets made cumulative as Prometheus has
        them."""
        width = len(HISTOGRAMS[family])
        counts: dict[Labels, list[int]] = {}
        sums: dict[Labels, float] = {}
        for fields, value in self._read(family):
            if len(fields) != width + 1:
                continue
            labels, slot = fields[:width], fields[width]
            if slot == SUM:
                sums[labels] = float(value)
            elif slot.isdigit() and int(slot) <= len(bounds):
                counts.setdefault(labels, [0] * (len(bounds) + 1))[int(slot)] += int(value)
        found = {}
        for labels, per_bucket in counts.items():
            running, buckets = 0, []
            for bound, n in zip([*bounds, math.inf], per_bucket, strict=True):
                running += n
                buckets.append((bound, running))
            found[labels] = Histogram(buckets, sums.get(labels, 0.0))
        return found

    def _read(self, family: str) -> list[tuple[Labels, bytes]]:
        rows = []
        for raw, value in self.redis.hgetall(PREFIX + family).items():
            try:
                labels = tuple(json.loads(raw))
            except ValueError:
                continue  # not a field this module wrote
            rows.append((labels, value))
        return rows
