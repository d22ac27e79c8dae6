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
* ``step``: step, epoch, loss (the mean since the last step event), lr, samples, tokens
  (real, non-padding tokens seen), elapsed_s, samples_per_s; every ``log_every`` steps
* ``memory``: the measured breakdown after a phase's first step (weights_mb, gradients_mb,
  optimizer_mb, activations_mb, cache_mb, total_mb; cuda_peak_mb on a GPU)
* ``eval``: step, epoch, the task's metrics with a ``val_`` prefix (classification:
  val_loss, val_accuracy, val_macro_f1; causal LM: val_loss, val_perplexity), elapsed_s
* ``epoch_end``: epoch, step
* ``train_end``: status, reason, and the summary

Each step calls the task module once, ``out = forward(batch)``, and back-propagates
``out.loss``: wrapping the module (``Trainer(..., wrap=DDP)``) wraps everything. Batches
come from a ``DataLoader`` (length-grouped, dynamically padded; see :mod:`tunekit.batches`);
the loss is read back from the device only when it is logged. Frozen bottom blocks are
computed once and cached (:mod:`tunekit.cache`); under ``torchrun`` / ``accelerate launch``
every process trains and the main one writes the record (:mod:`tunekit.distributed`).

A callback may raise :class:`StopTraining` to end the run (recorded as stopped).
A non-finite loss ends the run as failed at that step; so does any other error.
Either way the record on disk keeps everything up to that point.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from tunekit import __version__, memory
from tunekit import cache as prefix
from tunekit.adapters import ADAPTER
from tunekit.batches import loader, to_device
from tunekit.cards import hub_id, write_card
from tunekit.config import ConfigError, TrainConfig, TrainingError  # noqa: F401 - TrainingError: this module's API too
from tunekit.data import load as load_data
from tunekit.distributed import world as current_world
from tunekit.evaluation import evaluate_batches, subset
from tunekit.metrics import primary
from tunekit.models import Model, load_for
from tunekit.runs import Run
from tunekit.runtime import adamw, choose_precision, lr_factor, pick_device, versions
from tunekit.strategies import Strategy, get_strategy
from tunekit.writer import ReplicaWriter, RunWriter

EVENTS = ("train_start", "phase_start", "step", "memory", "eval", "epoch_end", "train_end")


