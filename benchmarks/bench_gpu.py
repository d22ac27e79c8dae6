"""The GPU check of tunekit: throughput of its engine, and every strategy trained right on the GPU.
``benchmarks/gpu.sh`` runs each phase in its own process under its own time limit, then merges them:

    python benchmarks/bench_gpu.py --setup --assets DIR --out setup.json
    python benchmarks/bench_gpu.py --phase minilm-eager --assets DIR --out phase.json [--smoke]
    python benchmarks/bench_gpu.py --report DIR --out-dir OUT      # DIR/*.json -> OUT/gpu.json, gpu.md

Everything comes from the folder ``benchmarks/gpu_prepare.py`` writes (``--assets``, default
``.gpu-assets``): the lent machine reaches no package registry and is sent at most 64 MiB, so the
88 MB MiniLM wheel and the 94 MB SmolLM2 file stay behind.

Throughput phases (``minilm-eager``, ``smollm2-lora``, ``minilm-compile``): MiniLM full
fine-tuning and SmolLM2-135M with LoRA (r=8, batch 128) as a causal LM, bf16 autocast, max length
128, on **random weights** of the real shapes, built from the prepared ``config.json`` (throughput
does not depend on the values), and the real reviews tokenised by the real tokenizers. Each is
one 2-epoch ``tk.train`` run on rotten_tomatoes rows (a whole number of batches); epoch 1 is the
warm-up (compilation, allocator, autotuning) and epoch 2 is timed, from the ``epoch_end`` event
of epoch 1 (after its evaluation, so the device is idle) to the step event that ends epoch 2
(which reads the loss back, so the device is done). Epoch 2 sees every row once, so its real
(non-padding) tokens are the engine's own count (the ``tokens`` of its step events), or else the
sum of the rows' lengths. Padded tokens are estimated from the run's padding fraction.

Model-FLOPs utilisation is ``6 * N * real tokens/s / peak``, with N the weights of the matrix
products the forward pass runs (``nn.Linear`` layers that are used; no embedding lookups;
attention's own products left out, small at 128 tokens) and ``peak`` the GPU's dense bf16 rate
from its name (H100 SXM / H200: 989 TFLOP/s). For LoRA, ``6N`` counts weight gradients that
frozen layers never compute; ``mfu_frozen`` uses ``4N + 2 * trainable`` instead. Peak memory is
``torch.cuda.max_memory_allocated`` over the run (the process's peak RSS on a CPU).

Correctness phase (``correctness``): the real MiniLM (the prepared float16 file, which tunekit
loads in float32) fine-tuned with every strategy of ``tunekit.strategy_registry`` for 300 steps
(batch 32, precision "auto": bf16 autocast on a GPU), each a run record. Checks:

* above chance: validation accuracy (all 1,000 reviews) above the majority class's share of
  them by more than three standard errors of a proportion at that rate
  (``chance + 3 * sqrt(chance * (1 - chance) / n)``, 0.578 + 0.047 on these reviews);
* the record reloads and ``tk.evaluate`` gives the numbers it recorded (its own validation subset,
  max length and precision): reloaded on the device it trained on, within accuracy 0.002 and
  loss 1e-4; reloaded on the CPU in a fresh process with ``CUDA_VISIBLE_DEVICES=""``, within
  accuracy 0.01 and loss 0.02 after training on a GPU (bf16 autocast there and on the CPU round
  differently: a few reviews near the boundary may flip), as tightly as the first when it trained
  on the CPU too. A QAT record holds the float weights it trained, but its numbers were measured
  with the layers fake-quantized: it is compared fake-quantized again (the float model's numbers
  are reported beside them).

``--smoke`` shrinks everything so that it runs on a CPU: a few steps of batch 4 at length 32,
2 of the layers of the random models, ``compile=True`` through dynamo's "eager" backend (graph
capture, no code generation), 2 steps per strategy on 16 validation reviews; there the reload
check is required and the above-chance check is reported only (2 steps cannot show it).
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
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
    "smollm2-lora": dict(model="smollm2", task="causal_lm", strategy="lora", batch=128, rows=128 * 32, compile=False),
    "correctness": dict(model="minilm", task="classification"),
    "minilm-compile": dict(model="minilm", task="classification", strategy="full", batch=256, rows=0, compile=True),
}
SMOKE = dict(batch=4, rows=4 * 2, max_length=32, eval_size=8, layers=2, compile_backend="eager")
CHECK = dict(batch=32, steps=300, eval_size=None)
CHECK_SMOKE = dict(batch=4, steps=2, eval_size=16)
CHECK_ARGS = {"freeze": {"train_blocks": [-2, -1]}}
"""Arguments of the strategies that need some (Freeze: the top 2 blocks and the head train)."""
CHECK_SMOKE_ARGS = {"gradual": {"stop_at": "block.5"}}
"""... and in the smoke run's 2 steps: gradual unfreezing in two stages (the head, then the top
block joins), not MiniLM's eight (one stage per step at least)."""
TOLERANCE = {"same-device": {"accuracy": 0.002, "loss": 1e-4}, "cross-device": {"accuracy": 0.01, "loss": 0.02}}
"""How close a reloaded record's numbers must be to the ones it recorded: reloaded on the kind of
device it trained on (the same kernels; 0.002 is 2 of 1,000 reviews), or trained on a GPU and
reloaded on the CPU (bf16 autocast rounds differently there: a few reviews near the boundary flip)."""
# dense bf16 tensor-core peaks (TFLOP/s), matched in order against the device name
PEAK_BF16_TFLOPS = [("H200", 989.0), ("GH200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("H800", 989.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10G", 125.0)]
WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def peak_tflops(device_name: str):
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


