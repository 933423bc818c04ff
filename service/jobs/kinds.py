"""The one table of job kinds: each kind's Celery task, request reader and worker handler.

Adding a kind is one row here (and its handler module in workers/kinds/). The service sends
`task` by name, so it never imports worker code; the worker registers every `task` and runs
`handler`, which is a name for the same reason: the domain does not import the workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from service.jobs.requests import (
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    PullRequest,
    PushRequest,
    QuantizeRequest,
)


class JobKind(str, Enum):
    """What a job asks the worker to do."""

    GENERATE = "generate"
    CHAT = "chat"
    EMBED = "embed"
    PULL = "pull"
    PUSH = "push"
    QUANTIZE = "quantize"


class JobRequest(Protocol):
    """A kind's request: read from a body (400 naming a bad field), sent as the job's JSON."""

    model: str

    def to_job(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Kind:
    """One row of the table."""

    kind: JobKind
    task: str  # the Celery task name the service sends and the worker registers
    request: Any  # the JobRequest class whose from_json(body) reads this kind's body
    handler: str  # "module:function" a worker runs as function(job, context, events)
    native: bool  # whether POST /jobs and `corral batch` lines may queue it


KINDS: dict[JobKind, Kind] = {row.kind: row for row in (
    Kind(JobKind.GENERATE, "corral.generate", GenerateRequest, "workers.kinds.generate:run",
         native=True),
    Kind(JobKind.CHAT, "corral.chat", ChatRequest, "workers.kinds.generate:run",
         native=True),
    Kind(JobKind.EMBED, "corral.embed", EmbedRequest, "workers.kinds.embed:run", native=False),
    Kind(JobKind.PULL, "corral.pull", PullRequest, "workers.kinds.pull:run", native=False),
    Kind(JobKind.PUSH, "corral.push", PushRequest, "workers.kinds.push:run", native=False),
    Kind(JobKind.QUANTIZE, "corral.quantize", QuantizeRequest, "workers.kinds.quantize:run",
         native=False),
)}
assert set(KINDS) == set(JobKind), "every JobKind has one row"

NATIVE = tuple(kind for kind, row in KINDS.items() if row.native)


def parse_kind(name: str, allowed: tuple[JobKind, ...] = NATIVE) -> JobKind:
    """The kind called `name`, if it is one of `allowed`; ValueError naming them otherwise."""
    if name not in {k.value for k in allowed}:
        raise ValueError(f"expected one of {sorted(k.value for k in allowed)}")
    return JobKind(name)
