"""What every strategy is: a declaration of what trains, applied by the engine.

A strategy is a small dataclass. The engine asks it for its :class:`Phase` list
(one phase for most; LP-FT has two), and for each phase for a :class:`~tunekit.models.Plan`
(it lives beside the model it is applied to, so that models never import strategies):

* ``train``: the layer groups whose parameters train (everything else is frozen), or
* ``adapter``: a peft config; the engine wraps the model with it (peft then trains the
  adapter and the modules it names in ``modules_to_save``, such as a new head);
* ``cached_features``: train the head alone on features computed once (a probe);
* ``pooling``: the pooling the head reads (a probe may choose one);
* ``fake_quant``: weight bits to fake-quantize the block Linear layers at while they
  train (quantization-aware training), or None.

A strategy never changes the model it is shown: :meth:`Strategy.plan` and
:meth:`Strategy.count` only read it. :meth:`Strategy.param_groups` gives the
optimizer's parameter groups (one learning rate by default; discriminative learning
rates override this).

Adding a strategy is one file plus one registry line in ``strategies/__init__.py``.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import ClassVar, Optional

from tunekit import adapters
from tunekit.adapters import counts  # noqa: F401 - strategies count with it too
from tunekit.config import ConfigError
from tunekit.models import Model, Plan  # noqa: F401 - Plan: a strategy's declaration, kept beside the model it adapts


@dataclass
class Phase:
    """One stretch of training with one strategy.

    ``epochs=None`` takes ``TrainConfig.epochs``; ``lr=None`` takes
    ``TrainConfig.lr`` or, if that is unset too, the strategy's default. ``steps``: exactly
    this many optimizer steps (crossing epochs where it is more than one), instead of epochs.
    ``lr_decay``: this phase's layer-wise decay (:class:`~tunekit.strategies.discriminative.
    Discriminative` sets it), instead of ``TrainConfig.lr_decay``.
    """

    strategy: "Strategy"
    epochs: Optional[int] = None
    lr: Optional[float] = None
    steps: Optional[int] = None
    lr_decay: Optional[float] = None


class _Parameters(type):
    """The strategies' metaclass: a keyword the strategy does not have, or more positional
    arguments than it takes, is a :class:`ConfigError` that names it and lists the strategy's
    parameters (``tk.DoRA(tokens=4)``), where Python's own TypeError would name neither in a
    user's terms. ``targets=`` is another name for ``target_modules=`` (peft's word, the one a
    record keeps). Everything else is the dataclass's own ``__init__``."""

    def __call__(cls, *args, **kwargs):
        if dataclasses.is_dataclass(cls):
            names = [f.name for f in dataclasses.fields(cls) if f.init]
            if "targets" in kwargs and "target_modules" in names:
                if "target_modules" in kwargs:
                    raise ConfigError(f"{cls.__name__}: give targets or target_modules (the same thing), not both")
                kwargs["target_modules"] = kwargs.pop("targets")
            unknown = [k for k in kwargs if k not in names]
            if unknown:
                raise ConfigError(f"{cls.__name__} has no parameter {', '.join(map(repr, unknown))}; "
                                  f"its parameters are {names}")
            if len(args) > len(names):
                raise ConfigError(f"{cls.__name__} takes at most {len(names)} positional arguments "
                                  f"({', '.join(names)}), got {len(args)}")
            twice = [k for k in names[:len(args)] if k in kwargs]
            if twice:
                raise ConfigError(f"{cls.__name__}: {', '.join(map(repr, twice))} given both by position "
                                  f"and by name")
        return super().__call__(*args, **kwargs)


class Strategy(metaclass=_Parameters):
    """Base class. Subclasses are dataclasses and set ``name`` and ``default_lr``."""

    name: ClassVar[str] = "strategy"
    default_lr: ClassVar[float] = 1e-4

    def phases(self) -> list[Phase]:
        return [Phase(self)]

    def phases_for(self, model: Model, steps_per_epoch: int, epochs: int) -> list[Phase]:
        """The phases of a run on ``model`` of ``epochs`` epochs of ``steps_per_epoch`` optimizer
        steps (the engine asks once the data is batched): :meth:`phases` for most strategies;
        gradual unfreezing divides the run's steps among its stages."""
        return self.phases()

    def plan(self, model: Model) -> Plan:
        """What trains on ``model`` (validated against it; the model is not changed)."""
        raise NotImplementedError

    def scheduled(self, model: Model, plan: Plan, steps: int) -> Plan:
        """The plan for a phase of ``steps`` optimizer steps, from the ``plan`` made for ``model``
        (the engine asks once the data is batched). Most strategies do not depend on the length
        of training: ``plan`` as it is. AdaLoRA's rank schedule does."""
        return plan

    def count(self, model: Model) -> dict:
        """Trainable / total parameters this strategy *will* give ``model``, without changing it."""
        plan = self.plan(model)
        if plan.adapter is not None:
            return adapters.count(model.hf, plan.adapter)
        return group_counts(model, set(plan.train))

    def prepare(self, model: Model) -> None:
        """Deprecated (tunekit 0.1): apply this strategy to ``model``; use ``model.adapt(strategy)``."""
        warnings.warn("Strategy.prepare(model) is deprecated: strategies now declare a Plan; use "
                      "model.adapt(strategy)", DeprecationWarning, stacklevel=2)
        model.adapt(self)

    def param_groups(self, model: Model, lr: float, weight_decay: float) -> list[dict]:
        """AdamW parameter groups over the trainable parameters only, two per layer group
        (``"group"``: its name; biases and norms get no weight decay), each at ``lr``; the
        engine then gives each layer group its own rate where the config asks for it
        (:func:`tunekit.rates.group_rates`)."""
        by_group: dict[str, tuple[list, list]] = {}
        for name, p in model.module.named_parameters():  # the task module: the model, and virtual tokens if any
            if p.requires_grad:
                decay, no_decay = by_group.setdefault(parameter_group(model, name), ([], []))
                (no_decay if p.ndim < 2 else decay).append(p)
        return [g for group, (decay, no_decay) in by_group.items()
                for g in ({"params": decay, "lr": lr, "weight_decay": weight_decay, "group": group},
                          {"params": no_decay, "lr": lr, "weight_decay": 0.0, "group": group}) if g["params"]]

    def describe(self) -> dict:
        """Plain data that recreates the strategy with :func:`tunekit.strategies.get_strategy`."""
        d = {"name": self.name}
        if dataclasses.is_dataclass(self):
            for f in dataclasses.fields(self):
                v = getattr(self, f.name)
                d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @property
    def label(self) -> str:
        """Short human-readable label, e.g. ``lora-r8``."""
        return self.name


def phase_steps(phases: list[Phase], steps_per_epoch: int, epochs: int) -> list[int]:
    """The optimizer steps of each phase: its ``steps``, or its epochs (``epochs`` where it has
    none) of ``steps_per_epoch`` steps. The engine, the planned learning rates and the lab's
    progress all count with this."""
    return [ph.steps if ph.steps is not None else steps_per_epoch * (ph.epochs or epochs) for ph in phases]


def parameter_group(model: Model, name: str) -> str:
    """The layer group of the task module's parameter ``name``: the Hugging Face model's own
    (``hf.*``), ``prompt`` for virtual tokens."""
    if name.startswith("prompt."):
        return "prompt"
    return model.group_of(name[3:] if name.startswith("hf.") else name)


def group_counts(model: Model, train: set[str]) -> dict:
    by = model.parameter_counts()["by_group"]
    train = set(train) & set(model.active_groups)
    return counts(sum(v["total"] for g, v in by.items() if g in train), sum(v["total"] for v in by.values()))


def needs_classification(model: Model, who: str) -> None:
    if model.task.name != "classification":
        raise ConfigError(f"{who} trains a classification head on frozen features; this model's task is "
                          f"{model.task.name!r} (use Freeze, LoRA, IA3 or Full)")
