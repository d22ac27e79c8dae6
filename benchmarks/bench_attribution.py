"""How long one sentence's token attributions take on the built-in model.

    .venv/bin/python benchmarks/bench_attribution.py [--steps 50] [--repeats 5] [--threads N]

Times ``tunekit.inspect.attribute`` for one sentence at 50 integration steps on the
built-in MiniLM (all steps in one batched pass) against the same attribution with
``internal_batch_size=1`` (one interpolated sentence per forward/backward pass, as an
unbatched loop would do), measured in the same process. Target: under 1 s on 2 CPU
cores. Prints the median of the repeats.

The machine's load average is printed too: on a CPU shared with other busy processes
PyTorch's worker threads wait for each other and every figure grows a lot; ``--threads 1``
shows how much of that is contention.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SENTENCE = "a gorgeous, witty, seductive movie that never forgets to be about something."
TARGET_S = 1.0


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = ap.parse_args()

    import torch

    import tunekit as tk
    from tunekit.inspect.attribution import attribute

    if args.threads:
        torch.set_num_threads(args.threads)
    model = tk.load_model(label_names=["rotten", "fresh"])
    a = attribute(model, SENTENCE, n_steps=args.steps)  # warm-up (captum import, first pass)
    batched = median_time(lambda: attribute(model, SENTENCE, n_steps=args.steps), args.repeats)
    unbatched = median_time(lambda: attribute(model, SENTENCE, n_steps=args.steps, internal_batch_size=1),
                            max(1, args.repeats // 2))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {load:.1f}")
    print(f"what: attribute() of one sentence ({len(a.tokens)} tokens), {args.steps} steps, built-in MiniLM, "
          f"median of {args.repeats}")
    print(f"batched (all steps in one pass):        {batched:.3f} s   target < {TARGET_S:.1f} s   "
          f"{'OK' if batched < TARGET_S else 'OVER TARGET'}")
    print(f"reference (internal_batch_size=1):      {unbatched:.3f} s")
    print(f"ratio reference / batched:              {unbatched / batched:.1f}x faster")
    print(f"completeness gap |delta|: {abs(a.delta):.2e}, relative to |F(x)-F(baseline)|: {a.gap_relative:.2e}")


if __name__ == "__main__":
    main()
