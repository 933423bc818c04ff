"""The engine's order of work, with SmolLM2: requests on their way are prefilled together,
and interactive requests go before batch lines (a batch sequence gives up its slot and
resumes later, losing and repeating no token)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.test_engine import MODEL, chat
from workers.arrivals import Arrivals
from workers.engine import Engine, Options

GREEDY = Options(temperature=0.0, num_predict=8)


@pytest.fixture(scope="module")
def arrivals() -> Arrivals:
    return Arrivals()


@pytest.fixture(scope="module")
def gathering(arrivals: Arrivals):
    with Engine(MODEL, n_parallel=4, n_ctx_per_seq=512, prefix_cache=False,
                arriving=arrivals.pending) as engine:
        yield engine


def two_apart(engine: Engine, arrivals: Arrivals, *, announced: bool) -> list:
    """Submit two prompts 20 ms apart to an idle engine; the second is announced as on its
    way (received by the worker, not yet submitted) before the first is submitted, or not."""
    if announced:
        arrivals.arrived("second")
    first = engine.submit(chat(engine, "Name a fruit."), GREEDY)

    def later() -> None:
        time.sleep(0.02)
        arrivals.settled("second")
        streams.append(engine.submit(chat(engine, "Name a colour."), GREEDY))

    streams = [first]
    thread = threading.Thread(target=later)
    thread.start()
    thread.join()
    return [s.result() for s in streams]


def test_requests_on_their_way_to_an_idle_engine_share_its_first_prefill_step(
        gathering, arrivals):
    a, b = two_apart(gathering, arrivals, announced=True)
    # Both prompts were evaluated in the same decode steps: the same prompt time, to the ns.
    assert a.prompt_eval_duration == b.prompt_eval_duration > 0


def test_a_lone_request_is_not_held(gathering, arrivals):
    a, b = two_apart(gathering, arrivals, announced=False)
    assert a.prompt_eval_duration != b.prompt_eval_duration  # the first went ahead alone
    assert len(arrivals) == 0


def test_pending_counts_received_and_expected_jobs_once():
    arrivals = Arrivals(expected=lambda: ["b", "c"])
    arrivals.arrived("a")
    arrivals.arrived("b")
    assert arrivals.pending() == 3
    arrivals.settled("a")
    arrivals.settled("a")
    assert arrivals.pending() == 2

    def broken():
        raise OSError("database away")

    arrivals.expected = broken
    assert arrivals.pending() == 1  # what was received still counts
