"""The engine's order of work: interactive requests first, then batch sequences it paused,
then new batch lines; and which batch sequences give up their slots when an interactive
request finds none free.

Before this, admission was first come, first served: while a 60-line batch held every slot, a
streamed chat waited 5.4 to 7.3 s for its first token (against 18 to 37 ms idle), because each
slot was held until its line finished. Now a batch sequence is paused instead: its slot goes
to the chat at the next step, its KV stays behind as a prefix cache, and it resumes when a slot
is free again, re-evaluating only what the cache lost, neither losing nor repeating a token
(its sampler and text carry on; workers/sequence.py `resume`). Policy only: the engine
(workers/engine.py) does the moving.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Work(Protocol):
    """A waiting Request or a paused Sequence: what admission looks at."""

    batch: bool
    tokens: list[int]


def admission_order(waiting: Iterable[Work], paused: Iterable[Work]) -> list[Work]:
    """Interactive requests (higher job priority first, then first come, first served),
    paused batch sequences (first paused first), then new batch requests."""
    waiting = list(waiting)
    interactive = sorted((r for r in waiting if not r.batch),
                         key=lambda r: -getattr(r, "priority", 0))  # stable: FIFO within
    return [*interactive, *paused, *(r for r in waiting if r.batch)]


class Running(Protocol):
    batch: bool
    n_past: int
    images: list  # image spans: a sequence with images is not paused (its KV past an image
    # is never kept, and re-evaluating would need the images encoded again)


def victims(running: Iterable[Running], wanted: int) -> list[Running]:
    """The batch sequences to pause so that `wanted` interactive requests get slots: those
    with the least KV to re-evaluate should their cells be reused meanwhile."""
    if wanted <= 0:
        return []
    movable = (s for s in running if s.batch and not s.images)
    return sorted(movable, key=lambda s: s.n_past)[:wanted]
