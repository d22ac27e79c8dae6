"""GPU throughput of tunekit's engine: MiniLM full fine-tuning (eager and ``compile=True``) and
SmolLM2 with LoRA (batch 128) as a causal LM, all with bf16 autocast. ``benchmarks/gpu.sh`` runs each phase
in its own process under its own time limit, then merges them:

    python benchmarks/bench_gpu.py --phase minilm-eager --out phase.json [--smoke]
    python benchmarks/bench_gpu.py --report DIR --out-dir OUT      # DIR/*.json -> OUT/gpu.json, gpu.md

How it is measured. Each phase is one 2-epoch ``tk.train`` run on rotten_tomatoes rows (a
whole number of batches); epoch 1 is the warm-up (compilation, allocator, autotuning) and epoch
2 is timed, from the ``epoch_end`` event of epoch 1 (after its evaluation, so the device is
idle) to the step event that ends epoch 2 (which reads the loss back, so the device is done).
Epoch 2 sees every row once, so its real (non-padding) tokens are the engine's own count
(the ``tokens`` of its step events), or else the sum of the rows' lengths. Padded tokens are
estimated from the run's overall padding fraction (``summary["padding"]``).

Model-FLOPs utilisation is ``6 * N * real tokens/s / peak``, with N the weights of the matrix
products the forward pass runs (``nn.Linear`` layers that are used; no embedding lookups;
attention's own products left out, small at 128 tokens) and ``peak`` the GPU's dense bf16 rate
from its name (H100 SXM / H200: 989 TFLOP/s). For LoRA, ``6N`` counts weight gradients that
frozen layers never compute; ``mfu_frozen`` uses ``4N + 2 * trainable`` instead. Peak memory is
``torch.cuda.max_memory_allocated`` over the run (the process's peak RSS on a CPU).

``--smoke`` shrinks everything (a few steps, batch 8, length 32) so that it runs on a CPU.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

PHASES = {
    # name: model, task, strategy, batch, rows (0: all that fit), compile
    "minilm-eager": dict(model="minilm", task="classification", strategy="full", batch=256, rows=0, compile=False),
    "minilm-compile": dict(model="minilm", task="classification", strategy="full", batch=256, rows=0, compile=True),
    "smollm2-lora": dict(model="smollm2", task="causal_lm", strategy="lora", batch=128, rows=128 * 32, compile=False),
}
SMOKE = dict(batch=4, rows=4 * 3, max_length=32, eval_size=8)
# dense bf16 tensor-core peaks (TFLOP/s), matched in order against the device name
PEAK_BF16_TFLOPS = [("H200", 989.0), ("GH200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("H800", 989.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10G", 125.0)]


def peak_tflops(device_name: str):
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def matmul_params(model) -> int:
    """Weights of the nn.Linear layers on the forward path (a tied output layer counts once)."""
    seen, total = set(), 0
    for name, mod in model.hf.named_modules():
        if isinstance(mod, torch.nn.Linear) and id(mod.weight) not in seen:
            if model.group_of(f"{name}.weight") in model.active_groups:
                seen.add(id(mod.weight))
                total += mod.weight.numel()
    return total


def make_strategy(name: str):
    import tunekit as tk
    return tk.Full() if name == "full" else tk.LoRA(rank=8)


def run_phase(name: str, smoke: bool, max_length: int) -> dict:
    import tunekit as tk
    from tunekit.runtime import pick_device
    spec = dict(PHASES[name])
    eval_size = 256
    if smoke:
        spec.update(batch=SMOKE["batch"], rows=SMOKE["rows"])
        max_length, eval_size = SMOKE["max_length"], SMOKE["eval_size"]
    data = tk.data.load("rotten_tomatoes")
    batch = spec["batch"]
    rows = spec["rows"] or len(data.train) // batch * batch
    rows = min(rows, len(data.train) // batch * batch)
    device = pick_device(None)
    t = time.perf_counter()
    if spec["task"] == "classification":
        model = tk.load_model(spec["model"], label_names=data.label_names, seed=0)
    else:
        model = tk.load_model(spec["model"], task="causal_lm", seed=0)
    load_s = time.perf_counter() - t
    n_matmul = matmul_params(model)
    per_epoch = rows // batch
    marks, tokens = {}, {}

    def on_step(ev):
        if ev.payload["step"] in (per_epoch, 2 * per_epoch):
            tokens[ev.payload["step"]] = ev.payload.get("tokens")
        if ev.payload["step"] == 2 * per_epoch:
            marks["end"] = time.perf_counter()

    callbacks = {"train_start": lambda ev: marks.update(begin=time.perf_counter(),
                                                        trainable=ev.payload["params"]["trainable"]),
                 "epoch_end": lambda ev: marks.setdefault("start", time.perf_counter()),
                 "step": on_step}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as runs_dir:
        run = tk.train(model, data, make_strategy(spec["strategy"]), callbacks=callbacks, epochs=2,
                       batch_size=batch, max_length=max_length, train_size=rows, eval_size=eval_size,
                       evals_per_epoch=1, schedule="constant", warmup=0.0, precision="bf16",
                       compile=spec["compile"], log_every=per_epoch, group_by_length=True,
                       progress=False, save_weights=False, runs_dir=runs_dir, seed=0)
        summary, config = run.summary, run.config
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        device_name = torch.cuda.get_device_name()
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        device_name = "cpu"
    seconds = marks["end"] - marks["start"]
    engine_tokens = None if tokens.get(per_epoch) is None or tokens.get(2 * per_epoch) is None \
        else tokens[2 * per_epoch] - tokens[per_epoch]
    real = engine_tokens or row_tokens(model, data, rows, max_length)
    padding = summary.get("padding")
    padded = real / (1 - padding) if padding is not None else None
    peak = peak_tflops(device_name)
    trainable = marks.get("trainable", 0)
    flops_6n = 6 * n_matmul * real / seconds
    flops_frozen = (4 * n_matmul + 2 * min(trainable, n_matmul)) * real / seconds
    return {
        "phase": name, "model": spec["model"], "task": spec["task"], "strategy": spec["strategy"],
        "compile": spec["compile"], "batch_size": batch, "max_length": max_length, "rows": rows,
        "steps_per_epoch": per_epoch, "device": device_name, "precision": config.get("precision"),
        "load_s": load_s, "epoch1_s": marks["start"] - marks["begin"], "epoch2_s": seconds,
        "samples_per_s": rows / seconds, "real_tokens_per_s": real / seconds,
        "padded_tokens_per_s": padded / seconds if padded else None, "pad_fraction": padding,
        "tokens_from": "engine" if engine_tokens else "row lengths",
        "matmul_params": n_matmul, "trainable_params": trainable, "peak_bf16_tflops": peak,
        "model_tflops_per_s": flops_6n / 1e12,
        "mfu": flops_6n / (peak * 1e12) if peak else None,
        "mfu_frozen": flops_frozen / (peak * 1e12) if peak else None,
        "peak_memory_mb": peak_mb, "tunekit_memory": summary.get("memory"), "cache": summary.get("cache"),
        "val": {k: v for k, v in summary.items() if k.startswith("val_")},
        "torch": torch.__version__,
    }


def row_tokens(model, data, rows: int, max_length: int) -> int:
    """Real tokens of the rows tunekit trains on (its seeded subset of the train split)."""
    from tunekit.evaluation import subset
    ix = subset(len(data.train), rows, 0)
    df = data.train if ix is None else data.train.iloc[ix]
    ids = model.tokenizer(list(df["text"]), truncation=True, max_length=max_length)["input_ids"]
    return sum(len(r) for r in ids)


# ----- the report -----------------------------------------------------------------------------------
def fmt(v, spec=".1f"):
    return "n/a" if v is None else format(v, spec)


def percent(fraction) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.1f}%"


def write_report(phase_dir: Path, out_dir: Path) -> dict:
    results = {}
    for f in sorted(phase_dir.glob("*.json")):
        results[f.stem] = json.loads(f.read_text())
    report = {"phases": results, "order": [p for p in PHASES if p in results]}
    eager, compiled = results.get("minilm-eager", {}), results.get("minilm-compile", {})
    if "samples_per_s" in eager and "samples_per_s" in compiled:
        report["compile_speedup"] = compiled["samples_per_s"] / eager["samples_per_s"]
    (out_dir / "gpu.json").write_text(json.dumps(report, indent=2, default=str))
    lines = ["| phase | device | batch | samples/s | real tok/s | padded tok/s | pad % | MFU (6N) | "
             "MFU (frozen-aware) | peak MB | epoch 1 s | epoch 2 s |", "|" + " --- |" * 12]
    for name in list(PHASES) + [n for n in results if n not in PHASES]:
        r = results.get(name)
        if r is None:
            lines.append(f"| {name} | not run | | | | | | | | | | |")
        elif "error" in r:
            lines.append(f"| {name} | failed: {str(r['error'])[:120].replace('|', '/')} | | | | | | | | | | |")
        else:
            pad, mfu, mfu_f = (percent(r.get(k)) for k in ("pad_fraction", "mfu", "mfu_frozen"))
            lines.append(f"| {name} | {r['device']} | {r['batch_size']} | {fmt(r['samples_per_s'])} | "
                         f"{fmt(r['real_tokens_per_s'], '.0f')} | {fmt(r.get('padded_tokens_per_s'), '.0f')} | "
                         f"{pad} | {mfu} | {mfu_f} | {fmt(r['peak_memory_mb'], '.0f')} | "
                         f"{fmt(r['epoch1_s'], '.2f')} | {fmt(r['epoch2_s'], '.2f')} |")
    if "compile_speedup" in report:
        lines.append(f"\ncompile=True / eager, samples/s: {report['compile_speedup']:.2f}x")
    lines.append("\nEpoch 2 of 2 is timed (epoch 1 warms up and compiles). MFU = 6 x matmul params x real "
                 "tokens/s / dense bf16 peak; frozen-aware: 4N + 2 x trainable (for LoRA). Padded tokens "
                 "are estimated from the run's padding fraction. Peak MB: torch.cuda.max_memory_allocated "
                 "(the process's peak RSS on a CPU).")
    (out_dir / "gpu.md").write_text("\n".join(lines) + "\n")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phase", choices=list(PHASES))
    p.add_argument("--out", help="where one phase writes its JSON")
    p.add_argument("--smoke", action="store_true", help="tiny settings that run on a CPU")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--report", help="merge the phase JSONs in this folder")
    p.add_argument("--out-dir", default=".", help="where --report writes gpu.json and gpu.md")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.report:
        report = write_report(Path(args.report), Path(args.out_dir))
        print((Path(args.out_dir) / "gpu.md").read_text())
        return 0 if report["phases"] else 1
    if not args.phase or not args.out:
        p.error("give --phase and --out, or --report")
    try:
        result = run_phase(args.phase, args.smoke, args.max_length)
    except Exception as e:  # noqa: BLE001 - the report says which phase failed and why
        result = {"phase": args.phase, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "traceback"}, default=str))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
