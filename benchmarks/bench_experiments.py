"""An experiment's grid: what the experiment machinery costs, and one worker vs two (issue 21).

1. **Overhead**: the grid through ``tk.experiment`` (its record, the Optuna queue in SQLite, the
   heartbeat, the per-example test predictions written per cell) against the same cells trained
   one by one in a plain loop (``tk.train`` on a fresh model, then the same test predictions),
   in this process, one after the other. Target: the experiment within 5 % of the loop.
2. **Workers**: the same grid through one worker process with 2 torch threads against two
   worker processes with 1 thread each, on one SQLite queue (a fresh grid each). The ratio says
   which default to recommend on a 2-core machine.

The built-in MiniLM on Rotten Tomatoes; run it alone (two heavy processes on 2 cores slow each
other down several-fold), each part after the other.

    .venv/bin/python benchmarks/bench_experiments.py [--sizes 64,128] [--seeds 2] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import tunekit as tk  # noqa: E402
from tunekit.experiments.runner import _test_correct  # noqa: E402  (the same predictions the experiment makes)
from tunekit.post.base import machine as cpu  # noqa: E402  (the CPU, as the post-training records say it)

STRATEGIES = "probe,lora:8,full"
WORKER = """
import sys, torch, tunekit as tk
from tunekit.arguments import parse_strategies
torch.set_num_threads(int(sys.argv[1]))
runs, url, strategies, sizes, seeds, test = sys.argv[2:8]
tk.experiment(parse_strategies(strategies), "rotten_tomatoes", sizes=[int(s) for s in sizes.split(",")],
              seeds=int(seeds), name="workers", runs_dir=runs, eval_size=64, test_size=int(test), storage=url,
              worker=True, progress=False)
"""


def machine() -> str:
    return f"{cpu()}, {os.cpu_count()} cores, torch {torch.__version__}"


def loop(strategies, data, sizes, seeds, test_size, runs_dir) -> float:
    """The same cells one by one: a fresh model, tk.train, the test predictions."""
    test = data.test.sample(n=test_size, random_state=0).sort_index() if test_size < len(data.test) else data.test
    t0 = time.perf_counter()
    for seed in range(seeds):
        for size in sizes:
            for s in strategies:
                model = tk.models.load_for("minilm", data, "classification", seed)
                run = tk.train(model, data, s, seed=seed, train_size=size, eval_size=64, runs_dir=runs_dir,
                               progress=False)
                _test_correct(run.model, test, 128, 128)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--test-size", type=int, default=300)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from tunekit.arguments import parse_strategies
    sizes = [int(s) for s in args.sizes.split(",")]
    data = tk.data.rotten_tomatoes()
    strategies = parse_strategies(STRATEGIES)
    cells = len(strategies) * len(sizes) * args.seeds
    out = {"machine": machine(), "cells": cells, "sizes": sizes, "seeds": args.seeds, "strategies": STRATEGIES,
           "test_size": args.test_size, "torch_threads": torch.get_num_threads(),
           "date": time.strftime("%Y-%m-%d %H:%M")}
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        tk.models.load_for("minilm", data, "classification", 0)  # warm: files in the page cache
        out["loop_s"] = loop(strategies, data, sizes, args.seeds, args.test_size, str(root / "loop"))
        t0 = time.perf_counter()
        tk.experiment(strategies, data, sizes=sizes, seeds=args.seeds, name="overhead", runs_dir=str(root / "exp"),
                      eval_size=64, test_size=args.test_size, progress=False)
        out["experiment_s"] = time.perf_counter() - t0
        out["overhead"] = out["experiment_s"] / out["loop_s"] - 1
        print(f"{cells} cells: loop {out['loop_s']:.1f} s, experiment {out['experiment_s']:.1f} s, "
              f"overhead {100 * out['overhead']:+.1f} %", flush=True)

        script = root / "worker.py"
        script.write_text(WORKER)
        for workers, threads in ((1, 2), (2, 1)):
            runs = root / f"w{workers}"
            url = f"sqlite:///{root / f'w{workers}.db'}"
            tk.experiment(strategies, data, sizes=sizes, seeds=args.seeds, name="workers", runs_dir=str(runs),
                          eval_size=64, test_size=args.test_size, storage=url, work=False, progress=False)
            t0 = time.perf_counter()
            procs = [subprocess.Popen([sys.executable, str(script), str(threads), str(runs), url, STRATEGIES,
                                       args.sizes, str(args.seeds), str(args.test_size)]) for _ in range(workers)]
            codes = [p.wait() for p in procs]
            out[f"workers_{workers}x{threads}_s"] = time.perf_counter() - t0
            assert codes == [0] * workers, codes
            print(f"{workers} worker(s) x {threads} thread(s): {out[f'workers_{workers}x{threads}_s']:.1f} s",
                  flush=True)
        out["two_workers_vs_one"] = out["workers_2x1_s"] / out["workers_1x2_s"]
        print(f"two workers with 1 thread / one worker with 2 threads: {out['two_workers_vs_one']:.2f}")
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
