"""The consumer's side of one sequence: a text iterator, a cancel switch and the final counters.

The decode thread writes, exactly one other thread reads; a SimpleQueue between them means the
reader blocks without polling and never sees a piece twice.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np


class EngineError(RuntimeError):
    """The engine is closed or its decode loop failed; the message says which."""


@dataclass
class Completion:
    """How one sequence ended, with Ollama's counters."""

    done_reason: str  # "stop" (EOG or stop string), "length" (num_predict or num_ctx), "cancel"
    prompt_eval_count: int  # prompt length in tokens, cached tokens included
    prompt_eval_duration: int  # ns: wall time of the decode steps that carried this prompt
    eval_count: int  # generated tokens (the end-of-generation token is not counted)
    eval_duration: int  # ns: from the end of prompt eval to the last token
    text: str  # full generated text, cut before a matched stop string
    cached_tokens: int = 0  # prompt tokens reused from the prefix cache


_END = object()


class Stream:
    """One sequence's output, consumed by exactly one other thread."""

    def __init__(self, keep_logits: int = 0) -> None:
        self.completion: Completion | None = None
        self.first_token_time: float | None = None  # time.perf_counter() at the first token
        self.tokens: list[int] = []  # generated token ids, end-of-generation token excluded
        self.logits: list[np.ndarray] = []  # next-token logits of the first keep_logits steps
        self.keep_logits = keep_logits
        self.error: str | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cancelled = threading.Event()
        self._finished = threading.Event()  # set with the end marker, wakes a pacing reader
        self._ended = False

    def __iter__(self) -> Iterator[str]:
        """Yield text pieces as they are decoded; raise EngineError if the engine failed."""
        while not self._ended:
            item = self._queue.get()
            if item is _END:
                self._ended = True
                break
            yield item if isinstance(item, str) else item[0]
        if self.error is not None:
            raise EngineError(self.error)

    def chunks(self, interval: float | Callable[[], float]) -> Iterator[str]:
        """Yield the text joined into chunks at most one per `interval` seconds.

        The first piece leaves at once; after each chunk the reader sleeps until `interval` has
        passed (or the sequence ends), then takes every piece that arrived meanwhile. A callable
        `interval` is asked again after every chunk, so the pace can follow the load.
        """
        for text, _ in self.chunks_with_logprobs(interval):
            yield text

    def chunks_with_logprobs(self, interval: float | Callable[[], float]
                             ) -> Iterator[tuple[str, list[dict]]]:
        """Yield (text, logprobs entries of that text's tokens) chunks, paced as `chunks`.

        The entries are empty unless the sequence asked for logprobs; a chunk may then be
        entries alone (tokens with no text), which the caller still publishes.
        """
        pace = interval if callable(interval) else lambda: interval
        while not self._ended:
            items = [self._queue.get()]
            started = time.monotonic()
            while not self._queue.empty():
                items.append(self._queue.get())
            if items[-1] is _END:
                self._ended = True
                items.pop()
            if items:
                yield _joined(items)
            wait = pace() if not self._ended else 0.0
            if wait > 0:
                self._finished.wait(wait - (time.monotonic() - started))
        if self.error is not None:
            raise EngineError(self.error)

    def cancel(self) -> None:
        """Ask the engine to stop this sequence at its next step, keeping the text so far."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        """Whether cancel() was called."""
        return self._cancelled.is_set()

    def result(self) -> Completion:
        """Consume the rest of the stream and return its completion."""
        for _ in self:
            pass
        assert self.completion is not None
        return self.completion

    def _put(self, text: str, logprobs: list[dict] | None = None) -> None:
        """Queue text, or (text, entries) for a sequence that asked for logprobs: a plain
        string otherwise, so a sequence that did not ask pays nothing for them."""
        if logprobs:
            self._queue.put((text, logprobs))
        elif text:
            self._queue.put(text)

    def _end(self, completion: Completion | None, error: str | None = None) -> None:
        self.completion = completion
        self.error = error
        self._queue.put(_END)
        self._finished.set()


def _joined(items: list) -> tuple[str, list[dict]]:
    """Join queued items (strings, or (text, entries) pairs) into one chunk."""
    texts: list[str] = []
    entries: list[dict] = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        else:
            texts.append(item[0])
            entries.extend(item[1])
    return "".join(texts), entries
