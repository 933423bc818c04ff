"""What the benchmark measures of one request, and how a level's requests are summarised.

Every system is timed the same way, at the client: `sent` when the request leaves, `first` when
the first generated text arrives, `last` at the last one, `tokens` as the system counted them.

- aggregate tokens/s: every request's tokens over the wall time from the first request sent to
  the last one finished (prompt processing, queueing and relaying included);
- per-request tokens/s: each request's (tokens - 1) / (last - first), the decode rate a reader of
  one stream sees, averaged over requests;
- each level runs ROUNDS times, interleaved with the other systems; throughput is the best
  round's (the median round's is kept beside it, a steadier figure on a noisy machine), time to
  first token pools all rounds. Before round 1 every system decodes each prompt once, so all
  start with the same caches (corral's and llama-server's prefix caches included).
- time to first token: first - sent, p50 and p95.
- chunks per answer: how many pieces of text a request's stream delivered (llama-server and
  Ollama send one per token); inter-chunk gap: the time between two pieces of one stream,
  p50 and p95 over every gap of the level's rounds: what a reader watching text appear sees.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

N_PREDICT = 64
# Plain-text openings that SmolLM2-135M continues (greedy) for 64 tokens or more without ending;
# every system gets them raw (no chat template), so all decode the same token sequences.
PROMPTS = [
    "The history of the city begins",
    "In the morning the baker",
    "The war between the two kingdoms lasted",
    "Our ship left the harbour at dawn,",
    "The old library had a secret room",
    "Chapter one. The village of",
    "She opened the letter and read",
    "Here are ten facts about the ocean:",
]


def cores() -> int:
    """CPUs this process may run on (the affinity mask, which os.cpu_count() ignores)."""
    return len(os.sched_getaffinity(0))


@dataclass
class Sample:
    """One request as the client saw it (perf_counter seconds)."""

    sent: float
    first: float | None = None
    last: float | None = None
    end: float = 0.0
    tokens: int = 0
    error: str | None = None
    chunks: list[float] = field(default_factory=list)  # arrival time of each piece of text

    def token(self) -> None:
        """Note the arrival of a piece of generated text."""
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.chunks.append(now)


@dataclass
class Level:
    """A system at one concurrency level."""

    system: str
    concurrency: int
    requests: int
    tokens_mean: float
    tokens_min: int
    aggregate_tps: float
    median_tps: float
    request_tps: float
    ttft_p50_ms: float
    ttft_p95_ms: float
    chunks_mean: float = 0.0
    gap_p50_ms: float = 0.0
    gap_p95_ms: float = 0.0
    errors: int = 0
    notes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(system: str, concurrency: int, rounds: list[list[Sample]]) -> Level:
    """Fold one level's rounds into its figures (see the module docstring).

    Throughput comes from the best round (interference from outside only ever slows a run);
    times to first token pool every round's requests.
    """
    good_rounds = [[s for s in r if s.error is None and s.first is not None] for r in rounds]
    good = [s for r in good_rounds for s in r]
    if not good:
        errors = sorted({s.error or "no tokens" for r in rounds for s in r})
        raise RuntimeError(f"{system} at concurrency {concurrency}: every request failed: {errors}")
    per_round = [(_aggregate(r), r) for r in good_rounds if r]  # (tok/s, samples)
    best_tps, best = max(per_round, key=lambda pair: pair[0])
    rates = [(s.tokens - 1) / (s.last - s.first) for s in best if s.tokens > 1 and s.last > s.first]
    ttft = [(s.first - s.sent) * 1000 for s in good]
    tokens = [s.tokens for s in good]
    gaps = [(b - a) * 1000 for s in good
            for a, b in itertools.pairwise(s.chunks)] or [0.0]
    return Level(
        system=system,
        concurrency=concurrency,
        requests=len(good),
        tokens_mean=float(np.mean(tokens)),
        tokens_min=int(min(tokens)),
        aggregate_tps=best_tps,
        median_tps=float(np.median([tps for tps, _ in per_round])),
        request_tps=float(np.mean(rates)) if rates else 0.0,
        ttft_p50_ms=float(np.percentile(ttft, 50)),
        ttft_p95_ms=float(np.percentile(ttft, 95)),
        chunks_mean=float(np.mean([len(s.chunks) for s in good])),
        gap_p50_ms=float(np.percentile(gaps, 50)),
        gap_p95_ms=float(np.percentile(gaps, 95)),
        errors=sum(len(r) for r in rounds) - len(good),
        notes={"rounds_aggregate_tps": [round(tps, 1) for tps, _ in per_round]},
    )


def _aggregate(samples: list[Sample]) -> float:
    """Tokens of a round over its wall time, first request sent to last one finished."""
    return sum(s.tokens for s in samples) / (max(s.end for s in samples) -
                                             min(s.sent for s in samples))


def in_threads(work: Callable[[Any], Any], items: list, clients: int) -> list:
    """Run work(item) over items from `clients` threads, each taking the next item as its last
    one ends (a closed loop); results in item order."""
    results: list = [None] * len(items)
    cursor = iter(range(len(items)))
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            results[index] = work(items[index])

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def closed_loop(send: Callable[[str], Sample], concurrency: int, n_requests: int) -> list[Sample]:
    """Send n_requests (the prompts in turn) with `concurrency` closed-loop clients."""
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n_requests)]
    return in_threads(send, prompts, concurrency)


# Every system at every level, interleaved, so slow drift hits all alike. On a 2-core VM one
# level's rounds differ by up to a quarter, and with 3 rounds of 4 requests the c=4 verdict
# against llama-server flipped between runs of the same code (1.13x, 0.97x, 0.93x).
ROUNDS = 5


def requests_for(concurrency: int) -> int:
    """Requests per level and round: two for every client, and every prompt at least once, so
    that no round's figures hang on which prompts it drew or on its first (colder) request."""
    return max(len(PROMPTS), 2 * concurrency)


def busy_cpu_share(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over `seconds` (from /proc/stat), before the benchmark starts."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        idle = values[3] + values[4]
        return sum(values), idle

    total0, idle0 = read()
    time.sleep(seconds)
    total1, idle1 = read()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)
