"""One training loop for every strategy, with named events and clean cancellation.

    run = tk.train(model, data, strategy=tk.LoRA(rank=8), epochs=1)

    trainer = tk.Trainer(model, data, tk.Full(), lr=5e-5)
    trainer.add_callback("eval", lambda ev: print(ev.payload["val_accuracy"]))
    threading.Thread(target=trainer.run).start()
    trainer.stop()          # from any thread: ends cleanly at the next step

Events (``Event.name``) and their payloads:

* ``train_start``: run, strategy, params (trainable / total / percent / by_group), device,
  total_steps, train_size, eval_size
* ``phase_start``: phase, strategy, params, steps, lr
* ``step``: step, epoch, loss, lr, samples, elapsed_s, samples_per_s
* ``eval``: step, epoch, val_loss, val_accuracy, val_macro_f1, elapsed_s
* ``epoch_end``: epoch, step
* ``train_end``: status, reason, and the summary

A callback may raise :class:`StopTraining` to end the run (recorded as stopped).
A non-finite loss ends the run as failed at that step; so does any other error.
Either way the record on disk keeps everything up to that point.
"""
from __future__ import annotations

import threading
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tunekit import __version__
from tunekit.batches import EncodedSplit
from tunekit.config import ConfigError, TrainConfig
from tunekit.data import load as load_data
from tunekit.models import TextClassifier, canonical_name, load_model
from tunekit.runs import Run, RunWriter
from tunekit.runtime import PeakMemory, adamw, autocast_dtype, lr_factor, macro_f1, pick_device, versions
from tunekit.strategies import Strategy, get_strategy

EVENTS = ("train_start", "phase_start", "step", "eval", "epoch_end", "train_end")


class StopTraining(Exception):
    """Raise from a callback (or call ``Trainer.stop()``) to end a run cleanly."""


class TrainingError(RuntimeError):
    """A run failed (non-finite loss, out of memory, ...). ``.run`` is its partial record."""

    def __init__(self, message: str, run: Optional[Run] = None):
        super().__init__(message)
        self.run = run


@dataclass
class Event:
    name: str
    payload: dict
    trainer: "Trainer" = field(repr=False)


def _subset(n: int, size: Optional[int], seed: int) -> Optional[list[int]]:
    if size is None or size >= n:
        return None
    return sorted(np.random.default_rng(seed).permutation(n)[:size].tolist())


