"""Every llama.cpp computation of a process runs on its one compute thread (workers.compute)."""

from __future__ import annotations

import threading

import llama_cpp
import pytest

from workers import compute
from workers.engine import Engine, Options


def test_run_returns_results_and_raises_errors_from_one_thread():
    seen = []

    def where(n: int) -> int:
        seen.append(threading.get_ident())
        return n * 2

    callers = [threading.Thread(target=lambda n=n: compute.run(where, n)) for n in range(8)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert compute.run(where, 21) == 42
    assert len(set(seen)) == 1 and seen[0] != threading.get_ident()
    with pytest.raises(ZeroDivisionError):
        compute.run(lambda: 1 / 0)
    assert compute.run(compute.run, where, 1) == 2  # a nested call runs in place


def test_two_loaded_models_decode_on_the_same_thread(model_file, monkeypatch):
    """Two engines (as a worker holding two models) each have a decode loop thread, but
    llama_decode itself runs on one thread, so the process keeps one OpenMP team."""
    decoding_threads = set()
    real_decode = llama_cpp.llama_decode

    def spy(ctx, batch):
        decoding_threads.add(threading.get_ident())
        return real_decode(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", spy)
    with (Engine(str(model_file), n_parallel=2, n_ctx_per_seq=256, n_threads=2) as first,
          Engine(str(model_file), n_parallel=2, n_ctx_per_seq=256, n_threads=2) as second):
        streams = [engine.submit(engine.tokenize(prompt), Options(temperature=0, num_predict=6))
                   for engine in (first, second) for prompt in ("Hello", "Name a colour.")]
        assert all(s.result().eval_count == 6 for s in streams)
        assert first._thread.ident != second._thread.ident
    assert len(decoding_threads) == 1
