"""Stream: the reader's side of one sequence, paced into chunks (workers/stream.py), and the
pace the runner gives it (workers.kinds.generate.stream_pace).

The engine's decode thread is the only writer of a Stream; here a plain thread writes in its
place, so the pacing is tested on its own, and tests/test_api_ollama.py checks it end to end.
"""

from __future__ import annotations

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


# Stream.chunks is a generator: between two next() calls the reader is holding back, so what a
# test puts then has "arrived meanwhile", with no thread and no sleep deciding the grouping. It
# takes a chunk's first piece inside the next() that returns it, so a time read before that
# call is at most when the chunk started, and the interval is counted from there.


def test_the_first_piece_leaves_at_once_and_what_arrives_meanwhile_joins_the_next_chunk():
    stream = Stream()
    asked = []

    def pace() -> float:
        asked.append(time.monotonic())
        return 0.5

    stream._put("a")
    chunks = stream.chunks(pace)
    before_a = time.monotonic()
    assert next(chunks) == "a"
    assert asked == []  # no interval asked for, so none waited out, before the first chunk
    for piece in "bcd":
        stream._put(piece)
    assert next(chunks) == "bcd"
    assert time.monotonic() - before_a >= 0.5 - 0.001  # b, c and d waited for the interval
    stream._put("e")
    stream._end(DONE)
    assert list(chunks) == ["e"]
    assert len(asked) == 2  # after "a" and after "bcd"; the end is not paced


def test_a_steady_writer_gets_at_most_one_chunk_per_interval_and_all_its_text():
    interval = 0.1
    stream = Stream()
    pieces = [f"{i} " for i in range(30)]
    # A decoder's pace, about 0.6 s in all: this makes time pass, it awaits nothing.
    writer = write_later(*[step for p in pieces for step in (lambda p=p: stream._put(p), 0.02)],
                         lambda: stream._end(DONE))
    chunks, before, after = [], [], []
    reader = stream.chunks(interval)
    while True:
        before.append(time.monotonic())
        text = next(reader, None)
        after.append(time.monotonic())
        if text is None:
            break
        chunks.append(text)
    writer.join()
    assert "".join(chunks) == "".join(pieces) and all(chunks)
    assert len(chunks) <= len(pieces)
    # The k-th chunk started no sooner than k intervals after the first; only the last may
    # come sooner, woken by the end.
    for k in range(1, len(chunks) - 1):
        assert after[k] - before[0] >= k * interval - 0.001, (k, chunks)


def test_the_end_does_not_wait_out_the_interval():
    stream = Stream()
    stream._put("a")
    # The pause lets the reader settle into its 30 s wait, so the end has to wake it; were the
    # end there first, the wait would not start either: both ways only waking on the end passes.
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
    second chunk holds the third back for that long."""
    stream = Stream()
    paces = [0.0, 0.6, 0.0]
    asked = []

    def pace() -> float:
        asked.append(paces[len(asked)])
        return asked[-1]

    stream._put("a")
    chunks = stream.chunks(pace)
    assert next(chunks) == "a"
    stream._put("b")
    before_b = time.monotonic()
    assert next(chunks) == "b"
    assert asked == [0.0]  # asked once, after "a"
    stream._put("c")
    assert next(chunks) == "c"
    assert time.monotonic() - before_b >= 0.6 - 0.001  # asked again after "b": "c" waited
    stream._end(DONE)
    assert list(chunks) == []
    assert asked == paces  # once after each of the three chunks


class Running:
    """An engine as stream_pace sees it: only how many sequences it runs."""

    def __init__(self, n: int) -> None:
        self.n = n

    def active(self) -> int:
        return self.n


def test_an_interactive_pace_holds_whatever_the_load_and_a_batch_lines_grows_with_it():
    engine = Running(0)
    pace = stream_pace(0.04, engine, batch=False)
    assert pace() == pytest.approx(0.04)
    engine.n = 8
    assert pace() == pytest.approx(0.04)  # a reader sees pieces as often at any load
    assert stream_pace(0.0, engine, batch=False)() == 0.0  # 0 still streams every token
    lines = stream_pace(0.25, engine, batch=True)
    assert lines() == pytest.approx(2.0)  # read at each call: the pace follows the load
    engine.n = 0
    assert lines() == pytest.approx(BATCH_STREAM_INTERVAL)  # an idle engine counts as one


def test_batch_lines_are_paced_at_least_once_a_second():
    assert stream_pace(0.025, Running(8), batch=True)() == pytest.approx(BATCH_STREAM_INTERVAL)
    assert stream_pace(0.3, Running(8), batch=True)() == pytest.approx(2.4)
