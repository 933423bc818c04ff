"""The in-process ceilings: llama-cpp-python's `Llama` (one sequence) and corral's Engine (batched).

Both run in the benchmark's own process with no queue, no HTTP and threads = cores, on the same
raw prompts and 64-token greedy outputs as the served systems.
"""

from __future__ import annotations

import time

from tests.bench.measure import N_PREDICT, PROMPTS, Sample
from workers import compute
from workers.engine import Engine, Options
from workers.llama_loader import cpu_has_amx

GREEDY = Options(temperature=0, num_predict=N_PREDICT, repeat_penalty=1.0)


class LlamaSingle:
    """llama-cpp-python's high-level API, streamed: one sequence at a time (a lock says so)."""

    def __init__(self, model: str, threads: int, n_ctx: int) -> None:
        import llama_cpp.llama_cpp as llama_cpp  # the module Llama reads its defaults from
        from llama_cpp import Llama

        plain = llama_cpp.llama_model_default_params
        if cpu_has_amx():  # load as corral's loader does: llama.cpp's AMX buffers crash
            def no_extra_buffers() -> llama_cpp.llama_model_params:
                params = plain()
                params.use_extra_bufts = False
                return params

            llama_cpp.llama_model_default_params = no_extra_buffers
        try:
            self.llm = Llama(model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                             verbose=False)
        finally:
            llama_cpp.llama_model_default_params = plain

    def send(self, prompt: str) -> Sample:
        """Run the whole completion on the compute thread, where corral's engines decode too:
        a process with a second OpenMP team runs both slower (see workers.compute)."""
        return compute.run(self._send, prompt)

    def _send(self, prompt: str) -> Sample:
        sample = Sample(sent=time.perf_counter())
        for chunk in self.llm.create_completion(prompt, max_tokens=N_PREDICT, temperature=0,
                                                repeat_penalty=1.0, stream=True):
            if chunk["choices"][0]["finish_reason"] is None:  # one chunk per token
                sample.token()
                sample.tokens += 1
        sample.end = time.perf_counter()
        return sample

    def close(self) -> None:
        self.llm.close()


class EngineInProcess:
    """corral's Engine in this process: each client submits to the one batch."""

    def __init__(self, model: str, threads: int, n_parallel: int, n_ctx: int) -> None:
        self.engine = Engine(model, n_parallel=n_parallel, n_ctx_per_seq=n_ctx,
                             n_threads=threads)
        self.prompts = {p: self.engine.tokenize(p) for p in PROMPTS}

    def send(self, prompt: str) -> Sample:
        sample = Sample(sent=time.perf_counter())
        stream = self.engine.submit(self.prompts[prompt], GREEDY)
        for _ in stream:
            sample.token()
        sample.end = time.perf_counter()
        sample.tokens = stream.completion.eval_count
        return sample

    def close(self) -> None:
        self.engine.close()