# ----- the prepared folder ---------------------------------------------------------------------------
def read_reviews(path: Path):
    """The Rotten Tomatoes splits ``gpu_prepare.py`` wrote, as the TextDataset they came from."""
    import pandas as pd

    from tunekit.data import TextDataset
    with gzip.open(path, "rt", encoding="utf-8") as f:
        blob = json.load(f)
    splits = {s: pd.DataFrame({"text": pd.Series(blob[s]["text"], dtype=object),
                               "label": pd.Series(blob[s]["label"], dtype="int64")})
              for s in ("train", "validation", "test")}
    return TextDataset(name=blob["name"], label_names=list(blob["label_names"]), source=blob["source"],
                       seed=blob["seed"], info=dict(blob.get("info") or {}), **splits)


def reviews(assets: Path):
    return read_reviews(assets / "data" / "rotten_tomatoes.json.gz")


def verify_assets(assets: Path) -> dict:
    """The prepared folder against its manifest: every file there, of its size and SHA-256."""
    manifest_file = assets / "manifest.json"
    if not manifest_file.is_file():
        raise SystemExit(f"{manifest_file} is missing: run benchmarks/gpu_prepare.py on the development machine "
                         "and carry its folders")
    manifest = json.loads(manifest_file.read_text())
    bad = []
    for name, want in manifest["files"].items():
        f = assets / name
        if not f.is_file():
            bad.append(f"{name}: missing")
            continue
        h = hashlib.sha256(f.read_bytes()).hexdigest()
        if f.stat().st_size != want["bytes"] or h != want["sha256"]:
            bad.append(f"{name}: {f.stat().st_size} bytes, sha256 {h[:12]} (manifest: {want['bytes']}, "
                       f"{want['sha256'][:12]})")
    if bad:
        raise SystemExit(f"{assets} does not match its manifest: " + "; ".join(bad))
    return {"files": len(manifest["files"]), "bytes": sum(w["bytes"] for w in manifest["files"].values()),
            "created": manifest.get("created"), "wheels": sorted(manifest.get("wheels", {}))}


