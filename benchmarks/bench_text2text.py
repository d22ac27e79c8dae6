"""tunekit's text-to-text tasks against Hugging Face's Trainer on the same rows.

    .venv/bin/python benchmarks/bench_text2text.py                    # sft and seq2seq, LoRA and full
    .venv/bin/python benchmarks/bench_text2text.py --tasks sft --strategies lora --steps 8 --repeats 1

What is measured (issue 25). Both tasks train on the built-in BBC headline pairs (article body ->
headline), the first ``steps * batch_size`` pairs of a seeded permutation of the train split:

* ``sft``: the built-in SmolLM2-135M decoder, ``task="sft"`` with the instruction "Write a headline
  for this BBC News article.". The reference is what TRL's SFTTrainer does for prompt/completion
  pairs, written with the Trainer alone: ``transformers.Trainer`` on ``AutoModelForCausalLM`` with
  labels -100 over the prompt (the loss on the response only) and ``DataCollatorForSeq2Seq``
  padding the labels with -100.
* ``seq2seq``: an encoder-decoder of T5-small's shape (6 + 6 blocks, width 512, random weights:
  no pretrained one can be installed here; speed does not depend on what the weights know),
  ``task="seq2seq"``, against ``transformers.Seq2SeqTrainer`` with ``DataCollatorForSeq2Seq``
  (which makes the decoder's inputs from the labels, as the model would).

Every engine gets exactly tunekit's token ids (``model.task.encode_frame``: the same template,
instruction and cuts at ``--max-length``), the same batch size, learning rate (the strategy's
tunekit default), constant schedule, no warm-up, AdamW with weight decay 0.01, gradient clipping
at 1.0 and the same trainable set (LoRA through ``peft.get_peft_model`` with the LoraConfig
tunekit builds). ``trainer`` samples at random (the Trainer's default); ``trainer-grouped`` groups
by length as tunekit does. Timing, warm-up steps and medians are bench_engine.py's: the clock
runs from the end of the last warm-up step to the end of the last step; tunekit's evaluation
(which also writes headlines) comes after it and is not timed. ``tunekit / X`` above 1 means
tunekit trained more pairs per second.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import (  # noqa: E402  (the same clock, medians and environment as the engine benchmark)
    GRAD_CLIP,
    SEED,
    WEIGHT_DECAY,
    StepClock,
    TokenCounter,
    count_trainable,
    environment,
    guarded,
    median_of,
    repeated_runs,
    trainer_arguments,
)

import tunekit as tk  # noqa: E402

ENGINES = ("tunekit", "trainer", "trainer-grouped")
STRATEGIES = {"lora": lambda: tk.LoRA(rank=8), "full": lambda: tk.Full()}
INSTRUCTION = "Write a headline for this BBC News article."
GENERATION = {"examples": 4, "max_new_tokens": 8}


@dataclasses.dataclass
class Bench:
    """What every engine of one task shares: the model's source, the rows and their tokens."""

    args: argparse.Namespace
    task: str
    model_source: str
    data: "tk.TextDataset"
    rows: list[dict]  # the Trainer's rows: input_ids and labels (-100 where no loss is taken)
    pad_id: int

    @property
    def device(self) -> torch.device:
        from tunekit.runtime import pick_device
        return pick_device(None)

    @property
    def amp(self) -> Optional[torch.dtype]:
        from tunekit.runtime import autocast_dtype
        return autocast_dtype(self.device, self.args.precision)

    @property
    def total_steps(self) -> int:
        return -(-len(self.rows) // self.args.batch_size)

    def load(self):
        return tk.load_model(self.model_source, task=self.task, instruction=INSTRUCTION if self.task == "sft" else None,
                             generation=GENERATION, seed=SEED)

    @classmethod
    def make(cls, args, task: str, model_source: str) -> "Bench":
        data = tk.data.bbc_headlines()
        order = np.random.default_rng(SEED).permutation(len(data.train))[:args.steps * args.batch_size]
        data = dataclasses.replace(data, train=data.train.iloc[order].reset_index(drop=True))
        bench = cls(args, task, model_source, data, [], 0)
        model = bench.load()
        split = model.task.encode_frame(model.tokenizer, data.train, args.max_length)
        for ids, extra in zip(split.input_ids, split.extras):
            if task == "sft":  # the loss on the response only: -100 over the prompt
                n = extra["prompt_len"]
                bench.rows.append({"input_ids": ids, "labels": [-100] * n + ids[n:]})
            else:
                bench.rows.append({"input_ids": ids, "labels": extra["target_ids"]})
        bench.pad_id = model.tokenizer.pad_token_id
        return bench


def learning_rate(key: str) -> float:
    return type(STRATEGIES[key]()).default_lr


def run_tunekit(bench: Bench, key: str) -> dict:
    model = bench.load()
    a = bench.args
    with TokenCounter(model.hf, bench.pad_id) as counter, tempfile.TemporaryDirectory() as runs_dir:
        clock = StepClock(a.warmup_steps, bench.total_steps, counter)
        callbacks = {"train_start": lambda ev: clock.begin(),
                     "step": lambda ev: clock.step(ev.payload["step"], ev.payload["samples"], ev.payload.get("tokens"))}
        run = tk.train(model, bench.data, STRATEGIES[key](), callbacks=callbacks, batch_size=a.batch_size,
                       max_length=a.max_length, train_size=len(bench.rows), epochs=1, schedule="constant", warmup=0.0,
                       lr=learning_rate(key), weight_decay=WEIGHT_DECAY, grad_clip=GRAD_CLIP, evals_per_epoch=1,
                       eval_size=GENERATION["examples"], progress=False, save_weights=False, precision=a.precision,
                       group_by_length=True, log_every=1, seed=SEED, runs_dir=runs_dir)
        trainable = run.config["params"]["trainable"]
    return {**clock.result(), "trainable": trainable}


def run_trainer(bench: Bench, key: str, grouped: bool) -> dict:
    from transformers import (
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            clock.begin()

        def on_step_end(self, args, state, control, **kw):
            clock.step(state.global_step, min(state.global_step * bench.args.batch_size, len(bench.rows)))

    model = bench.load()
    plan = STRATEGIES[key]().plan(model)
    if plan.adapter is not None:
        from peft import get_peft_model
        module = get_peft_model(model.hf, plan.adapter)
    else:
        model.set_trainable(plan.train)
        module = model.hf
    tok = model.tokenizer
    collator = DataCollatorForSeq2Seq(tok, model=module if bench.task == "seq2seq" else None, label_pad_token_id=-100)
    trainer_cls, args_cls = ((Seq2SeqTrainer, Seq2SeqTrainingArguments) if bench.task == "seq2seq"
                             else (Trainer, TrainingArguments))
    with TokenCounter(model.hf, bench.pad_id) as counter, tempfile.TemporaryDirectory() as out_dir:
        clock = StepClock(bench.args.warmup_steps, bench.total_steps, counter)
        trainer = trainer_cls(model=module, args=trainer_arguments(bench, key, grouped, out_dir, args_cls),
                              train_dataset=bench.rows, data_collator=collator, processing_class=tok,
                              callbacks=[Clock()])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return {**clock.result(), "trainable": count_trainable(module)}


def run_engine(bench: Bench, engine: str, key: str) -> dict:
    if engine == "tunekit":
        return run_tunekit(bench, key)
    return run_trainer(bench, key, grouped=engine == "trainer-grouped")


def seq2seq_model(directory: Path) -> str:
    """A random encoder-decoder of T5-small's shape (6 + 6 blocks, width 512), written once."""
    if not (directory / "config.json").exists():
        tk.make_tiny("t5", directory, layers=6, hidden=512, seed=SEED)
    return str(directory)


def compare(args, task: str, model_source: str) -> dict:
    bench = Bench.make(args, task, model_source)
    print(f"{task}: {len(bench.rows)} pairs, {bench.total_steps} steps of {args.batch_size}, "
          f"{sum(len(r['input_ids']) for r in bench.rows) / len(bench.rows):.0f} source tokens per pair on average",
          flush=True)
    print("  warm-up run (untimed)", flush=True)
    guarded(run_trainer, bench, args.strategies[0], False)
    runs = repeated_runs(args, bench, run_engine, unit="pairs/s", spec="7.2f")
    medians = {k: {e: median_of(v) for e, v in by.items()} for k, by in runs.items()}
    ratios = {k: {e: by["tunekit"]["samples_per_s"] / by[e]["samples_per_s"] for e in by
                  if e != "tunekit" and "samples_per_s" in by[e] and "samples_per_s" in by.get("tunekit", {})}
              for k, by in medians.items()}
    return {"rows": len(bench.rows), "steps": bench.total_steps, "timed_steps": bench.total_steps - args.warmup_steps,
            "runs": runs, "medians": medians, "ratios": ratios}


def print_task(task: str, report: dict) -> None:
    print(f"\n{task}: median pairs/s over the timed steps ({report['timed_steps']} of {report['steps']})")
    print(f"  {'strategy':8s} {'engine':16s} {'pairs/s':>8s} {'pad %':>6s} {'trainable':>11s}  tunekit / it")
    for key, by in report["medians"].items():
        for engine, m in by.items():
            if "error" in m:
                print(f"  {key:8s} {engine:16s} FAILED {m['error']}")
                continue
            ratio = report["ratios"].get(key, {}).get(engine)
            pad = m.get("pad_fraction")
            pad = f"{100 * pad:6.1f}" if isinstance(pad, float) and pad == pad else "   n/a"
            print(f"  {key:8s} {engine:16s} {m['samples_per_s']:8.2f} {pad} "
                  f"{int(m.get('trainable', 0)):11,d}  {'' if ratio is None else f'{ratio:.2f}x'}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="sft,seq2seq")
    p.add_argument("--strategies", default="lora,full")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--steps", type=int, default=10, help="training steps per run, warm-up included")
    p.add_argument("--warmup-steps", type=int, default=2, help="steps left out of the timing (>= 1)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--precision", default="fp32", choices=("fp32", "auto", "bf16"))
    p.add_argument("--model-dir", default=os.path.join(tempfile.gettempdir(), "tunekit-bench-t5small"),
                   help="where the random T5-small-shaped model is written once")
    p.add_argument("--json", default=None, help="write every number here")
    args = p.parse_args(argv)
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.strategies = [s for s in args.strategies.split(",") if s]
    args.engines = [e for e in args.engines.split(",") if e]
    bad = ([t for t in args.tasks if t not in ("sft", "seq2seq")] + [s for s in args.strategies if s not in STRATEGIES]
           + [e for e in args.engines if e not in ENGINES])
    if bad:
        p.error(f"unknown {bad}; tasks: sft, seq2seq; strategies: {list(STRATEGIES)}; engines: {list(ENGINES)}")
    if "tunekit" not in args.engines:
        p.error("--engines must include tunekit (the ratios are tunekit's over each other engine)")
    if not 1 <= args.warmup_steps < args.steps:
        p.error("--warmup-steps must be at least 1 and below --steps")
    args.lr, args.threads = None, None  # what bench_engine's trainer_arguments reads (set per strategy)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    warnings.simplefilter("ignore")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    report = {"args": vars(args), "environment": environment(), "tasks": {}}
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} on {os.cpu_count()} cores: the timings will be noisy", flush=True)
    sources = {"sft": lambda: "smollm2", "seq2seq": lambda: seq2seq_model(Path(args.model_dir))}
    for task in args.tasks:
        report["tasks"][task] = compare(args, task, sources[task]())
        print_task(task, report["tasks"][task])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
