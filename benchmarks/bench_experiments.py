"""An experiment's grid: what the experiment machinery costs, one worker vs two, sharing on vs off (issue 21).

1. **Overhead**: the grid through ``tk.experiment(share=False)`` (its record, the Optuna queue in
   SQLite, the heartbeat, the per-example test predictions written per cell) against the same cells
   trained one by one in a plain loop (``tk.train`` on a fresh model, then the same test predictions),
   in this process, one after the other. Target: the experiment within 5 % of the loop.
2. **Workers**: the same grid through one worker process with 2 torch threads against two
   worker processes with 1 thread each, on one SQLite queue (a fresh grid each). The ratio says
   which default to recommend on a 2-core machine.
3. **Sharing**: a grid of probe / freeze top 2 / LoRA r8 / full (``--sharing-sizes``, the same
   seeds) through ``tk.experiment(share=True)`` (one memo of token ids, probe features and frozen
   prefixes, the test split's included, for every cell) against ``share=False`` (every cell
   computes its own), ``--repeats`` times each, alternating which goes first; the wall time of
   the whole call and of each strategy's cells (model load, training, test scoring), medians.
   Also how many test predictions differ between the two (float rounding only: bf16 autocast
   on a CPU with AMX).

The built-in MiniLM on Rotten Tomatoes; run it alone (two heavy processes on 2 cores slow each
other down several-fold), each part after the other.

    .venv/bin/python benchmarks/bench_experiments.py [--sizes 64,128] [--seeds 2] [--json FILE]
    .venv/bin/python benchmarks/bench_experiments.py --parts sharing   # only part 3
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

import tunekit as tk  # noqa: E402
from tunekit.experiments import runner  # noqa: E402
from tunekit.experiments.runner import _test_correct  # noqa: E402  (the same predictions the experiment makes)
from tunekit.post.base import machine as cpu  # noqa: E402  (the CPU, as the post-training records say it)

STRATEGIES = "probe,lora:8,full"
SHARING = "probe,freeze:2,lora:8,full"
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
    return f"{cpu()}, torch {torch.__version__}"  # cpu() names the cores too


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


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def sharing(data, sizes, seeds, test_size, repeats, root: Path) -> dict:
    """``tk.experiment`` with ``share=True`` against ``share=False`` on one grid, alternating: the
    call's wall time and each strategy's cells' (timed around ``runner._train_cell``)."""
    from tunekit.arguments import parse_strategies
    strategies = parse_strategies(SHARING)
    calls = {True: [], False: []}
    cells: dict = {True: defaultdict(list), False: defaultdict(list)}
    correct: dict = {True: [], False: []}
    clock: dict = defaultdict(float)
    memos: list = []
    real, memo_class = runner._train_cell, runner.SharedInputs

    class Recorded(memo_class):  # the memo each share=True call makes, kept for its counts
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            memos.append(self)

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            clock[a[2]] += time.perf_counter() - t0  # a[2]: the cell's strategy label

    runner._train_cell, runner.SharedInputs = timed, Recorded
    try:
        for r in range(repeats):
            for share in ((True, False) if r % 2 == 0 else (False, True)):
                clock.clear()
                t0 = time.perf_counter()
                exp = tk.experiment(strategies, data, sizes=sizes, seeds=seeds, name=f"share-{share}-{r}",
                                    runs_dir=str(root / "share"), eval_size=64, test_size=test_size,
                                    progress=False, share=share)
                calls[share].append(time.perf_counter() - t0)
                for label, t in clock.items():
                    cells[share][label].append(t)
                correct[share].append({k: c["correct"] for k, c in exp.cells.items()})
                print(f"share={share}, repeat {r + 1}: {calls[share][-1]:.1f} s "
                      f"({', '.join(f'{k} {v:.1f} s' for k, v in clock.items())})", flush=True)
    finally:
        runner._train_cell, runner.SharedInputs = real, memo_class
    out = {"sharing_strategies": SHARING, "sharing_sizes": sizes, "sharing_repeats": repeats,
           "share_s": calls[True], "no_share_s": calls[False],
           "share_ratio": median(calls[True]) / median(calls[False]),
           "cells_share_s": {k: v for k, v in cells[True].items()},
           "cells_no_share_s": {k: v for k, v in cells[False].items()},
           "cell_ratio": {k: median(cells[True][k]) / median(cells[False][k]) for k in cells[True]},
           "memo": memos[-1].describe() if memos else None}
    on, off = correct[True][0], correct[False][0]
    out["predictions_compared"] = sum(len(v) for v in on.values())
    out["predictions_differing"] = sum(a != b for k in on for a, b in zip(on[k], off[k]))
    out["largest_cell_accuracy_difference"] = max(abs(sum(on[k]) - sum(off[k])) / len(on[k]) for k in on)
    print(f"share=True / share=False: {out['share_ratio']:.2f} overall; per strategy "
          + ", ".join(f"{k} {v:.2f}" for k, v in out["cell_ratio"].items())
          + f"; {out['predictions_differing']} of {out['predictions_compared']} test predictions differ; "
          f"the memo: {out['memo']}", flush=True)
    return out


