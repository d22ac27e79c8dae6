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
* ``eval``: step, epoch, the task's metrics with a ``val_`` prefix (classification:
  val_loss, val_accuracy, val_macro_f1; causal LM: val_loss, val_perplexity), elapsed_s
* ``epoch_end``: epoch, step
* ``train_end``: status, reason, and the summary

Each step calls the task module once, ``out = forward(batch)``, and back-propagates
``out.loss``: wrapping the module (``Trainer(..., wrap=DDP)``) wraps everything.

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

import torch
from torch import nn

from tunekit import __version__
from tunekit.adapters import ADAPTER
from tunekit.batches import cached_features
from tunekit.config import ConfigError, TrainConfig
from tunekit.data import load as load_data
from tunekit.evaluation import evaluate_batches, subset
from tunekit.metrics import primary
from tunekit.models import Model, load_for
from tunekit.runs import Run
from tunekit.runtime import PeakMemory, adamw, autocast_dtype, lr_factor, pick_device, versions
from tunekit.strategies import Plan, Strategy, get_strategy
from tunekit.writer import RunWriter

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


class Trainer:
    """Trains one model with one strategy and writes its run record.

    Args:
        model: a :class:`~tunekit.models.Model` (trained in place; load a fresh one per run).
        data: a :class:`TextDataset` or anything :func:`tunekit.data.load` accepts (a causal
            LM trains on its texts; the labels are ignored).
        strategy: a Strategy, a registry name, or a dict; default ``Full()``.
        config: a :class:`TrainConfig`; keyword ``overrides`` change single fields.
        callbacks: ``{event name: fn or [fn, ...]}``; each fn gets an :class:`Event`.
        wrap: called once per phase on the task module, after the strategy's plan is applied
            (e.g. ``lambda m: DistributedDataParallel(m)``); every step goes through what it
            returns. Run records are written by this process as usual.
    """

    def __init__(self, model: Model, data: Any, strategy: Any = None,
                 config: Optional[TrainConfig] = None, callbacks: Optional[dict] = None,
                 wrap: Optional[Callable[[nn.Module], nn.Module]] = None, **overrides):
        if not isinstance(model, Model):
            raise ConfigError(f"model must be a model from tk.load_model() (got {type(model).__name__})")
        self.model = model
        self.data = load_data(data)
        self.strategy = get_strategy(strategy if strategy is not None else "full")
        self.config = (config or TrainConfig()).replace(**overrides) if overrides else (config or TrainConfig())
        self.wrap = wrap
        if model.task.name == "classification" and model.num_labels != self.data.num_labels:
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
        plans = [ph.strategy.plan(model) for ph in phases]  # validate before anything is written or trained
        params_before = self.strategy.count(model)

        tok, task = model.tokenizer, model.task
        train_df, val_df = data.train, data.validation
        ix = subset(len(train_df), cfg.train_size, cfg.seed)
        train_df = train_df if ix is None else train_df.iloc[ix]
        ix = subset(len(val_df), cfg.eval_size, cfg.seed + 1)
        val_df = val_df if ix is None else val_df.iloc[ix]
        if len(val_df) == 0:
            raise ConfigError(f"the validation split of {data.name!r} is empty; make it with validation_size > 0")
        train_enc = task.encode(tok, train_df["text"], train_df["label"], cfg.max_length)
        val_enc = task.encode(tok, val_df["text"], val_df["label"], cfg.max_length)

        steps_per_epoch = train_enc.num_batches(cfg.batch_size)
        phase_epochs = [ph.epochs or cfg.epochs for ph in phases]
        total_steps = steps_per_epoch * sum(phase_epochs)
        label = self.strategy.label
        parent = dict(model.history[-1]) if model.history else None
        self.writer = writer = RunWriter(cfg.runs_dir, cfg.name or f"{label}-{time.strftime('%Y%m%d-%H%M%S')}", {
            "kind": "train", "parent": parent, "task": task.name,
            "format": "peft" if any(p.adapter is not None for p in plans) else "safetensors",
            "tunekit_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "model": model.describe(), "data": {**data.describe(), "train_used": len(train_enc),
                                                "validation_used": len(val_enc)},
            "strategy": self.strategy.describe(), "strategy_label": label,
            "phases": [{"strategy": ph.strategy.describe(), "epochs": e, "lr": ph.lr}
                       for ph, e in zip(phases, phase_epochs)],
            "train": cfg.to_dict(), "device": str(device), "versions": versions(),
            "params": params_before, "trained_before": list(model.trained_by),
        })
        run = self.run_record = Run(writer.path, model=model)
        model.to(device)
        mem = PeakMemory(device)
        amp = autocast_dtype(device, cfg.precision)
        state = {"step": 0, "samples": 0, "t0": time.perf_counter(), "last_eval": None, "train_time": 0.0}
        self._forward: nn.Module = model.module
        saved_initial: dict[str, torch.Tensor] = {}
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=total_steps, desc=f"{label}", unit="step", leave=True)
        status, reason, error, val_in = "completed", None, None, None
        try:
            for p_index, (phase, plan, epochs) in enumerate(zip(phases, plans, phase_epochs)):
                strat = phase.strategy
                if p_index > 0:
                    plan = strat.plan(model)  # against the model as the earlier phases left it
                model.adapt(plan)
                model.module.to(device)
                params = model.parameter_counts()
                self._keep_initial(saved_initial)
                self._forward = self.wrap(model.module) if self.wrap is not None else model.module
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
                train_in = self._inputs(plan, train_enc)
                state["train_time"] += time.perf_counter() - t
                val_in = self._inputs(plan, val_enc)
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
        if (writer.path / "adapter").is_dir():  # the card quotes the final summary
            from tunekit.cards import write_card
            write_card(run, writer.path / "adapter", adapter=True)
        model.history.append({"name": writer.name, "path": str(writer.path.resolve())})
        if isinstance(error, KeyboardInterrupt):
            raise error
        if status == "failed":
            if isinstance(error, TrainingError):
                error.run = run
                raise error
            raise TrainingError(f"run {writer.name!r} failed: {reason}", run) from error
        return run

    def _inputs(self, plan: Plan, split):
        """What the loop iterates over: the token ids, or (a probe) the cached head inputs."""
        if plan.cached_features:
            return cached_features(self.model, split, self.config.eval_batch_size)
        return split

    def _keep_initial(self, saved: dict) -> None:
        """Save the starting values (by canonical name) of trainable tensors that the run's
        parent cannot give back: a new head, or every trainable tensor of a model that was
        already changed in this process. Adapter tensors are not needed: without them the
        model is its start."""
        model = self.model
        pristine = not model.history
        new = set(model.new_parameters)
        layout = model.backbone.layout
        fresh = {}
        for n, p in model.hf.named_parameters():
            canon = layout.canonical(n)
            if not p.requires_grad or canon in saved or layout.role(n) == ADAPTER:
                continue
            if not pristine or canon in new:
                fresh[canon] = p.detach().to("cpu", copy=True)
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
        forward = self._forward
        for epoch in range(epochs):
            forward.train()
            for i, batch in enumerate(train_in.batches(cfg.batch_size, shuffle=True, generator=gen, device=device)):
                if self._stop.is_set():
                    raise StopTraining()
                t = time.perf_counter()
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    loss = forward(batch).loss
                loss = loss.float()
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
                state["samples"] += len(batch["input_ids"] if "input_ids" in batch else batch["features"])
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
                    ev = self._evaluate(val_in, device, amp, state, epoch + (i + 1) / per_epoch)
                    if bar is not None:
                        key = primary(model.task.name).key
                        bar.set_postfix({"loss": f"{loss_v:.3f}", key[:4]: f"{ev['val_' + key]:.3f}"})
            self._emit("epoch_end", {"epoch": epoch + 1, "step": state["step"]})

    def _evaluate(self, val_in, device, amp, state, epoch: float) -> dict:
        model, cfg = self.model, self.config
        metrics = evaluate_batches(self._forward, model.task.metrics(),
                                   val_in.batches(cfg.eval_batch_size, device=device), device, amp)
        ev = {"step": state["step"], "epoch": epoch, **{f"val_{k}": v for k, v in metrics.items()},
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
                last = self._evaluate(val_in, model.device, amp, state, float("nan"))
            except Exception as e:  # noqa: BLE001 - a stopped run must still be recorded
                warnings.warn(f"final evaluation of the stopped run failed: {e}")
        mem.sample()
        summary = {"steps": state["step"], "samples": state["samples"],
                   "wall_time_s": round(time.perf_counter() - state["t0"], 3),
                   "train_time_s": round(state["train_time"], 3),
                   "samples_per_s": round(state["samples"] / state["train_time"], 2) if state["train_time"] else None,
                   "peak_memory_mb": mem.peak_mb, "memory_kind": mem.kind, "pooling": model.pooling}
        if last is not None:
            summary.update({k: v for k, v in last.items() if k.startswith("val_")})
        if cfg.save_weights and status != "failed" and state["step"] > 0:
            if model.peft is not None:
                from tunekit.cards import hub_id
                writer.save_adapter(model.peft, hub_id(model.source) or model.source)
                summary["weights"] = "adapter"
            else:
                layout = model.backbone.layout
                # trainable now, or trained in an earlier phase (LP-FT's head)
                trained = {layout.canonical(n): p for n, p in model.hf.named_parameters()
                           if p.requires_grad or layout.canonical(n) in saved_initial}
                writer.save_tensors("weights.safetensors", trained)
                summary["weights"] = "weights.safetensors"
        return summary


def train(model: Model, data: Any, strategy: Any = None, config: Optional[TrainConfig] = None, *,
          callbacks: Optional[dict] = None, wrap: Optional[Callable[[nn.Module], nn.Module]] = None,
          **overrides) -> Run:
    """Train ``model`` on ``data`` with ``strategy`` and return the :class:`Run`.

    Keyword overrides set :class:`TrainConfig` fields, e.g. ``epochs=2, lr=1e-4``.
    The model is trained in place (``run.model`` is it). ``wrap``: see :class:`Trainer`.
    """
    return Trainer(model, data, strategy, config, callbacks, wrap=wrap, **overrides).run()


def compare(strategies: Sequence[Any], data: Any = "rotten_tomatoes", model: str = "minilm",
            config: Optional[TrainConfig] = None, *, task: str = "classification",
            callbacks: Optional[dict] = None, **overrides) -> list[Run]:
    """Train each strategy on a fresh copy of the same model, with the same data and seed.

    A strategy that fails is recorded (status "failed") and reported with a warning;
    the others still run.
    """
    if isinstance(model, Model):
        raise ConfigError("compare loads a fresh model for every strategy: pass the model's name or path "
                          f"(e.g. {model.source!r}), not a loaded model")
    if not strategies:
        raise ConfigError("compare needs at least one strategy")
    data = load_data(data)
    config = (config or TrainConfig()).replace(**overrides) if overrides else (config or TrainConfig())
    strategies = [get_strategy(s) for s in strategies]
    m = load_for(model, data, task, config.seed)
    for strategy in strategies:  # every strategy checked against the model before any trains
        for phase in strategy.phases():
            phase.strategy.plan(m)
    runs = []
    for i, strategy in enumerate(strategies):
        if i > 0:
            m = load_for(model, data, task, config.seed)
        try:
            runs.append(Trainer(m, data, strategy, config, callbacks).run())
        except TrainingError as e:
            warnings.warn(f"{strategy.label} failed: {e}")
            if e.run is not None:
                runs.append(e.run)
    return runs
