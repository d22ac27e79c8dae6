"""How long representation drift takes on the built-in model and data.

    .venv/bin/python benchmarks/bench_representations.py [--n 256] [--repeats 3] [--threads N]

Trains a quick full fine-tune of the built-in MiniLM (32 Rotten Tomatoes reviews, so
that there is a tuned model), then times ``representation_drift([run], data=data, n=256)``:
the base model rebuilt from the checkpoint, both models' 7 mean-pooled hidden states on
256 validation reviews, and linear + debiased CKA at every layer. Target: under 5 s on
2 CPU cores. Prints the best of the repeats (and the median).

The reference, measured in the same process on the same 256 texts, is the same result
computed plainly: batches in the texts' order (padded to each batch's longest text
instead of batching by length) and ``linear_cka`` + ``debiased_cka`` called per layer
(feature form, each function building its own Gram matrices) instead of one Gram matrix
per side and layer. Both must agree to 1e-6.

The machine's load average is printed too: on a CPU shared with other busy processes
PyTorch's worker threads wait for each other and every figure grows a lot.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TARGET_S = 5.0


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256, help="examples compared (default 256)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = ap.parse_args()

    import pandas as pd
    import torch

    import tunekit as tk
    from tunekit.inspect.models import base_model, tuned_model
    from tunekit.inspect.representations import (
        _sample,
        debiased_cka,
        linear_cka,
        pooled_hidden_states,
        representation_drift,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    data = tk.data.rotten_tomatoes()
    with tempfile.TemporaryDirectory() as runs_dir:
        t = time.perf_counter()
        run = tk.train(tk.load_model(label_names=data.label_names), data, tk.Full(), train_size=32,
                       eval_size=32, evals_per_epoch=1, runs_dir=runs_dir, progress=False)
        train_s = time.perf_counter() - t

        # the parts, once each
        texts = _sample(data, args.n, 0)["text"].tolist()
        t = time.perf_counter()
        base = base_model(run)
        load_s = time.perf_counter() - t
        tuned = tuned_model(run)
        t = time.perf_counter()
        before = pooled_hidden_states(base, texts)
        forward_s = time.perf_counter() - t
        after = pooled_hidden_states(tuned, texts)

        def reference():
            b = base_model(run)
            states = []
            for m in (b, tuned):
                with torch.no_grad():
                    chunks = []
                    for i in range(0, len(texts), 64):
                        enc = m.tokenize(texts[i:i + 64])
                        hs = m.hf.base_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                             output_hidden_states=True).hidden_states
                        mask = enc["attention_mask"][None, :, :, None].float()
                        chunks.append(((torch.stack(hs) * mask).sum(2) / mask.sum(2)))
                    states.append(torch.cat(chunks, 1))
            return pd.DataFrame([{"layer": k, "cka": linear_cka(states[0][k], states[1][k]),
                                  "debiased_cka": debiased_cka(states[0][k], states[1][k])}
                                 for k in range(states[0].shape[0])])

        drift_times, ref_times = [], []
        for _ in range(args.repeats):  # interleaved, so that a busy spell hits both alike
            t, drift = timed(lambda: representation_drift([run], data=data, n=args.n))
            drift_times.append(t)
            t, ref = timed(reference)
            ref_times.append(t)
        drift_s, ref_s = min(drift_times), min(ref_times)
        t = time.perf_counter()
        for k in range(before.shape[0]):
            linear_cka(before[k], after[k]), debiased_cka(before[k], after[k])
        cka_plain_s = time.perf_counter() - t

    diff = (drift[["cka", "debiased_cka"]].to_numpy() - ref[["cka", "debiased_cka"]].to_numpy())
    diff = float(abs(diff).max())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {load:.1f}")
    print(f"what: representation_drift([full run], data=rotten_tomatoes, n={len(texts)}) on the built-in "
          f"MiniLM ({before.shape[0]} layers x {before.shape[2]} hidden), best of {args.repeats} "
          f"interleaved repeats (median in brackets); "
          f"(the quick full run itself trained in {train_s:.1f} s, not timed)")
    print(f"representation_drift:                 {drift_s:.2f} s ({statistics.median(drift_times):.2f})   "
          f"target < {TARGET_S:.1f} s   {'OK' if drift_s < TARGET_S else 'OVER TARGET'}")
    print(f"  parts: rebuild base model {load_s:.2f} s, one model's hidden states {forward_s:.2f} s, "
          f"CKA of all layers (plain per-layer calls) {cka_plain_s:.2f} s")
    print(f"reference (texts' order, per-layer linear_cka + debiased_cka): {ref_s:.2f} s "
          f"({statistics.median(ref_times):.2f})")
    print(f"ratio reference / representation_drift: {ref_s / drift_s:.2f}x")
    print(f"largest |difference| from the reference: {diff:.1e}   {'OK' if diff < 1e-6 else 'MISMATCH'}")
    print("cka by layer:          " + " ".join(f"{v:.4f}" for v in drift["cka"]))
    print("debiased cka by layer: " + " ".join(f"{v:.4f}" for v in drift["debiased_cka"]))


if __name__ == "__main__":
    main()
