"""Log probabilities of generated tokens, for the sequences that ask for them.

They are the model's own distribution: a log-softmax of the raw logits row the token was
sampled from, before the sampler chain's grammar, penalties, temperature and truncation (top_k,
top_p, min_p). That is what OpenAI reports and what llama-server reports by default (its
`post_sampling_probs` switches to the chain's output), and Ollama passes llama-server's on. One
meaning whatever the sampling options, so a logprob says how likely the model found a token,
not how a request's temperature reshaped it; the flip side is that a token chosen by a
penalty or a grammar need not be the top one.

Only a sequence that asked pays: the row is read in place through the logits pointer (no
copy), one pass of numpy over the vocabulary per token.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_TOP = 20  # OpenAI's and Ollama's limit on top_logprobs

# {"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}, ...]}
Entry = dict[str, Any]


def token_logprobs(row: np.ndarray, token: int, top: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Return (logprob of token, ids of the `top` likeliest tokens, their logprobs), most
    likely first, from one next-token logits row."""
    peak = row.max()
    log_z = peak + np.log(np.exp(row - peak).sum(dtype=np.float64))
    chosen = float(row[token] - log_z)
    if top <= 0:
        return chosen, np.empty(0, np.int64), np.empty(0)
    ids = np.argpartition(row, -top)[-top:]
    ids = ids[np.argsort(-row[ids], kind="stable")]
    return chosen, ids, (row[ids] - log_z).astype(np.float64)


def described(piece: bytes, logprob: float) -> Entry:
    """One token as the APIs show it: `token` its text (an incomplete UTF-8 sequence, which a
    token may hold, shows U+FFFD), `bytes` its exact bytes, so clients can join several
    tokens' bytes into one character."""
    return {"token": piece.decode("utf-8", errors="replace"), "logprob": logprob,
            "bytes": list(piece)}


def entry(row: np.ndarray, token: int, top: int, piece: Callable[[int], bytes]) -> Entry:
    """The logprobs entry of one sampled token: its own and the `top` likeliest alternatives."""
    chosen, ids, lps = token_logprobs(row, token, top)
    result = described(piece(token), chosen)
    result["top_logprobs"] = [described(piece(int(i)), float(lp))
                              for i, lp in zip(ids.tolist(), lps.tolist(), strict=True)]
    return result


class Aligner:
    """Hold each token's entry until its text goes out, so a chunk carries its own tokens.

    The text assembler holds text back (half a UTF-8 character, the start of a stop string),
    so a token's entry leaves with the first emitted text that reaches into the token's bytes;
    a token entirely inside a matched stop string is never emitted, as its text is not.
    Offsets are in bytes of the output; a piece that is not valid UTF-8 may shift them by
    the replacement character's extra bytes, which only delays its entry to the next text.
    """

    def __init__(self) -> None:
        self._held: deque[tuple[int, int, Entry]] = deque()  # (start byte, length, entry)
        self._fed = 0  # bytes of every token added
        self._sent = 0  # bytes of the text emitted

    def add(self, item: Entry, size: int) -> None:
        """Queue a token's entry; `size` is its piece's length in bytes."""
        self._held.append((self._fed, size, item))
        self._fed += size

    def take(self, text: str) -> list[Entry]:
        """The entries that leave with `text`, the next emitted text ("" at the end of a
        sequence whose remaining tokens have no text)."""
        self._sent += len(text.encode("utf-8"))
        out = []
        while self._held:
            start, size, item = self._held[0]
            if not (start < self._sent or (size == 0 and start <= self._sent)):
                break
            out.append(item)
            self._held.popleft()
        return out
