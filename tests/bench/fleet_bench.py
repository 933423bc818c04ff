"""Two workers on one host against one: do they split its cores, or thrash?

Three set-ups of `corral serve` on this machine, each taking the same load (JOBS streamed
requests of N_PREDICT greedy tokens at once, ROUNDS rounds, after a warm-up that makes every
worker load the model):
- one worker, its threads its share of the host (all of it);
- two workers, each its share (workers/cores: half the cores each);
- two workers that each take every core (CORRAL_NUM_THREADS = cores), as every worker did
  before they shared: the issue measured ~12 tok/s in all for this.
Prints aggregate tok/s (best and median of rounds) and writes out/bench/fleet.json.

    python -m tests.bench.fleet_bench [--jobs 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.bench.measure import N_PREDICT
from tests.bench.run import default_model, say
from tests.bench.servers import ROOT, CorralServer
from workers.cores import usable_cores

PROMPT = "Here is a long list of fruits, one per line:\n{n}."


def _wait_workers(server: CorralServer, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(server.url + "/api/workers", timeout=10) as res:
            alive = [w for w in json.loads(res.read())["workers"] if w["alive"]]
        if len(alive) >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{count} workers did not join within {timeout:.0f} s")


def _round(server: CorralServer, jobs: int) -> float:
    """Aggregate tok/s of `jobs` streamed requests sent at once."""
    started = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        samples = list(pool.map(lambda n: server.send(PROMPT.format(n=n)), range(jobs)))
    wall = time.perf_counter() - started
    errors = [s.error for s in samples if s.error]
    if errors:
        raise RuntimeError(f"requests failed: {errors[:3]}")
    return sum(s.tokens for s in samples) / wall


def measure(name: str, model: str, workers: int, threads: int, args) -> dict:
    """One set-up: serve with its worker, plus workers-1 more, each at `threads` (0: share)."""
    with tempfile.TemporaryDirectory() as home:
        server = CorralServer(Path(home), model, args.np, threads, 2048,
                              Path(home) / "serve.log")
        extra = [subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], env=server.env,
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(workers - 1)]
        try:
            _wait_workers(server, workers)
            _round(server, max(args.jobs, workers * args.np * 2))  # every worker loads it
            time.sleep(6)  # a worker looks at its host's share every 5 s (workers/cores)
            rates = [_round(server, args.jobs) for _ in range(args.rounds)]
        finally:
            for proc in extra:
                proc.terminate()
                proc.wait(30)
            server.stop()
    result = {"setup": name, "workers": workers, "threads": threads or "share",
              "best_tok_s": max(rates), "median_tok_s": statistics.median(rates),
              "rounds": rates}
    say(f"{name}: best {result['best_tok_s']:.1f} tok/s, median {result['median_tok_s']:.1f}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--np", type=int, default=4, help="CORRAL_NUM_PARALLEL per worker")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
    args = parser.parse_args(argv)
    model = args.model or default_model()
    cores = usable_cores()
    results = [
        measure("one worker, its share (all cores)", model, 1, 0, args),
        measure("two workers, each its share", model, 2, 0, args),
        measure(f"two workers, {cores} threads each (oversubscribed)", model, 2, cores, args),
    ]
    one = results[0]["median_tok_s"]
    print(f"\n{args.jobs} requests x {N_PREDICT} tokens at once, {cores} cores, "
          f"CORRAL_NUM_PARALLEL={args.np} per worker; aggregate tok/s, median of {args.rounds}")
    for r in results:
        print(f"  {r['setup']:48} {r['median_tok_s']:7.1f}  (best {r['best_tok_s']:.1f})  "
              f"{r['median_tok_s'] / one:.2f}x one worker")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fleet.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
