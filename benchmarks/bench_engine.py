"""tunekit's training engine against Hugging Face's Trainer and a bare PyTorch loop.

    .venv/bin/python benchmarks/bench_engine.py                        # full, lora, freeze, probe
    .venv/bin/python benchmarks/bench_engine.py --steps 6 --warmup-steps 2 --repeats 1 --strategies full,lora
    .venv/bin/python benchmarks/bench_engine.py --memory --json bench.json
    .venv/bin/python benchmarks/bench_engine.py --instruments          # cost of live step events
    .venv/bin/python benchmarks/bench_engine.py --epochs-cost          # epoch 2 of freeze / probe vs full

What is measured. Every engine trains the built-in MiniLM (fresh weights and the same seeded
head for every run) on the same rows of rotten_tomatoes (the first ``steps * batch_size`` rows
of a seeded permutation of the train split), tokenised the same way (truncated to
``--max-length``, padded per batch to its longest row), with the same batch size, learning rate
(the strategy's tunekit default), constant schedule, no warm-up, AdamW with weight decay 0.01 on
matrices only, gradient clipping at 1.0 and the same trainable set, for one epoch of ``--steps``
steps, all in one process:

* ``tunekit``: ``tk.train`` with length grouping, timed by its ``step`` events (``log_every=1``);
* ``trainer``: ``transformers.Trainer`` with its default random sampling, timed by a callback;
* ``trainer-grouped``: the same with length-grouped sampling;
* ``bare``: a DataLoader with random shuffling, ``model(**batch).loss``, fused AdamW.

The clock starts when the last warm-up step ends (``--warmup-steps``) and stops when the last
step ends, so ``steps - warmup_steps`` steps are timed; the median over ``--repeats`` is shown.
Tokens are counted where they enter the model (a hook on the input embedding, open only in the
timed window): *real* tokens are the non-padding ones, *padded* tokens all that were computed;
both are over the timed rows only. ``e2e`` is all samples over the time from the start of
training (after tokenising) to the last step: it charges a probe's one feature pass to tunekit.

Reading the ratios: ``tunekit / X`` is tunekit's steady samples/s over X's (same rows, same
steps); above 1 tunekit is faster. Padding is what grouping removes, so compare the pad
fraction too. The Trainer groups by length within mega-batches of ``min(50, rows / (4 *
batch))`` batches (10 at the defaults; 1, so no grouping at all, on a run of a few steps).
``--precision`` is fp32 by default, the same arithmetic everywhere; ``auto`` takes what tunekit
picks for the device (bf16 autocast on a CPU with AMX) and gives it to the others too.

The probe is not like for like by design: tunekit trains the head on cached features, the
others run the frozen backbone at every step (see ``e2e`` for the full cost). Freeze is close to
it: tunekit caches the frozen bottom blocks' output, the others recompute it at every step.
tunekit's MiniLM head reads the mean of the token states; the Trainer and the bare loop run the
stock ``BertForSequenceClassification`` forward on the same weights (the pooler's [CLS] vector
feeds the head), one small matrix product per example more: it changes no speed materially.

``--memory`` also runs each candidate alone in a child process and reports the largest resident
set size while it trains, beside the same child that loads the model and trains nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from typing import Optional

import numpy as np
import torch

import tunekit as tk

ENGINES = ("tunekit", "trainer", "trainer-grouped", "bare")
STRATEGIES = {
    "full": lambda: tk.Full(),
    "lora": lambda: tk.LoRA(rank=8, target_modules=("query", "value")),
    "freeze": lambda: tk.Freeze.top(2),  # blocks 4 and 5 train; embeddings and blocks 0-3 frozen
    "probe": lambda: tk.Probe(),
}
WEIGHT_DECAY, GRAD_CLIP, SEED, EVAL_SIZE = 0.01, 1.0, 0, 64


# ----- the shared set-up ----------------------------------------------------------------------------
@dataclasses.dataclass
class Bench:
    """What every engine shares: the rows, their tokens, the device and the precision."""

    args: argparse.Namespace
    data: "tk.TextDataset"  # train split = exactly the rows every engine trains on
    rows: list[dict]        # the same rows tokenised: input_ids, attention_mask, labels
    device: torch.device
    amp: Optional[torch.dtype]
    pad_id: int

    @classmethod
    def make(cls, args, n_rows: int) -> "Bench":
        from transformers import AutoTokenizer

        from tunekit.runtime import autocast_dtype, pick_device
        from tunekit.sources import resolve_model_path
        load_data = getattr(tk, "load_data", None) or tk.data.load
        data = load_data("rotten_tomatoes")
        order = np.random.default_rng(SEED).permutation(len(data.train))[:n_rows]
        data = dataclasses.replace(data, train=data.train.iloc[order].reset_index(drop=True))
        tok = AutoTokenizer.from_pretrained(resolve_model_path("minilm"), local_files_only=True)  # as tunekit does
        enc = tok(list(data.train["text"]), truncation=True, max_length=args.max_length)
        rows = [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": int(y)}
                for ids, y in zip(enc["input_ids"], data.train["label"])]
        device = pick_device(None)
        return cls(args, data, rows, device, autocast_dtype(device, args.precision), tok.pad_token_id)

    @property
    def total_steps(self) -> int:
        return -(-len(self.rows) // self.args.batch_size)

    def real_tokens(self) -> int:
        return sum(len(r["input_ids"]) for r in self.rows)


def load_minilm(data):
    return tk.load_model("minilm", label_names=data.label_names, seed=SEED)


def learning_rate(args, key: str) -> float:
    return args.lr or type(STRATEGIES[key]()).default_lr


def trainable_module(model, key: str):
    """The Hugging Face module with exactly tunekit's trainable set for this strategy: LoRA through
    ``peft.get_peft_model`` with the LoraConfig tunekit builds; Freeze, Full and Probe ("head
    only") by ``requires_grad`` over the same layer groups."""
    plan = STRATEGIES[key]().plan(model)
    if plan.adapter is not None:
        from peft import get_peft_model
        return get_peft_model(model.hf, plan.adapter)
    model.set_trainable(plan.train)
    return model.hf


def count_trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ----- instruments ----------------------------------------------------------------------------------
class TokenCounter(contextlib.AbstractContextManager):
    """Counts the token ids that reach the input embedding while ``counting`` is on. The hook is
    removed on exit."""

    def __init__(self, hf, pad_id: int):
        self.embedding, self.pad_id = hf.get_input_embeddings(), pad_id
        self.counting, self.real, self.padded, self.handle = False, 0, 0, None

    def __enter__(self):
        self.handle = self.embedding.register_forward_pre_hook(self._seen)
        return self

    def _seen(self, module, inputs):
        if self.counting:
            ids = inputs[0]
            self.padded += ids.numel()
            self.real += int((ids != self.pad_id).sum())

    def __exit__(self, *exc):
        self.handle.remove()
        return False


class StepClock:
    """Wall-clock marks at the start of training, the end of the last warm-up step and the end of
    the last step; opens the token counter for the timed window."""

    def __init__(self, warmup: int, total: int, counter: TokenCounter):
        self.warmup, self.total, self.counter = warmup, total, counter
        self.t_begin = self.t_start = self.t_end = None
        self.samples_start = self.samples_end = 0
        self.tokens_start = self.tokens_end = None  # tunekit's own count of real tokens, if it gives one

    def begin(self) -> None:
        if self.t_begin is None:
            self.t_begin = time.perf_counter()

    def step(self, step: int, samples: int, tokens: Optional[int] = None) -> None:
        if step == self.warmup:
            self.t_start, self.samples_start, self.counter.counting = time.perf_counter(), samples, True
            self.tokens_start = tokens
        if step == self.total:
            self.t_end, self.samples_end, self.counter.counting = time.perf_counter(), samples, False
            self.tokens_end = tokens

    def result(self) -> dict:
        if self.t_start is None or self.t_end is None:
            raise RuntimeError(f"the run did not reach step {self.total} (timed from step {self.warmup})")
        dt = self.t_end - self.t_start
        c = self.counter
        reported = None if self.tokens_start is None or self.tokens_end is None else self.tokens_end - self.tokens_start
        real = c.real if c.padded else reported
        return {"timed_s": dt, "timed_samples": self.samples_end - self.samples_start,
                "samples_per_s": (self.samples_end - self.samples_start) / dt,
                "real_tokens_per_s": real / dt if real else None,
                "engine_reported_real_tokens": reported, "counted_real_tokens": c.real if c.padded else None,
                "padded_tokens_per_s": c.padded / dt if c.padded else None,
                "pad_fraction": 1 - c.real / c.padded if c.padded else None,
                "e2e_samples_per_s": self.samples_end / (self.t_end - self.t_begin)}


# ----- the engines ----------------------------------------------------------------------------------
def tunekit_config(bench: Bench, key: str, **changes) -> dict:
    """``tk.train`` keywords; fields this TrainConfig lacks are dropped (noted in the result)."""
    a = bench.args
    cfg = dict(batch_size=a.batch_size, max_length=a.max_length, train_size=len(bench.rows), epochs=1,
               schedule="constant", warmup=0.0, lr=learning_rate(a, key), weight_decay=WEIGHT_DECAY,
               grad_clip=GRAD_CLIP, evals_per_epoch=1, eval_size=EVAL_SIZE, progress=False, save_weights=False,
               precision=a.precision, group_by_length=True, log_every=1, seed=SEED)
    cfg.update(changes)
    return {k: v for k, v in cfg.items() if k not in missing_config_fields()}


def missing_config_fields() -> list[str]:
    """Fields this benchmark sets that the installed TrainConfig does not have (yet)."""
    known = {f.name for f in dataclasses.fields(tk.TrainConfig)}
    return sorted({"precision", "group_by_length", "log_every"} - known)


def run_tunekit(bench: Bench, key: str) -> dict:
    model = load_minilm(bench.data)
    out: dict = {}
    with TokenCounter(model.hf, bench.pad_id) as counter, tempfile.TemporaryDirectory() as runs_dir:
        clock = StepClock(bench.args.warmup_steps, bench.total_steps, counter)
        callbacks = {"train_start": lambda ev: (clock.begin(), out.update(trainable=ev.payload["params"]["trainable"])),
                     "step": lambda ev: clock.step(ev.payload["step"], ev.payload["samples"], ev.payload.get("tokens"))}
        cfg = tunekit_config(bench, key, runs_dir=runs_dir)
        run = tk.train(model, bench.data, STRATEGIES[key](), callbacks=callbacks, **cfg)
        summary, precision = run.summary, run.config.get("precision")
    out.update(clock.result())
    out["dropped_config"] = missing_config_fields()
    out["tunekit_peak_memory_mb"] = summary.get("peak_memory_mb")
    out["tunekit_memory"] = summary.get("memory")
    out["precision_ran"] = precision
    return out


def trainer_arguments(bench: Bench, key: str, grouped: bool, output_dir: str, cls=None):
    """TrainingArguments (or ``cls``, e.g. Seq2SeqTrainingArguments) with the shared settings;
    length grouping is ``train_sampling_strategy="group_by_length"`` in transformers 5.x
    (``group_by_length=True`` before)."""
    from transformers import TrainingArguments
    cls = cls or TrainingArguments
    a = bench.args
    kw = dict(output_dir=output_dir, per_device_train_batch_size=a.batch_size, max_steps=bench.total_steps,
              learning_rate=learning_rate(a, key), lr_scheduler_type="constant", warmup_steps=0,
              weight_decay=WEIGHT_DECAY, max_grad_norm=GRAD_CLIP, logging_steps=bench.total_steps,
              eval_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True,
              dataloader_num_workers=0, seed=SEED, label_names=["labels"],
              bf16=bench.amp is torch.bfloat16, use_cpu=bench.device.type == "cpu")
    fields = {f.name for f in dataclasses.fields(cls)}
    if "train_sampling_strategy" in fields:
        kw["train_sampling_strategy"] = "group_by_length" if grouped else "random"
    else:
        kw["group_by_length"] = grouped
    return cls(**kw)


def run_trainer(bench: Bench, key: str, grouped: bool) -> dict:
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            clock.begin()

        def on_step_end(self, args, state, control, **kw):
            clock.step(state.global_step, min(state.global_step * bench.args.batch_size, len(bench.rows)))

    model = load_minilm(bench.data)
    tok = model.tokenizer
    module = trainable_module(model, key)
    with TokenCounter(model.hf, bench.pad_id) as counter, tempfile.TemporaryDirectory() as out_dir:
        clock = StepClock(bench.args.warmup_steps, bench.total_steps, counter)
        trainer = Trainer(model=module, args=trainer_arguments(bench, key, grouped, out_dir),
                          train_dataset=bench.rows, data_collator=DataCollatorWithPadding(tok),
                          processing_class=tok, callbacks=[Clock()])
        trainer.remove_callback(PrinterCallback)  # its end-of-training line would break the table
        trainer.train()
        optim = getattr(trainer.args.optim, "value", str(trainer.args.optim))
    return {**clock.result(), "trainable": count_trainable(module), "optim": optim}


def fused_adamw(groups: list[dict], lr: float) -> torch.optim.AdamW:
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # no fused kernel for this device / torch
        return torch.optim.AdamW(groups, lr=lr)


def run_bare(bench: Bench, key: str) -> dict:
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    model = load_minilm(bench.data)
    module = trainable_module(model, key).to(bench.device).train()
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = fused_adamw([g for g in groups if g["params"]], learning_rate(bench.args, key))
    torch.manual_seed(SEED)
    loader = DataLoader(bench.rows, batch_size=bench.args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(SEED),
                        collate_fn=DataCollatorWithPadding(model.tokenizer))
    amp = bench.amp
    with TokenCounter(model.hf, bench.pad_id) as counter:
        clock = StepClock(bench.args.warmup_steps, bench.total_steps, counter)
        clock.begin()
        samples = 0
        for step, batch in enumerate(loader, 1):
            batch = {k: v.to(bench.device) for k, v in batch.items()}
            with torch.autocast(bench.device.type, dtype=amp, enabled=amp is not None):
                loss = module(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            opt.step()
            opt.zero_grad(set_to_none=True)
            samples += len(batch["labels"])
            clock.step(step, samples)
    return {**clock.result(), "trainable": count_trainable(module),
            "optim": f"AdamW(fused={opt.defaults.get('fused')})"}


def run_engine(bench: Bench, engine: str, key: str) -> dict:
    if engine == "tunekit":
        return run_tunekit(bench, key)
    if engine in ("trainer", "trainer-grouped"):
        return run_trainer(bench, key, grouped=engine == "trainer-grouped")
    if engine == "bare":
        return run_bare(bench, key)
    raise ValueError(f"unknown engine {engine!r}; engines are {ENGINES}")


def guarded(fn, *args) -> dict:
    """``fn(*args)``, or ``{"error": why}`` if it fails (the other candidates still run)."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - a benchmark reports a failing engine and goes on
        return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}


# ----- modes ----------------------------------------------------------------------------------------
def median_of(results: list[dict]) -> dict:
    ok = [r for r in results if "error" not in r]
    if not ok:
        return {"error": results[-1]["error"] if results else "not run"}
    med = {}
    for k, v in ok[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            vals = [r[k] for r in ok if isinstance(r.get(k), (int, float))]
            med[k] = statistics.median(vals)
        elif v is not None:
            med[k] = v
    return med


def warm_process(bench: Bench, run) -> None:
    """One untimed run first, so that no candidate pays the process's one-time costs (lazy
    imports, first allocations, kernel set-up) for the others."""
    print("  warm-up run (untimed)", flush=True)
    guarded(run)


def rotated(items: list, r: int) -> list:
    """``items`` starting at position ``r``: each repeat runs the engines in another order."""
    r %= len(items)
    return items[r:] + items[:r]


def repeated_runs(args, bench, run, unit: str = "samples/s", spec: str = "8.1f") -> dict:
    """``run(bench, engine, strategy)`` for every strategy and engine, ``args.repeats`` times, the
    engines in another order each time; each result printed as it comes (``unit``, ``spec``).
    Returns ``{strategy: {engine: [result, ...]}}``."""
    runs: dict = {k: {e: [] for e in args.engines} for k in args.strategies}
    for r in range(args.repeats):
        for key in args.strategies:
            for engine in rotated(args.engines, r):
                res = guarded(run, bench, engine, key)
                runs[key][engine].append(res)
                print(f"  repeat {r + 1}/{args.repeats} {key:7s} {engine:16s} "
                      + (f"{res['samples_per_s']:{spec}} {unit}" if "error" not in res else f"FAILED {res['error']}"),
                      flush=True)
    return runs


def compare_engines(args) -> dict:
    bench = Bench.make(args, args.steps * args.batch_size)
    warm_process(bench, lambda: run_bare(bench, args.strategies[0]))
    runs = repeated_runs(args, bench, run_engine)
    medians = {k: {e: median_of(v) for e, v in by.items()} for k, by in runs.items()}
    memory = peak_memory_children(args) if args.memory else {}
    for key, by in medians.items():
        for engine, m in by.items():
            m["peak_rss_mb"] = memory.get(f"{engine}:{key}")
    return {"bench": {"rows": len(bench.rows), "real_tokens": bench.real_tokens(), "steps": bench.total_steps,
                      "timed_steps": bench.total_steps - args.warmup_steps, "device": str(bench.device),
                      "amp": str(bench.amp)},
            "runs": runs, "medians": medians, "ratios": ratios(medians), "memory_children": memory}


def ratios(medians: dict) -> dict:
    out = {}
    for key, by in medians.items():
        tk_m = by.get("tunekit", {})
        for other in ("trainer", "trainer-grouped", "bare"):
            o = by.get(other)
            if "samples_per_s" not in tk_m or o is None or "samples_per_s" not in o:
                continue
            out.setdefault(key, {})[other] = {
                "samples_per_s": tk_m["samples_per_s"] / o["samples_per_s"],
                "e2e_samples_per_s": tk_m["e2e_samples_per_s"] / o["e2e_samples_per_s"]}
    return out


def child_command(args, candidate: str) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", candidate, "--steps", str(args.steps),
           "--warmup-steps", str(args.warmup_steps), "--batch-size", str(args.batch_size),
           "--max-length", str(args.max_length), "--precision", args.precision]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.lr:
        cmd += ["--lr", str(args.lr)]
    return cmd


def peak_memory_children(args) -> dict:
    """Peak RSS (MB) of a child process per candidate while it trains, plus ``baseline:full``
    (the same set-up with a model loaded and nothing trained)."""
    out = {}
    for candidate in ["baseline:full"] + [f"{e}:{k}" for k in args.strategies for e in args.engines]:
        try:
            p = subprocess.run(child_command(args, candidate), capture_output=True, text=True, timeout=1800)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("CHILD ")]
            res = json.loads(line[-1][6:]) if line else {"error": (p.stderr or p.stdout)[-400:]}
        except subprocess.TimeoutExpired:
            res = {"error": "timed out"}
        out[candidate] = res.get("peak_rss_mb") if "error" not in res else None
        shown = f"{out[candidate]:8.0f} MB" if out[candidate] else f"FAILED {res['error']}"
        print(f"  memory {candidate:24s} {shown}", flush=True)
    return out


class RssSampler(contextlib.AbstractContextManager):
    """The process's largest resident set size while the block runs (sampled every 5 ms)."""

    def __init__(self):
        import psutil
        self.proc, self.peak, self._done = psutil.Process(), 0, threading.Event()

    def __enter__(self):
        self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._done.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        return False


def child(args) -> None:
    """One candidate alone (``--memory``): its peak RSS while training; ``baseline`` trains nothing."""
    engine, key = args.child.split(":")
    bench = Bench.make(args, args.steps * args.batch_size)
    with RssSampler() as rss:
        res = {"loaded": len(load_minilm(bench.data).hf.state_dict())} if engine == "baseline" \
            else guarded(run_engine, bench, engine, key)
    res["peak_rss_mb"] = rss.peak / 2**20
    res["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB, whole process
    print("CHILD " + json.dumps(res, default=str), flush=True)


def instruments(args) -> dict:
    """tunekit with live instruments (a step callback and a step event every step, written to
    its record) against the same run with one step event at the end; both timed from the
    phase start to the last step event."""
    bench = Bench.make(args, args.steps * args.batch_size)
    warm_process(bench, lambda: time_tunekit_phase(bench, args.strategies[0], "quiet"))
    out = {}
    for key in args.strategies:
        times: dict = {"live": [], "quiet": []}
        for r in range(args.repeats):
            for mode in rotated(["live", "quiet"], r):
                res = guarded(time_tunekit_phase, bench, key, mode)
                times[mode].append(res.get("seconds"))
                print(f"  repeat {r + 1}/{args.repeats} {key:7s} {mode:6s} "
                      + (f"{res['seconds']:.3f} s" if "error" not in res else f"FAILED {res['error']}"), flush=True)
        live = [t for t in times["live"] if t]
        quiet = [t for t in times["quiet"] if t]
        ratio = statistics.median(quiet) / statistics.median(live) if live and quiet else None
        out[key] = {"live_s": live, "quiet_s": quiet, "speed_ratio": ratio}
    return out


def time_tunekit_phase(bench: Bench, key: str, mode: str) -> dict:
    model = load_minilm(bench.data)
    total = bench.total_steps
    marks = {}

    def on_step(ev):
        if ev.payload["step"] == total:
            marks["end"] = time.perf_counter()

    callbacks = {"phase_start": lambda ev: marks.setdefault("start", time.perf_counter()), "step": on_step}
    with tempfile.TemporaryDirectory() as runs_dir:
        tk.train(model, bench.data, STRATEGIES[key](), callbacks=callbacks,
                 **tunekit_config(bench, key, runs_dir=runs_dir, log_every=1 if mode == "live" else total))
    return {"seconds": marks["end"] - marks["start"]}


EPOCH_TARGETS = {"freeze": 0.45, "probe": 0.10}


def epochs_cost(args) -> dict:
    """Wall time of epoch 2 of a 2-epoch tunekit run, per strategy, relative to full fine-tuning."""
    bench = Bench.make(args, args.epoch_rows)
    per_epoch = bench.total_steps
    warm_process(bench, lambda: time_epoch_two(bench, "full", per_epoch))
    out = {}
    for key in ("full", "freeze", "probe"):
        secs = []
        for r in range(args.repeats):
            res = guarded(time_epoch_two, bench, key, per_epoch)
            secs.append(res.get("seconds"))
            print(f"  repeat {r + 1}/{args.repeats} {key:7s} epoch 2 "
                  + (f"{res['seconds']:.3f} s" if "error" not in res else f"FAILED {res['error']}"), flush=True)
        ok = [s for s in secs if s]
        out[key] = {"epoch2_s": ok, "median_s": statistics.median(ok) if ok else None}
    full = out["full"]["median_s"]
    for key, v in out.items():
        v["vs_full"] = v["median_s"] / full if full and v["median_s"] else None
        v["target"] = EPOCH_TARGETS.get(key)
    return {"rows": len(bench.rows), "steps_per_epoch": per_epoch, "strategies": out}


def time_epoch_two(bench: Bench, key: str, per_epoch: int) -> dict:
    """From the end of epoch 1 (after its evaluation) to the last step event of epoch 2."""
    model = load_minilm(bench.data)
    marks = {}

    def on_step(ev):
        if ev.payload["step"] == 2 * per_epoch:
            marks["end"] = time.perf_counter()

    callbacks = {"epoch_end": lambda ev: marks.setdefault("start", time.perf_counter()), "step": on_step}
    with tempfile.TemporaryDirectory() as runs_dir:
        tk.train(model, bench.data, STRATEGIES[key](), callbacks=callbacks,
                 **tunekit_config(bench, key, runs_dir=runs_dir, epochs=2, train_size=len(bench.rows)))
    return {"seconds": marks["end"] - marks["start"]}


# ----- printing -------------------------------------------------------------------------------------
def fmt(v, spec: str = ".1f", na: str = "n/a") -> str:
    return na if v is None else format(v, spec)


def print_engines(report: dict, args) -> None:
    b = report["bench"]
    print(f"\n{b['rows']} rows ({b['real_tokens']} real tokens), {b['steps']} steps of {args.batch_size}, "
          f"{b['timed_steps']} timed, max length {args.max_length}, device {b['device']}, autocast {b['amp']}, "
          f"{torch.get_num_threads()} threads; medians of {args.repeats}")
    head = f"{'strategy':8s} {'engine':16s} {'samples/s':>9s} {'real tok/s':>10s} {'pad tok/s':>10s} {'pad %':>6s} " \
           f"{'e2e s/s':>8s} {'peak MB':>8s} {'trainable':>10s}"
    print(head + "\n" + "-" * len(head))
    for key, by in report["medians"].items():
        for engine, m in by.items():
            if "error" in m:
                print(f"{key:8s} {engine:16s} FAILED: {m['error']}")
                continue
            pad = None if m.get("pad_fraction") is None else 100 * m["pad_fraction"]
            print(f"{key:8s} {engine:16s} {m['samples_per_s']:9.1f} {fmt(m.get('real_tokens_per_s'), '.0f'):>10s} "
                  f"{fmt(m.get('padded_tokens_per_s'), '.0f'):>10s} {fmt(pad, '.1f'):>6s} "
                  f"{m['e2e_samples_per_s']:8.1f} {fmt(m.get('peak_rss_mb'), '.0f'):>8s} {m.get('trainable', 0):>10,}")
    if report["ratios"]:
        print("\ntunekit / other, steady samples/s (end to end in brackets)")
        for key, by in report["ratios"].items():
            print(f"  {key:8s} " + "   ".join(f"/{o}: {r['samples_per_s']:.2f}x ({r['e2e_samples_per_s']:.2f}x)"
                                             for o, r in by.items()))
    for key, by in report["medians"].items():
        m = by.get("tunekit", {})
        if m.get("tunekit_memory") or m.get("dropped_config"):
            print(f"\ntunekit {key}: memory {m.get('tunekit_memory') or m.get('tunekit_peak_memory_mb')}"
                  + (f"; TrainConfig lacks {m['dropped_config']}" if m.get("dropped_config") else ""))
    if report["memory_children"].get("baseline:full"):
        print(f"\npeak MB: largest RSS of a child process running one candidate alone, while it trains; "
              f"the same child with the model loaded and nothing trained: "
              f"{report['memory_children']['baseline:full']:.0f} MB")
    optims = {e: m.get("optim") for by in report["medians"].values() for e, m in by.items() if m.get("optim")}
    print("optimizers: " + ", ".join(f"{e}={o}" for e, o in optims.items()) + "; tunekit: tunekit.runtime.adamw")
    print("note: tunekit's head reads mean-pooled token states; the Trainer / bare runs use the stock "
          "BertForSequenceClassification forward (pooler [CLS] -> classifier), same weights and head.")
    print("note: tunekit's probe trains the head on cached features; the others run the frozen backbone "
          "each step (e2e includes tunekit's feature pass).")


def print_instruments(report: dict) -> None:
    print("\ntunekit with live step events (log_every=1 + a callback) vs one event at the end")
    for key, v in report.items():
        ok = v["speed_ratio"] is not None and v["speed_ratio"] >= 0.95
        print(f"  {key:8s} live {fmt(statistics.median(v['live_s']) if v['live_s'] else None, '.3f')} s, "
              f"quiet {fmt(statistics.median(v['quiet_s']) if v['quiet_s'] else None, '.3f')} s, "
              f"speed ratio {fmt(v['speed_ratio'], '.3f')}x (target >= 0.95: {'met' if ok else 'MISSED'})")


def print_epochs(report: dict) -> None:
    print(f"\nepoch 2 of 2 on {report['rows']} rows ({report['steps_per_epoch']} steps/epoch), tunekit")
    for key, v in report["strategies"].items():
        target = v["target"]
        verdict = "" if target is None or v["vs_full"] is None else \
            f"  target <= {target}x: {'met' if v['vs_full'] <= target else 'MISSED'}"
        print(f"  {key:8s} {fmt(v['median_s'], '.3f')} s  {fmt(v['vs_full'], '.3f')}x of full{verdict}")


# ----- entry point ----------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategies", default="full,lora,freeze,probe")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--steps", type=int, default=40, help="training steps per run, warm-up included")
    p.add_argument("--warmup-steps", type=int, default=5, help="steps left out of the timing (>= 1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--precision", default="fp32", choices=("fp32", "auto", "bf16"),
                   help="auto: what tunekit picks for the device, for every engine")
    p.add_argument("--lr", type=float, default=None, help="default: each strategy's tunekit default")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--memory", action="store_true", help="also the peak RSS of each candidate run alone")
    p.add_argument("--instruments", action="store_true", help="cost of tunekit's live step events")
    p.add_argument("--epochs-cost", action="store_true", help="epoch 2 of freeze / probe vs full")
    p.add_argument("--epoch-rows", type=int, default=320, help="rows of the --epochs-cost runs")
    p.add_argument("--json", default=None, help="write every number here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.strategies = [s for s in args.strategies.split(",") if s]
    args.engines = [e for e in args.engines.split(",") if e]
    bad = [s for s in args.strategies if s not in STRATEGIES] + [e for e in args.engines if e not in ENGINES]
    if bad:
        p.error(f"unknown {bad}; strategies: {list(STRATEGIES)}, engines: {list(ENGINES)}")
    if not 1 <= args.warmup_steps < args.steps:
        p.error("--warmup-steps must be at least 1 and below --steps")
    return args


def environment() -> dict:
    import peft
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "tunekit": tk.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average": os.getloadavg()[0]}


def main(argv=None) -> None:
    args = parse_args(argv)
    warnings.simplefilter("ignore")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args)
    report = {"args": {k: v for k, v in vars(args).items() if k != "child"}, "environment": environment()}
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} on {os.cpu_count()} cores: something else is running, "
              "the timings will be noisy", flush=True)
    if args.instruments:
        report["instruments"] = instruments(args)
        print_instruments(report["instruments"])
    if args.epochs_cost:
        report["epochs_cost"] = epochs_cost(args)
        print_epochs(report["epochs_cost"])
    if not (args.instruments or args.epochs_cost):
        report["engines"] = compare_engines(args)
        print_engines(report["engines"], args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
