"""Stream: the reader's side of one sequence, paced into chunks (workers/stream.py), and the
pace the runner gives it (generate.stream_pace).

The engine's decode thread is the only writer of a Stream; here a plain thread writes in its
place, so the pacing is tested on its own, and tests/test_api_ollama.py checks it end to end.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from workers.kinds.generate import BATCH_STREAM_INTERVAL, stream_pace
from workers.stream import Completion, EngineError, Stream

DONE = Completion("stop", 1, 0, 0, 0, "")


def read_chunks(stream: Stream, interval: float) -> tuple[list[str], list[float]]:
    """Read every chunk; return them with the time each arrived."""
    chunks, times = [], []
    for text in stream.chunks(interval):
        chunks.append(text)
        times.append(time.monotonic())
    return chunks, times


def write_later(*steps) -> threading.Thread:
    """Run steps (callables, or seconds to sleep) in order on another thread."""

    def run() -> None:
        for step in steps:
            if callable(step):
                step()
            else:
                time.sleep(step)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_first_piece_leaves_at_once_and_later_pieces_are_joined_per_interval():
    stream = Stream()
    stream._put("a")
    writer = write_later(0.05, lambda: stream._put("b"), lambda: stream._put("c"), 0.05,
                         lambda: stream._put("d"), 1.2, lambda: stream._put("e"),
                         lambda: stream._end(DONE))
    started = time.monotonic()
    chunks, times = read_chunks(stream, 0.5)
    writer.join()
    assert chunks == ["a", "bcd", "e"]
    assert times[0] - started < 0.4  # the first token did not wait for the interval
    assert times[1] - times[0] >= 0.45  # b, c and d waited for it, then left together


def test_the_end_does_not_wait_out_the_interval():
    stream = Stream()
    stream._put("a")
    writer = write_later(0.1, lambda: stream._put("b"), lambda: stream._end(DONE))
    started = time.monotonic()
    chunks, _ = read_chunks(stream, 30.0)
    writer.join()
    assert chunks == ["a", "b"]
    assert time.monotonic() - started < 10  # the end woke the reader: no 30 s sleep


def test_interval_zero_still_takes_every_piece_once_in_order():
    stream = Stream()
    pieces = [f"{i} " for i in range(200)]
    writer = write_later(*[(lambda p=p: stream._put(p)) for p in pieces],
                         lambda: stream._end(DONE))
    chunks, _ = read_chunks(stream, 0.0)
    writer.join()
    assert "".join(chunks) == "".join(pieces)
    assert all(chunks)


def test_an_engine_failure_is_raised_after_the_text_that_came_before_it():
    stream = Stream()
    stream._put("partial")
    stream._end(None, "decode failed")
    seen = []
    with pytest.raises(EngineError, match="decode failed"):
        for text in stream.chunks(0.01):
            seen.append(text)
    assert seen == ["partial"]


def test_a_callable_interval_is_asked_again_after_every_chunk():
    """The worker passes the pace as a function of the load: a longer interval read after the
    first chunk holds the next pieces back for that long."""
    stream = Stream()
    paces = itertools.chain([0.0, 0.6], itertools.repeat(0.0))
    stream._put("a")
    writer = write_later(0.05, lambda: stream._put("b"), 0.1, lambda: stream._put("c"),
                         0.8, lambda: stream._put("d"), lambda: stream._end(DONE))
    chunks, times = [], []
    for text in stream.chunks(lambda: next(paces)):
        chunks.append(text)
        times.append(time.monotonic())
    writer.join()
    assert chunks[:2] == ["a", "b"]  # pace 0 after "a": "b" left alone as it came
    assert "".join(chunks) == "abcd"
    assert times[2] - times[1] >= 0.55  # after "b" the pace was 0.6 s: "c" waited for it


class Running:
    """An engine as stream_pace sees it: only how many sequences it runs."""

    def __init__(self, n: int) -> None:
        self.n = n

    def active(self) -> int:
        return self.n


def test_the_pace_grows_with_the_sequences_the_engine_runs():
    engine = Running(0)
    pace = stream_pace(0.025, engine, batch=False)
    assert pace() == pytest.approx(0.025)  # an idle engine (a job just ended) counts as one
    engine.n = 4
    assert pace() == pytest.approx(0.1)  # read at each call: the pace follows the load
    assert stream_pace(0.0, engine, batch=False)() == 0.0  # 0 still streams every token


def test_batch_lines_are_paced_at_least_once_a_second():
    assert stream_pace(0.025, Running(8), batch=True)() == pytest.approx(BATCH_STREAM_INTERVAL)
    assert stream_pace(0.3, Running(8), batch=True)() == pytest.approx(2.4)