def overhead(out: dict, strategies, data, sizes, args, root: Path) -> None:
    """Part 1: the cells in a plain loop, then through ``tk.experiment`` (``share=False``: the
    same work as the loop; part 3 measures sharing)."""
    cells = len(strategies) * len(sizes) * args.seeds
    out["loop_s"] = loop(strategies, data, sizes, args.seeds, args.test_size, str(root / "loop"))
    t0 = time.perf_counter()
    tk.experiment(strategies, data, sizes=sizes, seeds=args.seeds, name="overhead", runs_dir=str(root / "exp"),
                  eval_size=64, test_size=args.test_size, progress=False, share=False)
    out["experiment_s"] = time.perf_counter() - t0
    out["overhead"] = out["experiment_s"] / out["loop_s"] - 1
    print(f"{cells} cells: loop {out['loop_s']:.1f} s, experiment {out['experiment_s']:.1f} s, "
          f"overhead {100 * out['overhead']:+.1f} %", flush=True)


def workers(out: dict, strategies, data, sizes, args, root: Path) -> None:
    """Part 2: one worker process with 2 threads, then two with 1 thread each, on one SQLite queue."""
    script = root / "worker.py"
    script.write_text(WORKER)
    for n, threads in ((1, 2), (2, 1)):
        runs = root / f"w{n}"
        url = f"sqlite:///{root / f'w{n}.db'}"
        tk.experiment(strategies, data, sizes=sizes, seeds=args.seeds, name="workers", runs_dir=str(runs),
                      eval_size=64, test_size=args.test_size, storage=url, work=False, progress=False)
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, str(script), str(threads), str(runs), url, STRATEGIES,
                                   args.sizes, str(args.seeds), str(args.test_size)]) for _ in range(n)]
        codes = [p.wait() for p in procs]
        out[f"workers_{n}x{threads}_s"] = time.perf_counter() - t0
        assert codes == [0] * n, codes
        print(f"{n} worker(s) x {threads} thread(s): {out[f'workers_{n}x{threads}_s']:.1f} s", flush=True)
    out["two_workers_vs_one"] = out["workers_2x1_s"] / out["workers_1x2_s"]
    print(f"two workers with 1 thread / one worker with 2 threads: {out['two_workers_vs_one']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--test-size", type=int, default=300)
    ap.add_argument("--json", default=None)
    ap.add_argument("--parts", default="overhead,workers,sharing", help="which parts to run")
    ap.add_argument("--sharing-sizes", default="32,64,128")
    ap.add_argument("--repeats", type=int, default=2, help="repetitions of each side of the sharing part")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if parts - {"overhead", "workers", "sharing"}:
        ap.error(f"--parts: unknown {sorted(parts - {'overhead', 'workers', 'sharing'})}")
    from tunekit.arguments import parse_strategies
    sizes = [int(s) for s in args.sizes.split(",")]
    data = tk.data.rotten_tomatoes()
    strategies = parse_strategies(STRATEGIES)
    cells = len(strategies) * len(sizes) * args.seeds
    out = {"machine": machine(), "parts": sorted(parts), "seeds": args.seeds, "test_size": args.test_size,
           "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M")}
    if parts & {"overhead", "workers"}:
        out.update(cells=cells, sizes=sizes, strategies=STRATEGIES)
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        tk.models.load_for("minilm", data, "classification", 0)  # warm: files in the page cache
        if "overhead" in parts:
            overhead(out, strategies, data, sizes, args, root)
        if "workers" in parts:
            workers(out, strategies, data, sizes, args, root)
        if "sharing" in parts:
            out.update(sharing(data, [int(s) for s in args.sharing_sizes.split(",")], args.seeds, args.test_size,
                               args.repeats, root))
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