class Trainer:
    """Trains one model with one strategy and writes its run record.

    Args:
        model: a :class:`TextClassifier` (trained in place; load a fresh one per run).
        data: a :class:`TextDataset` or anything :func:`tunekit.data.load` accepts.
        strategy: a Strategy, a registry name, or a dict; default ``Full()``.
        config: a :class:`TrainConfig`; keyword ``overrides`` change single fields.
        callbacks: ``{event name: fn or [fn, ...]}``; each fn gets an :class:`Event`.
    """

    def __init__(self, model: TextClassifier, data: Any, strategy: Any = None,
                 config: Optional[TrainConfig] = None, callbacks: Optional[dict] = None, **overrides):
        if not isinstance(model, TextClassifier):
            raise ConfigError(f"model must be a TextClassifier from tk.load_model() (got {type(model).__name__})")
        self.model = model
        self.data = load_data(data)
        self.strategy = get_strategy(strategy if strategy is not None else "full")
        self.config = (config or TrainConfig()).replace(**overrides) if overrides else (config or TrainConfig())
        if model.num_labels != self.data.num_labels:
            raise ConfigError(f"the model has {model.num_labels} labels but the data has {self.data.num_labels} "
                              f"({self.data.label_names}); load it with "
                              f"tk.load_model(..., label_names=data.label_names)")
        self.callbacks: dict[str, list[Callable]] = defaultdict(list)
        for ev, fns in (callbacks or {}).items():
            for fn in (fns if isinstance(fns, (list, tuple)) else [fns]):
                self.add_callback(ev, fn)
        self._stop = threading.Event()
        self.run_record: Optional[Run] = None
        self.writer: Optional[RunWriter] = None

    # ----- control -----------------------------------------------------------------------------
    def add_callback(self, event: str, fn: Callable[[Event], Any]) -> None:
        if event not in EVENTS:
            raise ConfigError(f"unknown event {event!r}; events are {list(EVENTS)}")
        self.callbacks[event].append(fn)

    def stop(self) -> None:
        """Ask the run to stop; it ends cleanly at the start of the next step. Thread-safe."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _emit(self, name: str, payload: dict) -> None:
        if self.writer is not None:
            self.writer.log(name, payload)
        for fn in self.callbacks.get(name, ()):
            fn(Event(name, payload, self))

    # ----- the run -----------------------------------------------------------------------------
    def run(self) -> Run:
        """Train, write the record, return the :class:`Run`. Raises :class:`TrainingError` on failure."""
        cfg, model, data = self.config, self.model, self.data
        device = pick_device(cfg.device)
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        phases = self.strategy.phases()
        for ph in phases:  # validate everything before anything is written or trained
            ph.strategy.count(model)

        tok = model.tokenizer
        train_df, val_df = data.train, data.validation
        ix = _subset(len(train_df), cfg.train_size, cfg.seed)
        train_df = train_df if ix is None else train_df.iloc[ix]
        ix = _subset(len(val_df), cfg.eval_size, cfg.seed + 1)
        val_df = val_df if ix is None else val_df.iloc[ix]
        if len(val_df) == 0:
            raise ConfigError(f"the validation split of {data.name!r} is empty; make it with validation_size > 0")
        train_enc = EncodedSplit.encode(tok, train_df["text"], train_df["label"], cfg.max_length)
        val_enc = EncodedSplit.encode(tok, val_df["text"], val_df["label"], cfg.max_length)

        steps_per_epoch = train_enc.num_batches(cfg.batch_size)
        phase_epochs = [ph.epochs or cfg.epochs for ph in phases]
        total_steps = steps_per_epoch * sum(phase_epochs)
        label = self.strategy.label
        self.writer = writer = RunWriter(cfg.runs_dir, cfg.name or f"{label}-{time.strftime('%Y%m%d-%H%M%S')}", {
            "tunekit_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "model": model.describe(), "data": {**data.describe(), "train_used": len(train_enc),
                                                "validation_used": len(val_enc)},
            "strategy": self.strategy.describe(), "strategy_label": label,
            "phases": [{"strategy": ph.strategy.describe(), "epochs": e, "lr": ph.lr}
                       for ph, e in zip(phases, phase_epochs)],
            "train": cfg.to_dict(), "device": str(device), "versions": versions(),
            "params": self.strategy.count(model), "trained_before": list(model.trained_by),
        })
        run = self.run_record = Run(writer.path, model=model)
        model.to(device)
        mem = PeakMemory(device)
        amp = autocast_dtype(device, cfg.precision)
        state = {"step": 0, "samples": 0, "t0": time.perf_counter(), "last_eval": None, "train_time": 0.0}
        saved_initial: dict[str, torch.Tensor] = {}
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=total_steps, desc=f"{label}", unit="step", leave=True)
        status, reason, error, val_in = "completed", None, None, None
        try:
            for p_index, (phase, epochs) in enumerate(zip(phases, phase_epochs)):
                strat = phase.strategy
                strat.prepare(model)
                model.module.to(device)
                params = model.parameter_counts()
                self._keep_initial(saved_initial)
                self._current = strat
                lr = phase.lr or cfg.lr or strat.default_lr
                if cfg.progress:  # like peft's print_trainable_parameters, before anything trains
                    print(f"{label}{f' phase {p_index + 1}' if len(phases) > 1 else ''}: trainable params "
                          f"{params['trainable']:,} / {params['total']:,} ({params['percent']:.4g}%)")
                if p_index == 0:
                    writer.update(params=params)
                    self._emit("train_start", {"run": writer.name, "strategy": self.strategy.describe(),
                                               "params": params, "device": str(device),
                                               "total_steps": total_steps, "train_size": len(train_enc),
                                               "eval_size": len(val_enc)})
                self._emit("phase_start", {"phase": p_index, "strategy": strat.describe(), "params": params,
                                           "steps": steps_per_epoch * epochs, "lr": lr})
                t = time.perf_counter()  # the probe's one feature pass is part of its training cost
                train_in = strat.inputs(model, train_enc, cfg.eval_batch_size)
                state["train_time"] += time.perf_counter() - t
                val_in = strat.inputs(model, val_enc, cfg.eval_batch_size)
                self._phase(strat, train_in, val_in, epochs, lr, device, amp, gen, state, mem, bar)
        except StopTraining:
            status, reason = "stopped", f"stopped by the user at step {state['step']}"
        except KeyboardInterrupt as e:  # Ctrl-C / interrupt the kernel: record, then let it propagate
            status, reason, error = "stopped", f"interrupted at step {state['step']}", e
        except BaseException as e:  # noqa: BLE001 - record every failure, then re-raise
            status = "failed"
            reason = str(e) if isinstance(e, TrainingError) else f"{type(e).__name__}: {e}"
            if isinstance(e, torch.cuda.OutOfMemoryError):
                reason = (f"out of GPU memory at step {state['step']}: lower batch_size or max_length, "
                          f"or use LoRA / freeze more layers ({e})")
            error = e
        finally:
            if bar is not None:
                bar.close()
        summary = self._finish(status, reason, state, mem, saved_initial, val_in if status != "failed" else None,
                               amp)
        self._emit("train_end", {"status": status, "reason": reason, **summary})
        writer.finish(status, reason, **summary)
        model.trained_by.append(writer.name)
        if isinstance(error, KeyboardInterrupt):
            raise error
        if status == "failed":
            if isinstance(error, TrainingError):
                error.run = run
                raise error
            raise TrainingError(f"run {writer.name!r} failed: {reason}", run) from error
        return run

    def _keep_initial(self, saved: dict) -> None:
        """Save starting values of trainable tensors the pretrained checkpoint cannot give back."""
        model = self.model
        pristine = not model.trained_by
        new = set(model.new_parameters)
        fresh = {}
        for n, p in model.module.named_parameters():
            if not p.requires_grad or n in saved:
                continue
            if not pristine or "lora_" in n or canonical_name(n) in new:
                fresh[n] = p.detach().to("cpu", copy=True)
        if fresh:
            saved.update(fresh)
            if self.config.save_weights:
                self.writer.save_tensors("initial.safetensors", saved)

    def _phase(self, strat: Strategy, train_in, val_in, epochs: int, lr: float, device, amp, gen, state,
               mem: PeakMemory, bar) -> None:
        cfg, model = self.config, self.model
        groups = strat.param_groups(model, lr, cfg.weight_decay)
        opt = adamw(groups, lr, device)
        steps = train_in.num_batches(cfg.batch_size) * epochs
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, steps, cfg.warmup, cfg.schedule))
        per_epoch = train_in.num_batches(cfg.batch_size)
        eval_at = {round(per_epoch * (k + 1) / cfg.evals_per_epoch) for k in range(cfg.evals_per_epoch)}
        trainable = [p for g in groups for p in g["params"]]
        for epoch in range(epochs):
            model.module.train()
            for i, batch in enumerate(train_in.batches(cfg.batch_size, shuffle=True, generator=gen, device=device)):
                if self._stop.is_set():
                    raise StopTraining()
                t = time.perf_counter()
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    logits = strat.forward(model, batch)
                loss = F.cross_entropy(logits.float(), batch["labels"])
                if not torch.isfinite(loss):
                    raise TrainingError(f"the loss became {loss.item()} at step {state['step'] + 1}; "
                                        f"try a lower learning rate (lr={lr:g})")
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
                opt.step()
                step_lr = opt.param_groups[0]["lr"]
                sched.step()
                opt.zero_grad(set_to_none=True)
                state["train_time"] += time.perf_counter() - t
                state["step"] += 1
                state["samples"] += len(batch["labels"])
                mem.sample()
                loss_v = loss.item()
                self._emit("step", {"step": state["step"], "epoch": epoch + (i + 1) / per_epoch,
                                    "loss": loss_v, "lr": step_lr, "samples": state["samples"],
                                    "elapsed_s": round(time.perf_counter() - state["t0"], 3),
                                    "samples_per_s": state["samples"] / max(state["train_time"], 1e-9)})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_v:.3f}", refresh=False)
                if i + 1 in eval_at:
                    ev = self._evaluate(strat, val_in, device, amp, state, epoch + (i + 1) / per_epoch)
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss_v:.3f}", acc=f"{ev['val_accuracy']:.3f}")
                    model.module.train()
            self._emit("epoch_end", {"epoch": epoch + 1, "step": state["step"]})

    @torch.no_grad()
    def _evaluate(self, strat: Strategy, val_in, device, amp, state, epoch: float) -> dict:
        model, cfg = self.model, self.config
        model.module.eval()
        losses, preds, labels = [], [], []
        for batch in val_in.batches(cfg.eval_batch_size, device=device):
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = strat.forward(model, batch).float()
            losses.append(F.cross_entropy(logits, batch["labels"], reduction="sum").item())
            preds.append(logits.argmax(-1).cpu())
            labels.append(batch["labels"].cpu())
        p, y = torch.cat(preds).numpy(), torch.cat(labels).numpy()
        ev = {"step": state["step"], "epoch": epoch, "val_loss": sum(losses) / len(y),
              "val_accuracy": float((p == y).mean()), "val_macro_f1": macro_f1(p, y, model.num_labels),
              "elapsed_s": round(time.perf_counter() - state["t0"], 3)}
        state["last_eval"] = ev
        self._emit("eval", ev)
        return ev

    def _finish(self, status, reason, state, mem, saved_initial, val_in, amp) -> dict:
        model, cfg, writer = self.model, self.config, self.writer
        last = state["last_eval"]
        if status == "stopped" and val_in is not None and state["step"] > 0 and \
                (last is None or last["step"] != state["step"]):
            try:
                last = self._evaluate(self._current, val_in, model.device, amp, state, float("nan"))
            except Exception as e:  # noqa: BLE001 - a stopped run must still be recorded
                warnings.warn(f"final evaluation of the stopped run failed: {e}")
        mem.sample()
        summary = {"steps": state["step"], "samples": state["samples"],
                   "wall_time_s": round(time.perf_counter() - state["t0"], 3),
                   "train_time_s": round(state["train_time"], 3),
                   "samples_per_s": round(state["samples"] / state["train_time"], 2) if state["train_time"] else None,
                   "peak_memory_mb": mem.peak_mb, "memory_kind": mem.kind, "pooling": model.pooling}
        if last is not None:
            summary.update({k: last[k] for k in ("val_loss", "val_accuracy", "val_macro_f1")})
        if cfg.save_weights and status != "failed" and state["step"] > 0:
            if model.peft_config is not None:
                writer.save_adapter(model.module)
                summary["weights"] = "adapter"
            else:
                params = dict(model.module.named_parameters())
                # trainable now, or trained in an earlier phase (LP-FT's head)
                trained = {canonical_name(n): p for n, p in params.items() if p.requires_grad or n in saved_initial}
                writer.save_tensors("weights.safetensors", trained)
                summary["weights"] = "weights.safetensors"
        return summary



def train(model: TextClassifier, data: Any, strategy: Any = None, config: Optional[TrainConfig] = None, *,
          callbacks: Optional[dict] = None, **overrides) -> Run:
    """Train ``model`` on ``data`` with ``strategy`` and return the :class:`Run`.

    Keyword overrides set :class:`TrainConfig` fields, e.g. ``epochs=2, lr=1e-4``.
    The model is trained in place (``run.model`` is it).
    """
    return Trainer(model, data, strategy, config, callbacks, **overrides).run()


def compare(strategies: Sequence[Any], data: Any = "rotten_tomatoes", model: str = "minilm",
            config: Optional[TrainConfig] = None, *, callbacks: Optional[dict] = None,
            **overrides) -> list[Run]:
    """Train each strategy on a fresh copy of the same model, with the same data and seed.

    A strategy that fails is recorded (status "failed") and reported with a warning;
    the others still run.
    """
    if isinstance(model, TextClassifier):
        raise ConfigError("compare loads a fresh model for every strategy: pass the model's name or path "
                          f"(e.g. {model.source!r}), not a loaded model")
    if not strategies:
        raise ConfigError("compare needs at least one strategy")
    data = load_data(data)
    config = (config or TrainConfig()).replace(**overrides) if overrides else (config or TrainConfig())
    strategies = [get_strategy(s) for s in strategies]
    m = load_model(model, label_names=data.label_names, seed=config.seed)
    for strategy in strategies:  # every strategy checked against the model before any trains
        for phase in strategy.phases():
            phase.strategy.count(m)
    runs = []
    for i, strategy in enumerate(strategies):
        if i > 0:
            m = load_model(model, label_names=data.label_names, seed=config.seed)
        try:
            runs.append(Trainer(m, data, strategy, config, callbacks).run())
        except TrainingError as e:
            warnings.warn(f"{strategy.label} failed: {e}")
            if e.run is not None:
                runs.append(e.run)
    return runs