class StopTraining(Exception):
    """Raise from a callback (or call ``Trainer.stop()``) to end a run cleanly."""


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
        record: extra fields for the record's ``config.json`` (e.g. ``{"kind": "distil",
            "teacher": ...}`` from :func:`tunekit.distil`).
    """

    def __init__(self, model: Model, data: Any, strategy: Any = None,
                 config: Optional[TrainConfig] = None, callbacks: Optional[dict] = None,
                 wrap: Optional[Callable[[nn.Module], nn.Module]] = None, record: Optional[dict] = None,
                 **overrides):
        if not isinstance(model, Model):
            hint = " (a run opened from disk has run.model None: rebuild it with run.load_model())" \
                if model is None else ""
            raise ConfigError(f"model must be a model from tk.load_model() (got {type(model).__name__}){hint}")
        self.model = model
        self.data = load_data(data)
        self.strategy = get_strategy(strategy if strategy is not None else "full")
        self.config = (config or TrainConfig()).replace(**overrides) if overrides else (config or TrainConfig())
        self.wrap = wrap
        self.record = dict(record or {})
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
        if not callable(fn):
            raise ConfigError(f"the callback for {event!r} must be a function of one Event (got {fn!r})")
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
        self.world = world = current_world(cfg.device)
        device = world.device or pick_device(cfg.device)
        if world.distributed and cfg.batch_size % world.size:
            raise ConfigError(f"batch_size is the global batch ({cfg.batch_size}); with {world.size} processes "
                              f"it must be a multiple of {world.size}")
        torch.manual_seed(cfg.seed)
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
        amp, precision_why = choose_precision(device, cfg.precision)
        self.writer = writer = self._writer(cfg.name or f"{label}-{time.strftime('%Y%m%d-%H%M%S')}", {
            "kind": "train", "parent": dict(model.history[-1]) if model.history else None, "task": task.name,
            "format": "peft" if any(p.adapter is not None for p in plans) else "safetensors",
            "tunekit_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "model": model.describe(), "data": {**data.describe(), "train_used": len(train_enc),
                                                "validation_used": len(val_enc)},
            "strategy": self.strategy.describe(), "strategy_label": label,
            "phases": [{"strategy": ph.strategy.describe(), "epochs": e, "lr": ph.lr}
                       for ph, e in zip(phases, phase_epochs)],
            "train": cfg.to_dict(), "device": str(device), "versions": versions(),
            "precision": {"requested": cfg.precision, "autocast": "bf16" if amp is not None else None,
                          "why": precision_why},
            "world_size": world.size, "per_process_batch_size": cfg.batch_size // world.size,
            "params": params_before, "trained_before": list(model.trained_by),
            "structure": list(model.structure), **self.record,
        })
        run = self.run_record = Run(writer.path, model=model) if world.main else None
        state = {"step": 0, "samples": 0, "tokens": 0, "padded_tokens": 0, "t0": time.perf_counter(),
                 "last_eval": None, "train_time": 0.0, "clock": None, "memory": None, "cache": []}
        self._forward: nn.Module = model.module
        self._eval_forward: nn.Module = model.module
        saved_initial: dict[str, torch.Tensor] = {}
        bar = None
        if cfg.progress and world.main:
            from tqdm.auto import tqdm
            bar = tqdm(total=total_steps, desc=f"{label}", unit="step", leave=True)
        status, reason, error, val_in = "completed", None, None, None
        try:
            model.to(device)  # inside the try: a device that fails here still finishes the record
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for p_index, (phase, plan, epochs) in enumerate(zip(phases, plans, phase_epochs)):
                strat = phase.strategy
                if p_index > 0:
                    plan = strat.plan(model)  # against the model as the earlier phases left it
                model.adapt(plan)
                model.module.to(device)
                params = model.parameter_counts()
                self._keep_initial(saved_initial)
                lr = phase.lr or cfg.lr or strat.default_lr
                if cfg.progress and world.main:  # like peft's print_trainable_parameters
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
                t = time.perf_counter()  # a cache's one pass is part of the training cost
                inputs = prefix.inputs_for(model, plan, train_enc, val_enc, cfg.eval_batch_size,
                                           cfg.cache_budget_mb, amp)
                val_in, info = inputs.validation, inputs.info
                state["train_time"] += time.perf_counter() - t
                info.build_s = round(time.perf_counter() - t, 3)
                state["cache"].append(info.describe())
                writer.update(cache=state["cache"])
                if info.reason and cfg.progress and world.main:
                    print(f"{label}: {info.reason}")
                self._phase(strat, inputs, epochs, lr, device, amp, state, bar, seed=cfg.seed + p_index)
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
            self._stop_clock(state)
        try:
            summary = self._finish(status, reason, state, saved_initial,
                                   val_in if status != "failed" else None, amp, device)
        except Exception as e:  # noqa: BLE001 - e.g. the disk filled while saving the weights
            said = str(e) if isinstance(e, TrainingError) else f"{type(e).__name__}: {e}"
            reason = f"{reason + '; then ' if reason else ''}saving the run failed: {said}"
            with contextlib.suppress(Exception):
                writer.finish("failed", reason, steps=state["step"])
            raise TrainingError(f"run {writer.name!r} failed: {reason}", self.run_record) from e
        end = {"status": status, "reason": reason, **summary}
        writer.log("train_end", end)
        try:
            writer.finish(status, reason, **summary)  # the record is final before any callback runs
        except TrainingError as e:  # the disk filled on the last write
            e.run = self.run_record
            raise
        if world.main and (writer.path / "adapter").is_dir():  # the card quotes the final summary
            write_card(run, writer.path / "adapter", adapter=True)
        world.barrier()  # the record is complete before any process returns it
        if run is None:
            run = self.run_record = Run(writer.path, model=model)
        model.history.append({"name": writer.name, "path": str(writer.path.resolve())})
        model.structure = []  # the record holds them now
        for fn in self.callbacks.get("train_end", ()):  # a callback that raises cannot unfinish it
            fn(Event("train_end", end, self))
        if isinstance(error, KeyboardInterrupt):
            raise error
        if status == "failed":
            if isinstance(error, TrainingError):
                error.run = run
                raise error
            raise TrainingError(f"run {writer.name!r} failed: {reason}", run) from error
        return run

    def _writer(self, name: str, config: dict):
        """The run's writer: a :class:`RunWriter` on the main process; elsewhere a replica that
        knows the main one's path and writes nothing."""
        world = self.world
        if not world.distributed:
            return RunWriter(self.config.runs_dir, name, config)
        made, problem = None, None
        if world.main:
            try:
                made = RunWriter(self.config.runs_dir, name, config)
            except ConfigError as e:
                problem = str(e)
        path, problem = world.share((str(made.path) if made else None, problem))
        if problem:
            raise ConfigError(problem)
        return made if world.main else ReplicaWriter(path)

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

    def _modules(self, inputs) -> None:
        """The module each step goes through, and the one evaluation goes through (never the
        DDP wrapper: its forward is a collective, and processes evaluate unequal shares)."""
        module = self._eval_forward = inputs.module(self.model)
        forward = self.world.wrap(module)
        if self.wrap is not None:
            forward = self.wrap(forward)
        if self.config.compile:
            forward = torch.compile(forward, dynamic=True)
        self._forward = forward

    @staticmethod
    def _start_clock(state) -> None:
        state["clock"] = time.perf_counter()

    @staticmethod
    def _stop_clock(state) -> None:
        if state["clock"] is not None:
            state["train_time"] += time.perf_counter() - state["clock"]
            state["clock"] = None

    def _phase(self, strat: Strategy, inputs, epochs: int, lr: float, device, amp, state, bar,
               seed: int) -> None:
        cfg, model, world = self.config, self.model, self.world
        train_in, val_in, info, frozen = inputs.train, inputs.validation, inputs.info, inputs.frozen
        self._modules(inputs)
        forward = self._forward
        groups = strat.param_groups(model, lr, cfg.weight_decay)
        opt = adamw(groups, lr, device)
        train_loader = loader(train_in, cfg.batch_size, shuffle=True, group_by_length=cfg.group_by_length,
                              seed=seed, rank=world.rank, world_size=world.size,
                              pin_memory=device.type == "cuda" and info.kind is None)
        per_epoch = len(train_loader)
        steps = per_epoch * epochs
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, steps, cfg.warmup, cfg.schedule))
        eval_at = {round(per_epoch * (k + 1) / cfg.evals_per_epoch) for k in range(cfg.evals_per_epoch)}
        log_every = cfg.log_every or (1 if device.type == "cpu" else 10)
        trainable = [p for g in groups for p in g["params"]]
        window, in_window, measure = torch.zeros((), device=device), 0, True
        for epoch in range(epochs):
            forward.train()
            prefix.frozen_prefix_eval(model, frozen)  # frozen layers: no dropout, cached or not
            self._start_clock(state)
            for i, batch in enumerate(train_loader):
                if self._stop.is_set():
                    raise StopTraining()
                n = len(batch["labels"] if "labels" in batch else batch["input_ids"])
                if "attention_mask" in batch:  # counted on the host, before the batch moves
                    state["tokens"] += int(batch["attention_mask"].sum()) * world.size
                    state["padded_tokens"] += batch["attention_mask"].numel() * world.size
                batch = to_device(batch, device)
                meter = memory.ActivationMeter(model.module) if measure else None
                with meter or contextlib.nullcontext(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    loss = forward(batch).loss
                loss.backward()
                grads = memory.gradient_bytes(model.module) if measure else 0
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
                opt.step()
                step_lr = opt.param_groups[0]["lr"]
                sched.step()
                if measure:
                    self._memory(state, opt, meter.bytes, grads, device, info)
                    measure = False
                opt.zero_grad(set_to_none=True)
                window += loss.detach().float()
                in_window += 1
                state["step"] += 1
                state["samples"] += n * world.size
                due = (i + 1) in eval_at
                if in_window >= log_every or due or i + 1 == per_epoch:
                    loss_v = float(world.mean(window / in_window))  # the one read from the device
                    if not math.isfinite(loss_v):
                        bad = state["step"]
                        state["step"] -= in_window  # the steps since the last finite loss do not count
                        raise TrainingError(f"the loss became {loss_v} at step {bad}"
                                            f"{'' if in_window == 1 else f' (or one of the {in_window} before)'}; "
                                            f"try a lower learning rate (lr={lr:g})")
                    window.zero_()
                    in_window = 0
                    elapsed = state["train_time"] + time.perf_counter() - state["clock"]
                    self._emit("step", {"step": state["step"], "epoch": epoch + (i + 1) / per_epoch,
                                        "loss": loss_v, "lr": step_lr, "samples": state["samples"],
                                        "tokens": state["tokens"],
                                        "elapsed_s": round(time.perf_counter() - state["t0"], 3),
                                        "samples_per_s": state["samples"] / max(elapsed, 1e-9)})
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss_v:.3f}", refresh=False)
                if bar is not None:
                    bar.update(1)
                if due:
                    self._stop_clock(state)
                    ev = self._evaluate(val_in, device, amp, state, epoch + (i + 1) / per_epoch)
                    if bar is not None:
                        key = primary(model.task.name).key
                        bar.set_postfix({"loss": f"{loss_v:.3f}", key[:4]: f"{ev['val_' + key]:.3f}"})
                    prefix.frozen_prefix_eval(model, frozen)  # evaluation put everything back in train mode
                    self._start_clock(state)
            self._stop_clock(state)
            self._emit("epoch_end", {"epoch": epoch + 1, "step": state["step"]})

    def _memory(self, state, opt, activation_bytes: int, grad_bytes: int, device, info) -> None:
        """The phase's measured memory; the run keeps the largest phase's."""
        mem = memory.breakdown(self.model.module, opt, activation_bytes, grad_bytes, device,
                               cache_mb=info.mb if info.kind else 0.0)
        if state["memory"] is None or mem["total_mb"] >= state["memory"]["total_mb"]:
            state["memory"] = mem
        self.writer.update(memory=state["memory"])
        self._emit("memory", {"step": state["step"] + 1, **mem})

    def _evaluate(self, val_in, device, amp, state, epoch: float) -> dict:
        model, cfg, world = self.model, self.config, self.world
        batches = (to_device(b, device) for b in loader(val_in, cfg.eval_batch_size, group_by_length=True,
                                                         rank=world.rank, world_size=world.size))
        metrics = evaluate_batches(self._eval_forward, model.task.metrics(), batches, device, amp,
                                   merge=world.merge)
        ev = {"step": state["step"], "epoch": epoch, **{f"val_{k}": v for k, v in metrics.items()},
              "elapsed_s": round(time.perf_counter() - state["t0"], 3)}
        state["last_eval"] = ev
        self._emit("eval", ev)
        return ev

    def _finish(self, status, reason, state, saved_initial, val_in, amp, device) -> dict:
        model, cfg, writer = self.model, self.config, self.writer
        last = state["last_eval"]
        if status == "stopped" and val_in is not None and state["step"] > 0 and \
                (last is None or last["step"] != state["step"]) and not self.world.distributed:
            try:
                last = self._evaluate(val_in, model.device, amp, state, float("nan"))
            except Exception as e:  # noqa: BLE001 - a stopped run must still be recorded
                warnings.warn(f"final evaluation of the stopped run failed: {e}", stacklevel=2)
        mem = state["memory"]
        if mem is not None and device.type == "cuda":
            mem["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / memory.MB, 2)
        train_time = state["train_time"]
        summary = {"steps": state["step"], "samples": state["samples"],
                   "wall_time_s": round(time.perf_counter() - state["t0"], 3),
                   "train_time_s": round(train_time, 3),
                   "samples_per_s": round(state["samples"] / train_time, 2) if train_time else None,
                   "tokens_per_s": round(state["tokens"] / train_time, 1) if train_time and state["tokens"] else None,
                   "padding": (round(1 - state["tokens"] / state["padded_tokens"], 4)
                               if state["padded_tokens"] else None),
                   "memory": mem,
                   "peak_memory_mb": None if mem is None else mem.get("cuda_peak_mb", mem["total_mb"]),
                   "memory_kind": None if mem is None else ("cuda_max_allocated" if device.type == "cuda"
                                                            else "measured_tensors"),
                   "cache": state["cache"], "pooling": model.pooling}
        if last is not None:
            summary.update({k: v for k, v in last.items() if k.startswith("val_")})
        if cfg.save_weights and status != "failed" and state["step"] > 0:
            if model.peft is not None:
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
            warnings.warn(f"{strategy.label} failed: {e}", stacklevel=2)
            if e.run is not None:
                runs.append(e.run)
    return runs
