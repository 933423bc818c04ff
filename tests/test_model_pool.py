"""The model pool's rules (LRU, keep_alive, max loaded) with stand-in engines and a fake clock.

The real engine's behaviour is tested in test_engine.py and test_queue_path.py; here only the
pool's bookkeeping is under test, so a stand-in loader keeps it to milliseconds.
"""

import threading

import pytest

from service.core.settings import FOREVER
from tests.waiting import wait_until
from workers.model_pool import ModelPool


class StandIn:
    size_bytes = 1

    def __init__(self, name):
        self.name = name
        self.closed = False

    def active(self):
        return 0

    def close(self):
        self.closed = True


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def make_pool(clock, max_loaded=2, keep_alive=300.0):
    loads = []

    def loader(spec):
        loads.append(spec)
        if spec == "broken":
            raise RuntimeError("failed to load model 'broken': not a GGUF file")
        return StandIn(spec)

    return ModelPool(loader, max_loaded=max_loaded, default_keep_alive=keep_alive,
                     clock=clock), loads


def test_second_acquire_reuses_loaded_model(clock):
    pool, loads = make_pool(clock)
    a, load_ns = pool.acquire("a", "a")
    pool.release("a")
    again, reload_ns = pool.acquire("a", "a")
    assert again is a and loads == ["a"] and load_ns > 0 and reload_ns == 0


def test_least_recently_used_is_evicted_beyond_max_loaded(clock):
    pool, _ = make_pool(clock, max_loaded=2)
    a, _ = pool.acquire("a", "a")
    pool.release("a")
    clock.now += 1
    b, _ = pool.acquire("b", "b")
    pool.release("b")
    clock.now += 1
    pool.acquire("c", "c")
    assert a.closed and not b.closed
    assert [m.key for m in pool.loaded()] == ["c", "b"]


def test_keep_alive_zero_unloads_at_release(clock):
    pool, _ = make_pool(clock)
    a, _ = pool.acquire("a", "a")
    pool.release("a", keep_alive=0)
    assert a.closed and pool.loaded() == []


def test_keep_alive_expires_after_its_time(clock):
    pool, _ = make_pool(clock)
    a, _ = pool.acquire("a", "a")
    pool.release("a", keep_alive=10)
    clock.now += 9
    pool.reap()
    assert not a.closed
    clock.now += 2
    pool.reap()
    assert a.closed


def test_negative_keep_alive_keeps_forever(clock):
    pool, _ = make_pool(clock)
    a, _ = pool.acquire("a", "a")
    pool.release("a", keep_alive=FOREVER)
    clock.now += 10**9
    pool.reap()
    assert not a.closed


def test_model_in_use_is_not_evicted_a_waiter_gets_room_when_released(clock):
    readers = []  # the threads that read the clock: acquire does, holding the pool's lock

    def read_clock() -> float:
        readers.append(threading.current_thread())
        return clock()

    pool, _ = make_pool(read_clock, max_loaded=1)
    a, _ = pool.acquire("a", "a")
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire("b", "b")))
    waiter.start()
    wait_until(lambda: waiter in readers, message="the waiter to look for room")
    pool.loaded()  # takes the pool's lock: the waiter has let go of it, to wait for room
    assert waiter.is_alive() and not got and not a.closed
    pool.release("a")
    waiter.join(5)
    assert got and a.closed


def test_load_failure_propagates_and_frees_the_slot(clock):
    pool, _ = make_pool(clock, max_loaded=1)
    with pytest.raises(RuntimeError, match="not a GGUF"):
        pool.acquire("broken", "broken")
    engine, _ = pool.acquire("a", "a")
    assert engine.name == "a"