def random_model_dir(src: Path, task: str, out: Path, layers=None) -> Path:
    """A model folder with random weights of ``src``'s shape (its ``config.json``; ``layers``
    overrides the depth) and ``src``'s tokenizer and pooling files, which tunekit then loads as
    any model folder."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    cfg = AutoConfig.from_pretrained(src, local_files_only=True, trust_remote_code=False)
    if layers is not None:
        cfg.num_hidden_layers = layers
    torch.manual_seed(0)
    hf = (AutoModelForCausalLM if task == "causal_lm" else AutoModel).from_config(cfg)
    hf.save_pretrained(out)
    for f in src.rglob("*"):
        rel = f.relative_to(src)
        if f.is_file() and rel.name not in WEIGHT_NAMES and rel.as_posix() != "config.json":
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, out / rel)
    return out


# ----- throughput -------------------------------------------------------------------------------------
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


def run_phase(name: str, assets: Path, smoke: bool, max_length: int) -> dict:
    import tunekit as tk
    from tunekit.runtime import pick_device
    spec = dict(PHASES[name])
    eval_size = 256
    if smoke:
        spec.update(batch=SMOKE["batch"], rows=SMOKE["rows"])
        max_length, eval_size = SMOKE["max_length"], SMOKE["eval_size"]
    data = reviews(assets)
    batch = spec["batch"]
    rows = spec["rows"] or len(data.train) // batch * batch
    rows = min(rows, len(data.train) // batch * batch)
    device = pick_device(None)
    layers = SMOKE["layers"] if smoke else None
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        model_dir = random_model_dir(assets / spec["model"], spec["task"], Path(tmp) / "model", layers)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        if spec["task"] == "classification":
            model = tk.load_model(str(model_dir), label_names=data.label_names, seed=0)
        else:
            model = tk.load_model(str(model_dir), task="causal_lm", seed=0)
        load_s = time.perf_counter() - t
        backend = SMOKE["compile_backend"] if smoke and spec["compile"] else None
        with compile_backend(backend):
            result = time_training(model, data, spec, device, batch, rows, max_length, eval_size, Path(tmp) / "runs")
    if spec["compile"]:
        result["compile_backend"] = backend or "inductor (torch.compile's default)"
    result.update({"phase": name, "weights": f"random, from {spec['model']}/config.json"
                   + (f" with {layers} layers" if layers else ""), "build_s": build_s, "load_s": load_s})
    return result


@contextlib.contextmanager
def compile_backend(backend):
    """``torch.compile`` with ``backend`` (None: unchanged). SMOKE compiles with dynamo's "eager"
    backend: the graph is captured, no kernels are generated (inductor takes minutes on a CPU)."""
    if backend is None:
        yield
        return
    real = torch.compile

    def compile_with(*args, **kw):
        kw["backend"] = backend
        return real(*args, **kw)
    torch.compile = compile_with
    try:
        yield
    finally:
        torch.compile = real


def time_training(model, data, spec, device, batch, rows, max_length, eval_size, runs_dir) -> dict:
    import tunekit as tk
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
    run = tk.train(model, data, make_strategy(spec["strategy"]), callbacks=callbacks, epochs=2,
                   batch_size=batch, max_length=max_length, train_size=rows, eval_size=eval_size,
                   evals_per_epoch=1, schedule="constant", warmup=0.0, precision="bf16",
                   compile=spec["compile"], log_every=per_epoch, group_by_length=True,
                   progress=False, save_weights=False, runs_dir=str(runs_dir), seed=0)
    summary, config = run.summary, run.config
    if summary.get("status") != "completed":
        raise RuntimeError(f"the run ended {summary.get('status')!r}: {summary.get('reason')}")
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
        "model": spec["model"], "task": spec["task"], "strategy": spec["strategy"],
        "compile": spec["compile"], "batch_size": batch, "max_length": max_length, "rows": rows,
        "steps_per_epoch": per_epoch, "device": device_name, "precision": config.get("precision"),
        "epoch1_s": marks["start"] - marks["begin"], "epoch2_s": seconds,
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


# ----- correctness ------------------------------------------------------------------------------------
def chance_level(data, eval_size, seed: int) -> dict:
    """The majority class's share of the validation rows a run evaluates (its seeded subset),
    and the accuracy that is above it by three standard errors."""
    from tunekit.evaluation import subset
    ix = subset(len(data.validation), eval_size, seed + 1)
    labels = data.validation["label"] if ix is None else data.validation["label"].iloc[ix]
    counts = labels.value_counts()
    n = int(len(labels))
    chance = float(counts.max()) / n
    margin = 3 * math.sqrt(chance * (1 - chance) / n)
    return {"rows": n, "label_counts": {data.label_names[int(k)]: int(v) for k, v in counts.items()},
            "chance": chance, "margin": margin, "needed": chance + margin}


def run_correctness(assets: Path, smoke: bool, max_length: int) -> dict:
    import tunekit as tk
    from tunekit.runtime import pick_device
    from tunekit.strategies import get_strategy
    from tunekit.strategy_registry import STRATEGIES
    settings = dict(CHECK_SMOKE if smoke else CHECK)
    if smoke:
        max_length = SMOKE["max_length"]
    data = reviews(assets)
    device = pick_device(None)
    batch, steps = settings["batch"], settings["steps"]
    train_size = min(batch * steps, len(data.train) // batch * batch)
    chance = chance_level(data, settings["eval_size"], 0)
    work = Path(tempfile.mkdtemp(prefix="tunekit-gpu-check-"))
    runs_dir = work / "runs"
    strategies = {}
    try:
        for name in STRATEGIES:
            t = time.perf_counter()
            try:
                model = tk.load_model(str(assets / "minilm"), label_names=data.label_names, seed=0)
                strategy = get_strategy({"name": name, **CHECK_ARGS.get(name, {}),
                                         **(CHECK_SMOKE_ARGS.get(name, {}) if smoke else {})})
                try:
                    strategy.count(model)
                except tk.ConfigError as e:  # refused for a classifier in words (prefix tuning): said, not failed
                    strategies[name] = {"not_applicable": str(e), "seconds": round(time.perf_counter() - t, 2)}
                    print(f"correctness: {name}: not applicable: {e}", flush=True)
                    continue
                run = tk.train(model, data, strategy, epochs=1, batch_size=batch, train_size=train_size,
                               eval_size=settings["eval_size"], max_length=max_length, evals_per_epoch=1,
                               progress=False, runs_dir=str(runs_dir), name=f"check-{name}", seed=0)
                s = run.summary
                r = {"run": run.path.name, "label": strategy.label, "status": s.get("status"),
                     "reason": s.get("reason"), "steps": s.get("steps"), "val_accuracy": s.get("val_accuracy"),
                     "val_loss": s.get("val_loss"), "precision": run.config.get("precision"),
                     "device": str(run.config.get("device")), "seconds": round(time.perf_counter() - t, 2)}
                r["above_chance"] = r["val_accuracy"] is not None and r["val_accuracy"] > chance["needed"]
                del model, run
                r["here"] = evaluate_record(tk.load_run(runs_dir / r["run"]), data, str(device))
            except Exception as e:  # noqa: BLE001 - one strategy's failure is reported, the others still run
                r = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6),
                     "seconds": round(time.perf_counter() - t, 2)}
            strategies[name] = r
            print(f"correctness: {name}: {json.dumps({k: v for k, v in r.items() if k != 'traceback'}, default=str)}",
                  flush=True)
        reloaded = reevaluate_on_cpu(runs_dir, assets, [r["run"] for r in strategies.values() if "run" in r])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    trained_on = "cuda" if device.type == "cuda" else "cpu"
    tol_here = TOLERANCE["same-device"]
    tol_cpu = TOLERANCE["cross-device" if trained_on != "cpu" else "same-device"]
    for r in strategies.values():
        if "run" in r:
            r["cpu"] = reloaded.get(r["run"], {"error": "not re-evaluated"})
            r["reload_here_ok"] = matches(r, r.get("here", {}), tol_here)
            r["reload_cpu_ok"] = matches(r, r["cpu"], tol_cpu)
            r["reload_ok"] = r["reload_here_ok"] and r["reload_cpu_ok"]
    failures = []
    for name, r in strategies.items():
        if "not_applicable" in r:
            continue
        if "error" in r or r.get("status") != "completed":
            failures.append(f"{name}: {r.get('error') or r.get('status')}")
            continue
        recorded = f"recorded accuracy {r['val_accuracy']}, loss {r['val_loss']}"
        if not r["reload_here_ok"]:
            failures.append(f"{name}: the record reloaded on {device.type} evaluates to {r['here']}, {recorded} "
                            f"(tolerance {tol_here})")
        if not r["reload_cpu_ok"]:
            failures.append(f"{name}: the record reloaded on the CPU evaluates to {r['cpu']}, {recorded} "
                            f"(tolerance {tol_cpu})")
        if not smoke and not r["above_chance"]:
            failures.append(f"{name}: accuracy {r['val_accuracy']:.4f} is not above chance "
                            f"({chance['chance']:.4f} + {chance['margin']:.4f})")
    above = "required" if not smoke else "reported only (SMOKE: a few steps cannot show it)"
    return {"phase": "correctness", "model": "minilm (prepared float16 file, loaded in float32)",
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "trained_on": trained_on,
            "batch_size": batch, "steps": train_size // batch, "train_size": train_size, "max_length": max_length,
            "eval_size": chance["rows"], "chance": chance, "tolerance": {"here": tol_here, "cpu": tol_cpu},
            "above_chance_check": above, "strategies": strategies, "passed": not failures, "failures": failures,
            "torch": torch.__version__}


def matches(recorded: dict, got: dict, tol: dict) -> bool:
    """Whether a re-evaluation gives the recorded validation numbers within ``tol``."""
    if "error" in got or got.get("accuracy") is None or recorded.get("val_accuracy") is None:
        return False
    return (abs(got["accuracy"] - recorded["val_accuracy"]) <= tol["accuracy"]
            and abs(got["loss"] - recorded["val_loss"]) <= tol["loss"])


def evaluate_record(run, data, device: str) -> dict:
    """``tk.evaluate`` of a record reloaded from disk, on ``device``, as it recorded (its own
    validation subset, max length and precision). A QAT record holds the float weights it
    trained (``tk.quantize`` converts them), but its numbers were measured with the layers
    fake-quantized: it is evaluated both ways, and the fake-quantized numbers are the ones compared."""
    import tunekit as tk
    from tunekit import quantizers
    from tunekit.evaluation import run_precision
    try:
        m = tk.evaluate(run.path, data, device=device)
        out = {"accuracy": m["accuracy"], "loss": m["loss"], "examples": m["examples"], "seconds": m["seconds"]}
        strategy = run.config.get("strategy") or {}
        if strategy.get("name") == "qat":
            model = run.load_model()
            quantizers.prepare_qat(model, int(strategy.get("bits", 8)))
            train = run.config["train"]
            q = tk.evaluate(model, data, size=train.get("eval_size"), seed=int(train.get("seed", 0)) + 1,
                            max_length=train.get("max_length"), device=device, precision=run_precision(run))
            out = {"accuracy": q["accuracy"], "loss": q["loss"], "examples": q["examples"], "seconds": q["seconds"],
                   "as": "fake-quantized again, as it trained", "float": {"accuracy": m["accuracy"], "loss": m["loss"]}}
        return out
    except Exception as e:  # noqa: BLE001 - reported per record
        return {"error": f"{type(e).__name__}: {e}"}


def reevaluate_on_cpu(runs_dir: Path, assets: Path, runs: list) -> dict:
    """:func:`evaluate_record` of each record in a fresh process that sees no GPU."""
    if not runs:
        return {}
    out = runs_dir.parent / "cpu.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, __file__, "--reevaluate", str(runs_dir), "--assets", str(assets), "--out", str(out)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    print(proc.stdout + proc.stderr, end="", flush=True)
    if not out.is_file():
        return {r: {"error": f"the CPU process exited {proc.returncode}: {proc.stderr.strip()[-400:]}"} for r in runs}
    back = json.loads(out.read_text())
    print(f"correctness: re-evaluated {len(back)} records on the CPU in {time.perf_counter() - t:.1f} s", flush=True)
    return back


def reevaluate(runs_dir: Path, assets: Path) -> dict:
    """Every record under ``runs_dir``, reloaded and evaluated on the CPU (:func:`evaluate_record`)."""
    import tunekit as tk
    if torch.cuda.is_available():
        raise SystemExit("--reevaluate must run where no GPU is visible (CUDA_VISIBLE_DEVICES=\"\")")
    data = reviews(assets)
    return {run.path.name: evaluate_record(run, data, "cpu") for run in tk.list_runs(str(runs_dir))}


# ----- setup ------------------------------------------------------------------------------------------
def setup_info(assets: Path) -> dict:
    """What the device has: versions, the GPU, and the prepared folder checked against its manifest."""
    from importlib import metadata
    info = {"phase": "setup", "python": sys.version.split()[0], "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "assets": verify_assets(assets)}
    for dist in ("transformers", "peft", "accelerate", "safetensors", "torchao", "pandas", "numpy"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    carried = {}
    for wheel in info["assets"]["wheels"]:  # which copy of each carried package this Python imports
        dist, version = wheel.split("-")[:2]
        try:
            d = metadata.distribution(dist)
            carried[dist] = {"wheel": wheel, "version": d.version, "from": str(d.locate_file(""))}
        except metadata.PackageNotFoundError:
            carried[dist] = {"wheel": wheel, "version": None, "from": None}
    info["carried"] = carried
    import tunekit
    info["tunekit"] = str(Path(tunekit.__file__).parent)
    return info


# ----- the report -------------------------------------------------------------------------------------
def fmt(v, spec=".1f"):
    return "n/a" if v is None else format(v, spec)


def percent(fraction) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.1f}%"


def throughput_lines(results: dict) -> list[str]:
    lines = ["| phase | device | batch | samples/s | real tok/s | padded tok/s | pad % | MFU (6N) | "
             "MFU (frozen-aware) | peak MB | epoch 1 s | epoch 2 s |", "|" + " --- |" * 12]
    for name in [p for p in PHASES if p != "correctness"]:
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
    return lines


def correctness_lines(r: dict | None) -> list[str]:
    if r is None:
        return ["correctness: not run"]
    if "strategies" not in r:
        return [f"correctness: failed: {r.get('error')}"]
    c, tol = r["chance"], r["tolerance"]
    where = "the GPU" if r["trained_on"] == "cuda" else "the CPU"
    lines = [f"Correctness: the real MiniLM, every strategy, {r['steps']} steps of batch {r['batch_size']} on "
             f"{r['device']}; validation {r['eval_size']} reviews {c['label_counts']}, chance {c['chance']:.3f}, "
             f"above chance means > {c['needed']:.3f} ({r['above_chance_check']}). Each record reloaded on "
             f"{where} (within accuracy {tol['here']['accuracy']:g}, loss {tol['here']['loss']:g}) and on the CPU "
             f"in a fresh process (within accuracy {tol['cpu']['accuracy']:g}, loss {tol['cpu']['loss']:g}).", "",
             "| strategy | status | precision | val accuracy | above chance | val loss | reloaded accuracy | "
             "reloaded loss | CPU accuracy | CPU loss | reload ok | s |", "|" + " --- |" * 12]
    for name, s in r["strategies"].items():
        if "error" in s:
            lines.append(f"| {name} | failed: {s['error'][:100].replace('|', '/')} | | | | | | | | | | |")
            continue
        if "not_applicable" in s:  # refused for a classifier in words, by design
            lines.append(f"| {name} | not applicable: {s['not_applicable'][:100].replace('|', '/')} | | | | | | | | "
                         f"| | |")
            continue
        here, cpu = s.get("here", {}), s.get("cpu", {})
        prec = s.get("precision")
        prec = prec.get("autocast") or "fp32" if isinstance(prec, dict) else prec
        lines.append(f"| {s.get('label', name)} | {s['status']} | {prec} | {fmt(s['val_accuracy'], '.4f')} | "
                     f"{'yes' if s['above_chance'] else 'no'} | {fmt(s['val_loss'], '.4f')} | "
                     f"{fmt(here.get('accuracy'), '.4f')} | {fmt(here.get('loss'), '.4f')} | "
                     f"{fmt(cpu.get('accuracy'), '.4f')} | {fmt(cpu.get('loss'), '.4f')} | "
                     f"{'yes' if s.get('reload_ok') else 'NO'} | {fmt(s['seconds'], '.1f')} |")
    for name, s in r["strategies"].items():
        if "float" in s.get("cpu", {}):
            f = s["cpu"]["float"]
            lines.append(f"\n{s.get('label', name)}: its reloaded numbers are with the layers fake-quantized again, "
                         f"as it trained and was measured; the float weights the record holds (what load_model "
                         f"gives) evaluate on the CPU to accuracy {f['accuracy']:.4f}, loss {f['loss']:.4f}.")
    lines.append("")
    lines.append("correctness: " + ("PASSED" if r["passed"] else "FAILED: " + "; ".join(r["failures"])))
    return lines


def write_report(phase_dir: Path, out_dir: Path) -> dict:
    results = {}
    for f in sorted(phase_dir.glob("*.json")):
        results[f.stem] = json.loads(f.read_text())
    setup = results.pop("setup", None)
    report = {"setup": setup, "phases": results, "order": [p for p in PHASES if p in results]}
    eager, compiled = results.get("minilm-eager", {}), results.get("minilm-compile", {})
    if "samples_per_s" in eager and "samples_per_s" in compiled:
        report["compile_speedup"] = compiled["samples_per_s"] / eager["samples_per_s"]
    failed = sorted(n for n, r in results.items() if "error" in r or r.get("passed") is False)
    report["passed"] = bool(results) and not failed and setup is not None and "error" not in setup
    report["failed"] = failed
    (out_dir / "gpu.json").write_text(json.dumps(report, indent=2, default=str))
    lines = []
    if setup:
        lines.append("Setup: " + (f"failed: {setup['error']}" if "error" in setup else
                                  f"{setup['device']}, Python {setup['python']}, torch {setup['torch']}, transformers "
                                  f"{setup['transformers']}, peft {setup['peft']}, torchao {setup['torchao']}; "
                                  f"prepared folder {setup['assets']['files']} files "
                                  f"({setup['assets']['bytes'] / 2**20:.1f} MiB) as its manifest says"))
        lines.append("")
    lines += throughput_lines(results)
    if "compile_speedup" in report:
        lines.append(f"\ncompile=True / eager, samples/s: {report['compile_speedup']:.2f}x")
    lines.append("\nThroughput: random weights of the real shapes, real reviews. Epoch 2 of 2 is timed (epoch 1 "
                 "warms up and compiles). MFU = 6 x matmul params x real tokens/s / dense bf16 peak; frozen-aware: "
                 "4N + 2 x trainable (for LoRA). Padded tokens are estimated from the run's padding fraction. "
                 "Peak MB: torch.cuda.max_memory_allocated (the process's peak RSS on a CPU).")
    lines.append("")
    lines += correctness_lines(results.get("correctness"))
    lines.append("")
    lines.append("gpu check: " + ("PASSED" if report["passed"] else f"FAILED ({', '.join(failed) or 'no phases'})"))
    (out_dir / "gpu.md").write_text("\n".join(lines) + "\n")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phase", choices=list(PHASES))
    p.add_argument("--setup", action="store_true", help="record versions and check the prepared folder")
    p.add_argument("--reevaluate", metavar="RUNS_DIR", help="(internal) evaluate every record there on the CPU")
    p.add_argument("--assets", default=".gpu-assets", help="the folder benchmarks/gpu_prepare.py wrote")
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
        return 0 if report["passed"] else 1
    if not args.out or not (args.phase or args.setup or args.reevaluate):
        p.error("give --phase, --setup or --reevaluate with --out; or --report")
    assets = Path(args.assets).resolve()
    if args.reevaluate:
        result = reevaluate(Path(args.reevaluate), assets)
        Path(args.out).write_text(json.dumps(result, indent=2))
        return 0
    name = "setup" if args.setup else args.phase
    try:
        if args.setup:
            result = setup_info(assets)
        elif args.phase == "correctness":
            result = run_correctness(assets, args.smoke, args.max_length)
        else:
            result = run_phase(args.phase, assets, args.smoke, args.max_length)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the report says which phase failed and why
        result = {"phase": name, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k not in ("traceback", "strategies")}, default=str))
    return 1 if "error" in result or result.get("passed") is False else 0


if __name__ == "__main__":
    sys.exit(main())
