"""What ``TrainConfig.snapshots`` costs: disk, time and memory (issue 23).

Each cell trains the built-in MiniLM on Rotten Tomatoes in a fresh process, with ``snapshots=0``
and with ``snapshots=K``, for a full fine-tune (every tensor is kept at every snapshot) and for
LoRA (only the adapter). Per cell:

- **disk**: the record's ``snapshots_mb`` (the files' sizes) and the record folder's size;
- **time**: the record's ``snapshots_s`` (the writing, which the training clock leaves out) and
  the whole run's wall time against the run without snapshots, in the same invocation;
- **memory**: the process's peak RSS against the run without snapshots, and, measured directly,
  what one snapshot write holds beyond what the process held when it began (the resident set
  sampled every 0.2 ms while ``tunekit.writer.write_tensors`` runs), the largest over the run.

    .venv/bin/python benchmarks/bench_snapshots.py                 # 256 reviews, K = 8
    .venv/bin/python benchmarks/bench_snapshots.py --snapshots 16 --size 512
    .venv/bin/python benchmarks/bench_snapshots.py --json snapshots.json   # -> benchmarks/results/

Run it alone: on 2 cores another heavy process changes every time here.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 2 ** 20


def resident() -> int:
    """This process's resident set now, in bytes (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def watch_writes() -> list:
    """Wrap ``tunekit.writer.write_tensors`` so that each call records the largest resident set
    above the one at its start (sampled every 0.2 ms) and its wall time; returns the list."""
    import tunekit.writer as writer
    seen, original = [], writer.write_tensors

    def watched(path, tensors, metadata=None):
        start, peak, done = resident(), [0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], resident() - start)
                time.sleep(0.0002)
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        t = time.perf_counter()
        try:
            return original(path, tensors, metadata)
        finally:
            done.set()
            thread.join()
            peak[0] = max(peak[0], resident() - start)
            seen.append({"file": Path(path).name, "extra_mb": peak[0] / MB, "s": time.perf_counter() - t,
                         "tensor_mb": sum(v.numel() * v.element_size() for v in tensors.values()) / MB})
    writer.write_tensors = watched
    return seen


def cell(strategy: str, snapshots: int, size: int, runs_dir: str) -> dict:
    """One run in this process (called in a child): the numbers above as a dict."""
    import warnings
    warnings.simplefilter("ignore")
    import tunekit as tk
    writes = watch_writes()
    make = {"full": tk.Full, "lora": lambda: tk.LoRA(rank=8)}[strategy]
    t = time.perf_counter()
    [run] = tk.compare([make()], tk.data.rotten_tomatoes(), train_size=size, eval_size=32, batch_size=8,
                       snapshots=snapshots, runs_dir=runs_dir, progress=False)
    wall = time.perf_counter() - t
    summary = run.summary
    folder = sum(f.stat().st_size for f in Path(run.path).rglob("*") if f.is_file())
    snaps = [w for w in writes if w["file"].startswith("step-")]
    return {"strategy": strategy, "snapshots": snapshots, "steps": summary.get("steps"), "wall_s": wall,
            "train_time_s": summary.get("train_time_s"), "snapshots_kept": len(summary.get("snapshots") or []),
            "snapshots_mb": summary.get("snapshots_mb"), "snapshots_s": summary.get("snapshots_s"),
            "record_mb": folder / MB, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "write_extra_mb": max((w["extra_mb"] for w in snaps), default=0.0),
            "snapshot_tensor_mb": snaps[0]["tensor_mb"] if snaps else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshots", type=int, default=8, help="K, the snapshots of the runs that keep them")
    ap.add_argument("--size", type=int, default=256, help="training reviews (batch 8)")
    ap.add_argument("--json", default=None, help="write the results here (a bare name: under benchmarks/results/)")
    ap.add_argument("--cell", nargs=3, metavar=("STRATEGY", "K", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell:
        print(json.dumps(cell(args.cell[0], int(args.cell[1]), args.size, args.cell[2])))
        return
    import tempfile

    from tunekit.post.base import machine
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for strategy in ("full", "lora"):
            for k in (0, args.snapshots):
                out = subprocess.run([sys.executable, __file__, "--size", str(args.size), "--cell", strategy,
                                      str(k), root], capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                print(f"{strategy:5s} snapshots={k:2d}: {r['steps']} steps, wall {r['wall_s']:.1f} s, peak RSS "
                      f"{r['peak_rss_mb']:.0f} MB, {r['snapshots_kept']} kept: {r['snapshots_mb'] or 0:.1f} MB on "
                      f"disk, {r['snapshots_s'] or 0:.2f} s writing, one write held {r['write_extra_mb']:.1f} MB "
                      f"more (its tensors: {r['snapshot_tensor_mb']:.1f} MB)", flush=True)
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "args": vars(args), "rows": rows}
    if args.json:
        path = Path(args.json)
        path = RESULTS / path if path.parent == Path(".") else path
        path.write_text(json.dumps(result, indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
