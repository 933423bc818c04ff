"""Which sequence id a new prompt takes, and how much of its KV it can reuse.

After a sequence ends, its id keeps the sequence's KV (prompt and answer) as a prefix cache, so a
chat's next turn - whose prompt is the last prompt, the answer and a new message - evaluates only
the new message. With one shared KV pool (kv_unified) `llama_memory_seq_cp` lets one id share
another id's cells without copying them, so a prompt may reuse the longest matching prefix found
in any id, idle or busy, while taking an id whose cache it does not destroy. That matters when
chats share a system prompt: without copies, a new chat would take the id holding another chat's
history (its longest match) and wipe it.

Choice of id, in order: an idle id whose whole cache the prompt extends (nothing is lost); else
an idle id whose cache holds the whole prompt (the same prompt again: a regenerated answer, a
repeated bulk prompt; only the old answer is lost); else an id with no cache; else the least
recently used idle id. Without the second rule a repeated prompt copied its prefix into the least
recently used id, wiping a cache that was likely to be asked for next: eight prompts cycling over
eight ids then missed the cache on most turns. Pure bookkeeping: the engine applies the plan to
llama.cpp's memory.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Plan:
    """Admit into seq_id after copying KV positions [0, keep) from source (seq_id: its own)."""

    seq_id: int
    source: int
    keep: int


class PrefixCache:
    """The tokens each idle id's KV holds, and when each id was last used."""

    def __init__(self, n_ids: int, *, enabled: bool = True, can_copy: bool = True) -> None:
        self.enabled = enabled
        self.can_copy = can_copy  # False for recurrent models, whose state cannot be shared
        self.tokens: list[list[int]] = [[] for _ in range(n_ids)]
        self._last_used = [0] * n_ids
        self._clock = itertools.count(1)

    def plan(self, prompt: list[int], free: list[int], busy: dict[int, list[int]]) -> Plan:
        """Choose a free id for prompt; busy maps each active id to the tokens its KV holds.

        At least the last prompt token is always re-evaluated: its logits give the first token.
        """
        if not self.enabled:
            seq_id = min(free, key=lambda i: self._last_used[i])
            return Plan(seq_id, seq_id, 0)
        limit = len(prompt) - 1
        common = {i: common_prefix(self.tokens[i], prompt) for i in free}
        reuse = {i: min(n, limit) for i, n in common.items()}
        if not self.can_copy:
            seq_id = max(free, key=lambda i: (reuse[i], -self._last_used[i]))
            return Plan(seq_id, seq_id, reuse[seq_id])
        extended = [i for i in free if self.tokens[i] and reuse[i] == len(self.tokens[i])]
        if extended:
            seq_id = max(extended, key=lambda i: reuse[i])
            return Plan(seq_id, seq_id, reuse[seq_id])
        repeated = [i for i in free if common[i] == len(prompt)]
        if repeated:  # the shortest such cache: the least is lost
            seq_id = min(repeated, key=lambda i: len(self.tokens[i]))
            return Plan(seq_id, seq_id, reuse[seq_id])
        seq_id = min(free, key=lambda i: (bool(self.tokens[i]), self._last_used[i]))
        for i, held in busy.items():
            reuse[i] = min(common_prefix(held, prompt), limit)
        source = max(reuse, key=lambda i: (reuse[i], i == seq_id))
        if reuse[source] <= reuse[seq_id]:
            source = seq_id
        return Plan(seq_id, source, reuse[source])

    def taken(self, seq_id: int) -> None:
        """Record that seq_id is in use: its cells now belong to a running sequence."""
        self.tokens[seq_id] = []

    def released(self, seq_id: int, kv_tokens: list[int]) -> None:
        """Record that seq_id is idle with kv_tokens in its KV ([] when it was cleared)."""
        self.tokens[seq_id] = list(kv_tokens) if self.enabled else []
        self._last_used[seq_id] = next(self._clock)

    def idle_with_cache(self, free: list[int]) -> list[int]:
        """The free ids whose KV still holds a cached prefix."""
        return [i for i in free if self.tokens[i]]


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists (vectorised: prompts can be long)."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n
