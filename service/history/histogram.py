"""Latency histograms that add up: what lets a rolled-up history still give percentiles.

A percentile of many minutes cannot be had from each minute's percentiles, but it can from
their counts in fixed bins. Bins grow by 5 % (log-spaced from 0 ms), so a percentile read
back is within about 2.5 % of the exact one, at any scale from 1 ms to days; a histogram is a
sparse {bin: count} dict, a few dozen entries as JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

STEP = math.log(1.05)


def bin_of(value_ms: float) -> int:
    """The bin a value (in milliseconds, >= 0) falls in."""
    return int(math.log1p(max(value_ms, 0.0)) / STEP)


def middle(index: int) -> float:
    """The value a bin stands for: its geometric middle, in milliseconds."""
    return math.expm1((index + 0.5) * STEP)


def histogram(values_ms: Iterable[float]) -> dict[str, int]:
    """Counts per bin; keys are strings, as they come back from a JSON column."""
    counts: dict[str, int] = {}
    for value in values_ms:
        add(counts, value)
    return counts


def add(counts: dict[str, int], value_ms: float) -> None:
    """Count one value in `counts` (in place)."""
    key = str(bin_of(value_ms))
    counts[key] = counts.get(key, 0) + 1


def merge(into: dict[str, int], other: dict[str, int] | None) -> dict[str, int]:
    """Add `other`'s counts to `into` (in place) and return it."""
    for key, count in (other or {}).items():
        into[key] = into.get(key, 0) + int(count)
    return into


def percentile(counts: dict[str, int], q: float) -> float | None:
    """The q-th percentile read from bins, ranked as numpy's linear default ranks (the
    value at rank q/100 * (n - 1)); None when empty."""
    ordered = sorted((int(key), count) for key, count in counts.items() if count > 0)
    total = sum(count for _, count in ordered)
    if not total:
        return None
    rank = q / 100 * (total - 1)
    seen = 0
    for index, count in ordered:
        seen += count
        if seen > rank:
            return middle(index)
    return middle(ordered[-1][0])
