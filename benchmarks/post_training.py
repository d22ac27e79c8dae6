"""Post-training on the built-in model and data: what pruning, quantization, distillation and
forgetting measure on this machine. Writes benchmarks/results/post_<date>.json; the README quotes it.

    .venv/bin/python benchmarks/post_training.py [--train-size 1000] [--out DIR]

Run it alone: two heavy processes on a 2-core machine slow each other down.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tunekit as tk  # noqa: E402
from tunekit.post.base import machine  # noqa: E402
from tunekit.runtime import versions  # noqa: E402


def row(run):
    s = run.summary
    keys = ("val_accuracy", "val_macro_f1", "params", "nonzero_params", "size_mb", "latency_ms", "sparsity",
            "max_logit_diff", "wall_time_s")
    return {"run": run.name, "kind": run.kind, "label": run.label, **{k: s.get(k) for k in keys},
            "before": {k: (s.get("before") or s.get("teacher") or {}).get(k) for k in keys}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--eval-size", type=int, default=500)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--runs-dir", default="/tmp/tunekit-post-bench")
    args = ap.parse_args()
    t0 = time.time()
    common = dict(train_size=args.train_size, eval_size=args.eval_size, runs_dir=args.runs_dir, progress=False)
    data = tk.data.rotten_tomatoes()
    out = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "train_size": args.train_size,
           "eval_size": args.eval_size, "versions": versions(), "results": {}}
    res = out["results"]
    full = tk.train(tk.load_model("minilm", label_names=data.label_names), data, tk.Full(), **common)
    tk.measure(full)
    res["full"] = {"run": full.name, **{k: full.summary.get(k) for k in ("val_accuracy", "params", "size_mb",
                                                                         "latency_ms", "train_time_s")}}
    res["sweep"] = [row(r) for r in tk.prune(full, sparsity=[0.3, 0.5, 0.7, 0.9])]
    res["sweep_layer"] = row(tk.prune(full, sparsity=0.5, scope="layer"))
    res["heads"] = row(tk.prune(full, method="heads", amount=4))
    res["neurons"] = row(tk.prune(full, method="neurons", amount=0.5))
    rec = tk.prune(full, sparsity=0.7, recover={"epochs": 1, "train_size": args.train_size, "progress": False})
    res["recovered_70"] = {"run": rec.name, "val_accuracy": rec.summary.get("val_accuracy")}
    res["int8_dynamic"] = row(tk.quantize(full))
    res["int8_weight"] = row(tk.quantize(full, method="int8-weight"))
    res["intx8_dynamic"] = row(tk.quantize(full, method="intx-dynamic", bits=8))
    res["intx4_dynamic"] = row(tk.quantize(full, method="intx-dynamic", bits=4))
    qat = tk.train(tk.load_model("minilm", label_names=data.label_names), data, tk.QAT(bits=4), **common)
    res["qat4"] = {"train": qat.summary.get("val_accuracy"), **row(tk.quantize(qat))}
    distilled, alone = tk.distil(full, student=[0, 2, 4], loss="response+feature", baseline=True,
                                 **{k: v for k, v in common.items() if k != "runs_dir"})
    res["distil"] = row(distilled)
    res["student_alone"] = row(alone)
    df = tk.forgetting([tk.Probe(), tk.Freeze(train_blocks=[5]), tk.LoRA(rank=8), tk.Full()],
                       first="rotten_tomatoes", then="bbc_news", size=500, **common)
    res["forgetting"] = df.to_dict(orient="records")
    out["wall_s"] = round(time.time() - t0, 1)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    f = Path(args.out) / f"post_{out['date']}.json"
    f.write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
