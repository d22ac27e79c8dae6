"""One training loop for every strategy, with named events and clean cancellation.

    run = tk.train(model, data, strategy=tk.LoRA(rank=8), epochs=1)

    trainer = tk.Trainer(model, data, tk.Full(), lr=5e-5)
    trainer.add_callback("eval", lambda ev: print(ev.payload["val_accuracy"]))
    threading.Thread(target=trainer.run).start()
    trainer.stop()          # from any thread: ends cleanly at the next step

Events (``Event.name``) and their payloads:

* ``train_start``: run, strategy, params (trainable / total / percent / by_group), device,
  total_steps, train_size, eval_size
* ``phase_start``: phase, strategy, params, steps, lr, step (the steps taken before it)
* ``step``: step, epoch, loss (the mean since the last step event), lr (the highest group's),
  lrs (``{layer group: rate}`` when more than one group trains), samples, tokens
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

Every callback gets the trainer too (``ev.trainer``): ``ev.trainer.progress`` is how far the run
has come (:class:`~tunekit.run_state.Progress`: step, samples, tokens, clocks, the last evaluation ...).

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

from tunekit import cache as prefix
from tunekit import memory
from tunekit.adapters import ADAPTER, checkpointing_notice_quiet
from tunekit.batches import loader, to_device
from tunekit.cards import hub_id, write_card
from tunekit.config import ConfigError, TrainConfig, TrainingError, plain_arguments  # noqa: F401 - TrainingError: this module's API too
from tunekit.data import load as load_data
from tunekit.data import match_labels
from tunekit.distributed import world as current_world
from tunekit.evaluation import evaluate_batches, subset
from tunekit.metrics import primary
from tunekit.models import Model, load_for
from tunekit.rates import check_named_groups, group_rates
from tunekit.run_state import Outcome, PhaseRun, Progress, Setup, snapshot_steps
from tunekit.runs import Run
from tunekit.runtime import adamw, choose_precision, pick_device, versions
from tunekit.schedules import lr_factor, scheduler  # noqa: F401 - lr_factor: this module's API too
from tunekit.sharing import SharedInputs
from tunekit.strategies import get_strategies, get_strategy
from tunekit.strategies.base import Phase, phase_steps
from tunekit.writer import ReplicaWriter, RunWriter, record_config

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
        shared: a :class:`~tunekit.sharing.SharedInputs` memo given to every run of a process
            (an experiment's cells): the examples' token ids, and a pristine model's probe
            features or frozen prefixes, are read from it where it has them and kept in it
            otherwise. None: the run computes everything itself.
    """

    def __init__(self, model: Model, data: Any, strategy: Any = None,
                 config: Optional[TrainConfig] = None, callbacks: Optional[dict] = None,
                 wrap: Optional[Callable[[nn.Module], nn.Module]] = None, record: Optional[dict] = None,
                 shared: Optional[SharedInputs] = None, **overrides):
        if not isinstance(model, Model):
            hint = " (a run opened from disk has run.model None: rebuild it with run.load_model())" \
                if model is None else ""
            raise ConfigError(f"model must be a model from tk.load_model() (got {type(model).__name__}){hint}")
        if shared is not None and not isinstance(shared, SharedInputs):
            raise ConfigError(f"shared must be a tunekit.sharing.SharedInputs or None (got {type(shared).__name__})")
        self.shared = shared
        self.model = model
        self.data = load_data(data)
        self.strategy = get_strategy(strategy if strategy is not None else "full")
        self.config = (config or TrainConfig()).replace(**overrides) if overrides else (config or TrainConfig())
        self.wrap = wrap
        self.record = dict(record or {})
        if model.task.pairs and not self.data.pairs:
            raise ConfigError(f"task {model.task.name!r} trains on (source, target) pairs; data {self.data.name!r} "
                              f"holds texts only: make pairs with tk.data.from_pairs(...) or use "
                              f"tk.data.bbc_headlines()")
        if model.task.name == "classification" and self.data.pairs:
            raise ConfigError(f"data {self.data.name!r} holds (source, target) pairs, not classes; train a decoder "
                              f"on it with task='sft'")
        if model.task.name == "classification":
            self.data = match_labels(self.data, model.label_names)
        self.callbacks: dict[str, list[Callable]] = defaultdict(list)
        for ev, fns in (callbacks or {}).items():
            for fn in (fns if isinstance(fns, (list, tuple)) else [fns]):
                self.add_callback(ev, fn)
        self._stop = threading.Event()
        self.run_record: Optional[Run] = None
        self.writer: Optional[RunWriter] = None
        self.progress = Progress()

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
        setup = self._set_up()
        outcome = self._finite(self._train(setup))
        end = self._finish_record(outcome, self._summary_or_fail(setup, outcome))
        for fn in self.callbacks.get("train_end", ()):  # a callback that raises cannot unfinish it
            fn(Event("train_end", end, self))
        self._raise_failure(outcome, self.run_record)
        return self.run_record

    # ----- set up ------------------------------------------------------------------------------
    def _set_up(self) -> Setup:
        """Check everything, encode the examples and open the record, before anything trains."""
        cfg, model = self.config, self.model
        self.world = world = current_world(cfg.device)
        device = world.device or pick_device(cfg.device)
        if world.distributed and cfg.batch_size % world.size:
            raise ConfigError(f"batch_size is the global batch ({cfg.batch_size}); with {world.size} processes "
                              f"it must be a multiple of {world.size}")
        fitted = model.fit_length(cfg.max_length)  # before anything is written; the record keeps what ran
        if fitted != cfg.max_length:
            self.config = cfg = cfg.replace(max_length=fitted)
        torch.manual_seed(cfg.seed)
        phases = self.strategy.phases()
        plans = [ph.strategy.plan(model) for ph in phases]  # validate before anything is written or trained
        if isinstance(cfg.lr, dict):
            check_named_groups(model, cfg.lr)
            for ph in phases:  # a decay on top of named rates: refused before anything is written
                group_rates(model, [], ph.lr if ph.lr is not None else cfg.lr, 0.0,
                            cfg.lr_decay if ph.lr_decay is None else ph.lr_decay)
        params_before = self.strategy.count(model)
        train_enc, val_enc = self._examples()
        amp, precision_why = choose_precision(device, cfg.precision)
        per_epoch = train_enc.num_batches(cfg.batch_size)
        staged = self.strategy.phases_for(model, per_epoch, cfg.epochs)  # gradual unfreezing: stages of the run's steps
        if staged != phases:
            phases, plans = staged, [ph.strategy.plan(model) for ph in staged]
        setup = Setup(device, amp, precision_why, phases, plans, [ph.epochs or cfg.epochs for ph in phases],
                      train_enc, val_enc, per_epoch, phase_steps(phases, per_epoch, cfg.epochs))
        # the length of each phase is known now: a plan that depends on it is checked before anything is written
        setup.plans = [ph.strategy.scheduled(model, plan, steps)
                       for ph, plan, steps in zip(phases, plans, setup.steps)]
        setup.snapshot_at = snapshot_steps(cfg.snapshots, setup.total_steps) if cfg.save_weights else ()
        self._open_record(setup, params_before)
        self.progress = Progress()
        self._forward: nn.Module = model.module
        self._eval_forward: nn.Module = model.module
        if cfg.progress and world.main:
            from tqdm.auto import tqdm
            setup.bar = tqdm(total=setup.total_steps, desc=f"{self.strategy.label}", unit="step", leave=True)
        return setup

    def _examples(self) -> tuple[Any, Any]:
        """The encoded training and validation examples (their ``train_size`` / ``eval_size``
        subsets), through the ``shared`` memo when there is one."""
        cfg, tok, task = self.config, self.model.tokenizer, self.model.task
        train_df, val_df = self.data.train, self.data.validation
        train_ix = subset(len(train_df), cfg.train_size, cfg.seed)
        val_ix = subset(len(val_df), cfg.eval_size, cfg.seed + 1)
        if len(val_df) == 0:
            raise ConfigError(f"the validation split of {self.data.name!r} is empty; make it with "
                              f"validation_size > 0")
        if self.shared is not None:
            return (self.shared.encode(self.model, train_df, "train", train_ix, cfg.max_length),
                    self.shared.encode(self.model, val_df, "validation", val_ix, cfg.max_length))
        train_df = train_df if train_ix is None else train_df.iloc[train_ix]
        val_df = val_df if val_ix is None else val_df.iloc[val_ix]
        return task.encode_frame(tok, train_df, cfg.max_length), task.encode_frame(tok, val_df, cfg.max_length)

    def _open_record(self, setup: Setup, params_before: dict) -> None:
        """Write the record's config.json (``record`` fields last) and start its summary."""
        cfg, model, world, label = self.config, self.model, self.world, self.strategy.label
        config = record_config(
            kind="train", parent=dict(model.history[-1]) if model.history else None, task=model.task.name,
            model=model.describe(), data={**self.data.describe(), "train_used": len(setup.train),
                                          "validation_used": len(setup.validation),
                                          **self._truncated(setup)},
            train=cfg.to_dict(), strategy=self.strategy.describe(), label=label,
            fmt="peft" if any(p.adapter is not None for p in setup.plans) else "safetensors",
            structure=model.structure, device=str(setup.device), versions=versions(),
            precision={"requested": cfg.precision, "autocast": "bf16" if setup.amp is not None else None,
                       "why": setup.precision_why},
            params=params_before,
            phases=[{"strategy": ph.strategy.describe(), "epochs": e, "steps": n, "lr": ph.lr,
                     "lr_used": peak_lr(ph, cfg)}  # as _train_phase takes it
                    for ph, e, n in zip(setup.phases, setup.epochs, setup.steps)],
            world_size=world.size, per_process_batch_size=cfg.batch_size // world.size,
            trained_before=list(model.trained_by))
        self.writer = self._writer(cfg.name or f"{label}-{time.strftime('%Y%m%d-%H%M%S')}",
                                   {**config, **self.record})
        self.run_record = Run(self.writer.path, model=model) if world.main else None

    @staticmethod
    def _truncated(setup) -> dict:
        """What encoding cut to fit max_length, per split, where it cut anything (text-to-text
        pairs: sources cut, targets cut)."""
        cut = {split: dict(enc.truncated) for split, enc in (("train", setup.train), ("validation", setup.validation))
               if getattr(enc, "truncated", None)}
        return {"truncated": cut} if cut else {}

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

    # ----- train -------------------------------------------------------------------------------
    def _train(self, setup: Setup) -> Outcome:
        """Train every phase; a stop, an interrupt or an error ends the training and says how."""
        progress = self.progress
        try:
            self.model.to(setup.device)  # inside the try: a device that fails here still finishes the record
            if setup.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(setup.device)
            for index in range(len(setup.phases)):
                self._train_phase(setup, index)
        except StopTraining:
            return Outcome("stopped", f"stopped by the user at step {progress.step}")
        except KeyboardInterrupt as e:  # Ctrl-C / interrupt the kernel: record, then let it propagate
            return Outcome("stopped", f"interrupted at step {progress.step}", e)
        except BaseException as e:  # noqa: BLE001 - record every failure, then re-raise
            return Outcome("failed", self._failure_words(e), e)
        finally:
            if setup.bar is not None:
                setup.bar.close()
            progress.stop_clock()
        return Outcome()

    def _finite(self, outcome: Outcome) -> Outcome:
        """A run whose weights are no longer finite failed, however its training ended (a last
        step can leave them nan while every loss it read was finite)."""
        if outcome.status == "failed":
            return outcome
        bad = [name for name, p in self.model.module.named_parameters() if not bool(torch.isfinite(p).all())]
        if not bad:
            return outcome
        words = (f"nan: the weights are not finite after step {self.progress.step} ({len(bad)} tensor(s), "
                 f"e.g. {bad[0]}); try a lower learning rate")
        return Outcome("failed", f"{outcome.reason + '; ' if outcome.reason else ''}{words}", TrainingError(words))

    def _failure_words(self, e: BaseException) -> str:
        """Why the run failed, in the words its record keeps."""
        if isinstance(e, torch.cuda.OutOfMemoryError):
            return (f"out of GPU memory at step {self.progress.step}: lower batch_size or max_length, "
                    f"or use LoRA / freeze more layers ({e})")
        return str(e) if isinstance(e, TrainingError) else f"{type(e).__name__}: {e}"

    def _train_phase(self, setup: Setup, index: int) -> None:
        """Apply phase ``index``'s plan, announce it, build its inputs, and train its epochs."""
        cfg, model = self.config, self.model
        phase = setup.phases[index]
        strat = phase.strategy
        steps = setup.steps[index]
        plan = setup.plans[index] if index == 0 else \
            strat.scheduled(model, strat.plan(model), steps)  # against the model the earlier left
        model.adapt(plan)
        model.module.to(setup.device)
        params = model.parameter_counts()
        self._keep_initial(self.progress.initial)
        lr = peak_lr(phase, cfg)
        if cfg.progress and self.world.main:  # like peft's print_trainable_parameters
            print(f"{self.strategy.label}{f' phase {index + 1}' if len(setup.phases) > 1 else ''}: trainable "
                  f"params {params['trainable']:,} / {params['total']:,} ({params['percent']:.4g}%)")
        if index == 0:
            self.writer.update(params=params)
            self._emit("train_start", {"run": self.writer.name, "strategy": self.strategy.describe(),
                                       "params": params, "device": str(setup.device),
                                       "total_steps": setup.total_steps, "train_size": len(setup.train),
                                       "eval_size": len(setup.validation)})
        self._emit("phase_start", {"phase": index, "strategy": strat.describe(), "params": params,
                                   "steps": steps, "lr": lr, "step": self.progress.step})
        phase_run = self._start_phase(setup, phase, plan, self._phase_inputs(setup, plan), lr, steps,
                                      cfg.seed + index)
        self.progress.rates.append(phase_run.rates)
        self.writer.update(rates=self.progress.rates)
        self._train_epochs(setup, phase_run, steps)

    def _phase_inputs(self, setup: Setup, plan):
        """The phase's inputs (a frozen prefix computed once where it can be); building them is
        training time."""
        cfg, progress = self.config, self.progress
        t = time.perf_counter()
        inputs = prefix.inputs_for(self.model, plan, setup.train, setup.validation, cfg.eval_batch_size,
                                   cfg.cache_budget_mb, setup.amp, self.shared)
        progress.validation, info = inputs.validation, inputs.info
        progress.train_time += time.perf_counter() - t
        info.build_s = round(time.perf_counter() - t, 3)
        progress.cache.append(info.describe())
        self.writer.update(cache=progress.cache)
        if info.reason and cfg.progress and self.world.main:
            print(f"{self.strategy.label}: {info.reason}")
        return inputs

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

    def _start_phase(self, setup: Setup, phase: Phase, plan, inputs, lr: float, steps: int,
                     seed: int) -> PhaseRun:
        """The phase's module, optimizer (a peak rate per layer group), batches and schedule."""
        cfg, world, device, strat = self.config, self.world, setup.device, phase.strategy
        self._modules(inputs)
        groups = strat.param_groups(self.model, lr, cfg.weight_decay)
        rates = group_rates(self.model, [g["group"] for g in groups if "group" in g],
                            phase.lr if phase.lr is not None else cfg.lr, strat.default_lr,
                            cfg.lr_decay if phase.lr_decay is None else phase.lr_decay)
        for g in groups:
            g["group"] = g.get("group", "extra")  # a strategy's own (distillation's projection): the peak
            g["lr"] = rates.setdefault(g["group"], lr)
        opt = adamw(groups, lr, device)
        batches = loader(inputs.train, cfg.batch_size, shuffle=True, group_by_length=cfg.group_by_length,
                         seed=seed, rank=world.rank, world_size=world.size,
                         pin_memory=device.type == "cuda" and inputs.info.kind is None)
        per_epoch = len(batches)
        sched = scheduler(opt, cfg.schedule, steps, cfg.warmup, cfg.cycles, cfg.cooldown)
        return PhaseRun(
            lr=max(rates.values(), default=lr), rates=rates, inputs=inputs, forward=self._forward, optimizer=opt,
            schedule=sched, batches=batches,
            steps_per_epoch=per_epoch, trainable=[p for g in groups for p in g["params"]],
            eval_at={round(per_epoch * (k + 1) / cfg.evals_per_epoch) for k in range(cfg.evals_per_epoch)},
            log_every=cfg.log_every or (1 if device.type == "cpu" else 10),
            loss_sum=torch.zeros((), device=device), plan=plan)

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

    def _train_epochs(self, setup: Setup, phase: PhaseRun, steps: int) -> None:
        """Train the phase's ``steps`` optimizer steps, epoch by epoch (the last one cut short
        where the phase ends inside it): a ``step`` event every ``log_every`` of them, and its
        evaluations (and one at the phase's end)."""
        model, progress, bar = self.model, self.progress, setup.bar
        frozen = phase.inputs.frozen
        for epoch in range(-(-steps // phase.steps_per_epoch)):
            phase.forward.train()
            prefix.frozen_prefix_eval(model, frozen)  # frozen layers: no dropout, cached or not
            progress.start_clock()
            for i, batch in enumerate(phase.batches):
                if self._stop.is_set():
                    raise StopTraining()
                step_lr = self._step(setup, phase, batch)
                if progress.step in setup.snapshot_at:
                    self._snapshot()
                at = epoch + (i + 1) / phase.steps_per_epoch
                ended = phase.taken >= steps
                due = (i + 1) in phase.eval_at or ended
                if phase.losses >= phase.log_every or due or i + 1 == phase.steps_per_epoch:
                    loss_v = self._log_step(phase, at, step_lr, bar)
                if bar is not None:
                    bar.update(1)
                if due:
                    progress.stop_clock()
                    ev = self._evaluate(phase.inputs.validation, setup.device, setup.amp, at)
                    if bar is not None:
                        key = primary(model.task.name).key
                        bar.set_postfix({"loss": f"{loss_v:.3f}", key[:4]: f"{ev['val_' + key]:.3f}"})
                    prefix.frozen_prefix_eval(model, frozen)  # evaluation put everything back in train mode
                    progress.start_clock()
                if ended:
                    break
            progress.stop_clock()
            self._emit("epoch_end", {"epoch": epoch + 1, "step": progress.step})

    def _step(self, setup: Setup, phase: PhaseRun, batch: dict) -> float:
        """One optimizer step on ``batch``; returns the learning rate it took."""
        cfg, model, world, device, progress = self.config, self.model, self.world, setup.device, self.progress
        n = len(batch["labels"] if "labels" in batch else batch["input_ids"])
        if "attention_mask" in batch:  # counted on the host, before the batch moves
            progress.tokens += int(batch["attention_mask"].sum()) * world.size
            progress.padded_tokens += batch["attention_mask"].numel() * world.size
        batch = to_device(batch, device)
        meter = memory.ActivationMeter(model.module) if phase.measure else None
        with meter or contextlib.nullcontext(), \
                torch.autocast(device.type, dtype=setup.amp, enabled=setup.amp is not None):
            loss = phase.forward(batch).loss
        penalty = phase.plan.penalty
        (loss if penalty is None else loss + penalty(model)).backward()  # the curves show the task's loss
        grads = memory.gradient_bytes(model.module) if phase.measure else 0
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(phase.trainable, cfg.grad_clip)
        phase.optimizer.step()
        phase.step_lrs = {g["group"]: g["lr"] for g in phase.optimizer.param_groups}
        step_lr = max(phase.step_lrs.values())  # the peak group's: the rate a one-rate run would say
        phase.schedule.step()
        if phase.plan.after_step is not None:
            phase.plan.after_step(model, phase.taken)
        if phase.measure:
            self._memory(phase.optimizer, meter.bytes, grads, device, phase.inputs.info)
            phase.measure = False
        phase.optimizer.zero_grad(set_to_none=True)
        phase.loss_sum += loss.detach().float()
        phase.losses += 1
        phase.taken += 1
        progress.step += 1
        progress.samples += n * world.size
        return step_lr

    def _trained_tensors(self, canonical: bool) -> dict:
        """What the run trains, by canonical name (or by the name in the model as it trains,
        adapter tensors included): trainable now, or trained in an earlier phase (LP-FT's head)."""
        layout = self.model.backbone.layout
        return {(layout.canonical(n) if canonical else n): p for n, p in self.model.hf.named_parameters()
                if p.requires_grad or layout.canonical(n) in self.progress.initial}

    def _snapshot(self) -> None:
        """Keep the trained tensors as they are after this step (``TrainConfig.snapshots``), by
        their names in the model as it trains; the clock stops meanwhile."""
        progress = self.progress
        progress.stop_clock()
        t = time.perf_counter()
        file = f"snapshots/step-{progress.step:06d}.safetensors"
        trained = self._trained_tensors(canonical=False)
        trained.update({n: p for n, p in self.model.snapshot_parameters().items()
                        if n.startswith("prompt.") and p.requires_grad})  # virtual tokens live beside the model
        self.writer.save_tensors(file, trained)
        progress.snapshot_s += time.perf_counter() - t
        if (self.writer.path / file).is_file():
            progress.snapshot_bytes += (self.writer.path / file).stat().st_size
        progress.snapshots.append({"step": progress.step, "file": file})
        self.writer.update(snapshots=progress.snapshots, snapshots_mb=round(progress.snapshot_bytes / memory.MB, 3),
                           snapshots_s=round(progress.snapshot_s, 3))
        progress.start_clock()

    def _log_step(self, phase: PhaseRun, epoch: float, step_lr: float, bar) -> float:
        """Read the mean loss since the last ``step`` event (the one read from the device) and
        emit it; a loss that is not finite ends the run."""
        progress = self.progress
        loss_v = float(self.world.mean(phase.loss_sum / phase.losses))
        if not math.isfinite(loss_v):
            bad, since = progress.step, phase.losses
            progress.step -= since  # the steps since the last finite loss do not count
            raise TrainingError(f"the loss became {loss_v} at step {bad}"
                                f"{'' if since == 1 else f' (or one of the {since} before)'}; "
                                f"try a lower learning rate (lr={phase.lr:g})")
        phase.loss_sum.zero_()
        phase.losses = 0
        elapsed = progress.train_time + time.perf_counter() - progress.clock
        self._emit("step", {"step": progress.step, "epoch": epoch, "loss": loss_v, "lr": step_lr,
                            **({"lrs": dict(phase.step_lrs)} if len(phase.step_lrs) > 1 else {}),
                            "samples": progress.samples, "tokens": progress.tokens,
                            "elapsed_s": progress.elapsed_s(),
                            "samples_per_s": progress.samples / max(elapsed, 1e-9)})
        if bar is not None:
            bar.set_postfix(loss=f"{loss_v:.3f}", refresh=False)
        return loss_v

    def _memory(self, opt, activation_bytes: int, grad_bytes: int, device, info) -> None:
        """The phase's measured memory; the run keeps the largest phase's."""
        progress = self.progress
        mem = memory.breakdown(self.model.module, opt, activation_bytes, grad_bytes, device,
                               cache_mb=info.mb if info.kind else 0.0)
        if progress.memory is None or mem["total_mb"] >= progress.memory["total_mb"]:
            progress.memory = mem
        self.writer.update(memory=progress.memory)
        self._emit("memory", {"step": progress.step + 1, **mem})

    def _evaluate(self, val_in, device, amp, epoch: float) -> dict:
        """Evaluate on the validation examples and emit the ``eval`` event."""
        model, cfg, world, progress = self.model, self.config, self.world, self.progress
        batches = (to_device(b, device) for b in loader(val_in, cfg.eval_batch_size, group_by_length=True,
                                                         rank=world.rank, world_size=world.size))
        acc = model.task.metrics()
        metrics = evaluate_batches(self._eval_forward, acc, batches, device, amp, merge=world.merge)
        if not math.isfinite(metrics["loss"]):  # the weights are broken: the run failed, whatever it logged
            raise TrainingError(f"nan: the validation loss became {metrics['loss']} at step {progress.step}; "
                                f"try a lower learning rate")
        ev = {"step": progress.step, "epoch": epoch, **{f"val_{k}": v for k, v in metrics.items()},
              "elapsed_s": progress.elapsed_s()}
        if getattr(acc, "samples", None):  # a text-to-text task: what the model wrote, beside the references
            ev["generations"] = list(acc.samples)
        progress.last_eval = ev
        self._emit("eval", ev)
        return ev

    # ----- finish ------------------------------------------------------------------------------
    def _summary_or_fail(self, setup: Setup, outcome: Outcome) -> dict:
        """The run's summary, its weights saved; a failure to save them ends the run as failed
        (the record says so) with a :class:`TrainingError`."""
        try:
            return self._summary(setup, outcome.status)
        except Exception as e:  # noqa: BLE001 - e.g. the disk filled while saving the weights
            said = str(e) if isinstance(e, TrainingError) else f"{type(e).__name__}: {e}"
            reason = f"{outcome.reason + '; then ' if outcome.reason else ''}saving the run failed: {said}"
            with contextlib.suppress(Exception):
                self.writer.finish("failed", reason, steps=self.progress.step)
            raise TrainingError(f"run {self.writer.name!r} failed: {reason}", self.run_record) from e

    def _summary(self, setup: Setup, status: str) -> dict:
        """What the run did and measured (a stopped run is evaluated where it stopped), with
        its weights saved unless it failed."""
        model, progress, device = self.model, self.progress, setup.device
        last = self._final_evaluation(setup) if status == "stopped" else progress.last_eval
        mem = progress.memory
        if mem is not None and device.type == "cuda":
            mem["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / memory.MB, 2)
        train_time, tokens = progress.train_time, progress.tokens
        summary = {"steps": progress.step, "samples": progress.samples,
                   "wall_time_s": progress.elapsed_s(),
                   "train_time_s": round(train_time, 3),
                   "samples_per_s": round(progress.samples / train_time, 2) if train_time else None,
                   "tokens_per_s": round(tokens / train_time, 1) if train_time and tokens else None,
                   "padding": (round(1 - tokens / progress.padded_tokens, 4) if progress.padded_tokens else None),
                   "memory": mem,
                   "peak_memory_mb": None if mem is None else mem.get("cuda_peak_mb", mem["total_mb"]),
                   "memory_kind": None if mem is None else ("cuda_max_allocated" if device.type == "cuda"
                                                            else "measured_tensors"),
                   "cache": progress.cache, "pooling": model.pooling}
        if last is not None:
            summary.update({k: v for k, v in last.items() if k.startswith("val_")})
        if self.config.save_weights and status != "failed" and progress.step > 0:
            summary["weights"] = self._save_weights()
        return summary

    def _final_evaluation(self, setup: Setup) -> Optional[dict]:
        """A stopped run's last evaluation: one more where it stopped, unless it has just
        evaluated (or trained no step, or runs on several processes)."""
        progress, last = self.progress, self.progress.last_eval
        if progress.validation is not None and progress.step > 0 and \
                (last is None or last["step"] != progress.step) and not self.world.distributed:
            try:
                last = self._evaluate(progress.validation, self.model.device, setup.amp, float("nan"))
            except Exception as e:  # noqa: BLE001 - a stopped run must still be recorded
                warnings.warn(f"final evaluation of the stopped run failed: {e}", stacklevel=2)
        return last

    def _save_weights(self) -> str:
        """Save what the run trained: the adapter, or the trained tensors; returns where."""
        model, writer = self.model, self.writer
        if model.peft is not None:
            with checkpointing_notice_quiet():  # peft's save alarms at a matrix AdaLoRA cut to rank 0
                writer.save_adapter(model.peft, hub_id(model.source) or model.source)
            return "adapter"
        writer.save_tensors("weights.safetensors", self._trained_tensors(canonical=True))
        return "weights.safetensors"

    def _finish_record(self, outcome: Outcome, summary: dict) -> dict:
        """Make the record final (``train_end`` logged, the summary, an adapter's card) on every
        process before any returns it, and name it in the model's history; returns the
        ``train_end`` payload."""
        writer, model = self.writer, self.model
        end = {"status": outcome.status, "reason": outcome.reason, **summary}
        writer.log("train_end", end)
        try:
            writer.finish(outcome.status, outcome.reason, **summary)  # final before any callback runs
        except TrainingError as e:  # the disk filled on the last write
            e.run = self.run_record
            raise
        if self.world.main and (writer.path / "adapter").is_dir():  # the card quotes the final summary
            write_card(self.run_record, writer.path / "adapter", adapter=True)
        self.world.barrier()  # the record is complete before any process returns it
        if self.run_record is None:
            self.run_record = Run(writer.path, model=model)
        model.history.append({"name": writer.name, "path": str(writer.path.resolve())})
        model.structure = []  # the record holds them now
        return end

    def _raise_failure(self, outcome: Outcome, run: Run) -> None:
        """Raise again what ended the run: an interrupt as it was, a failure as a :class:`TrainingError`."""
        error = outcome.error
        if isinstance(error, KeyboardInterrupt):
            raise error
        if outcome.status == "failed":
            if isinstance(error, TrainingError):
                error.run = run
                raise error
            raise TrainingError(f"run {self.writer.name!r} failed: {outcome.reason}", run) from error


def peak_lr(phase: Phase, config: TrainConfig) -> float:
    """The peak rate of ``phase`` as asked: its own, the config's (the highest of a rate per
    group), or its strategy's default."""
    if phase.lr is not None:
        return phase.lr
    if isinstance(config.lr, dict):
        return max(config.lr.values())
    return config.lr or phase.strategy.default_lr


@plain_arguments
def train(model: Model, data: Any, strategy: Any = None, config: Optional[TrainConfig] = None, *,
          callbacks: Optional[dict] = None, wrap: Optional[Callable[[nn.Module], nn.Module]] = None,
          **overrides) -> Run:
    """Train ``model`` on ``data`` with ``strategy`` and return the :class:`Run`.

    Keyword overrides set :class:`TrainConfig` fields, e.g. ``epochs=2, lr=1e-4``.
    The model is trained in place (``run.model`` is it). ``wrap``: see :class:`Trainer`.
    """
    return Trainer(model, data, strategy, config, callbacks, wrap=wrap, **overrides).run()


@plain_arguments
def compare(strategies: Sequence[Any], data: Any = "rotten_tomatoes", model: str = "minilm",
            config: Optional[TrainConfig] = None, *, task: str = "classification",
            task_options: Optional[dict] = None, callbacks: Optional[dict] = None, **overrides) -> list[Run]:
    """Train each strategy on a fresh copy of the same model, with the same data and seed.
    ``task_options``: a text-to-text task's options (``instruction``, ``chat_template``,
    ``generation``; see :func:`tunekit.load_model`).

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
    strategies = get_strategies(strategies)
    m = load_for(model, data, task, config.seed, task_options)
    for strategy in strategies:  # every strategy checked against the model before any trains
        for phase in strategy.phases():
            phase.strategy.plan(m)
    runs = []
    for i, strategy in enumerate(strategies):
        if i > 0:
            m = load_for(model, data, task, config.seed, task_options)
        try:
            runs.append(Trainer(m, data, strategy, config, callbacks).run())
        except TrainingError as e:
            warnings.warn(f"{strategy.label} failed: {e}", stacklevel=2)
            if e.run is not None:
                runs.append(e.run)
    return runs
