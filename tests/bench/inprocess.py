"""The in-process ceilings: llama-cpp-python's `Llama` (one sequence) and corral's Engine (batched).

Both run in the benchmark's own process with no queue, no HTTP and threads = cores, on the same
raw prompts and 64-token greedy outputs as the served systems.
"""

from __future__ import annotations

import time

from tests.bench.measure import N_PREDICT, PROMPTS, Level, Sample, closed_loop, requests_for
from tests.bench.measure import summarise as fold
from workers.engine import Engine, Options

GREEDY = Options(temperature=0, num_predict=N_PREDICT, repeat_penalty=1.0)


def llama_single(model: str, threads: int, n_ctx: int) -> Level:
    """llama-cpp-python's high-level API, streamed: one sequence at a time."""
    from llama_cpp import Llama

    llm = Llama(model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
    try:
        llm.create_completion(PROMPTS[0], max_tokens=8, temperature=0)  # warm up

        def send(prompt: str) -> Sample:
            sample = Sample(sent=time.perf_counter())
            for chunk in llm.create_completion(prompt, max_tokens=N_PREDICT, temperature=0,
                                               repeat_penalty=1.0, stream=True):
                if chunk["choices"][0]["finish_reason"] is None:  # one chunk per token
                    sample.token()
                    sample.tokens += 1
            sample.end = time.perf_counter()
            return sample

        return fold("llama-cpp-python Llama, in process", 1, closed_loop(send, 1, 8))
    finally:
        llm.close()


def engine_levels(model: str, threads: int, n_parallel: int, n_ctx: int,
                  levels: tuple[int, ...]) -> list[Level]:
    """corral's Engine, in process: `c` closed-loop clients submitting to one batch."""
    with Engine(model, n_parallel=n_parallel, n_ctx_per_seq=n_ctx, n_threads=threads) as engine:
        prompts = {p: engine.tokenize(p) for p in PROMPTS}
        engine.submit(prompts[PROMPTS[0]], Options(temperature=0, num_predict=8)).result()

        def send(prompt: str) -> Sample:
            sample = Sample(sent=time.perf_counter())
            stream = engine.submit(prompts[prompt], GREEDY)
            for _ in stream:
                sample.token()
            sample.end = time.perf_counter()
            sample.tokens = stream.completion.eval_count
            return sample

        return [fold(f"corral Engine, in process (-np {n_parallel})", c,
                     closed_loop(send, c, requests_for(c))) for c in levels]
