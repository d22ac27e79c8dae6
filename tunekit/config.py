"""Typed, validated configuration.

Every check names the field and the allowed range, so a typo in a notebook cell
fails at the line that made it, not twenty minutes into a run.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Optional

DEFAULT_RUNS_DIR = "./tunekit-runs"
SCHEDULES = ("constant", "linear", "cosine", "slanted_triangular", "one_cycle", "cosine_restarts", "wsd")
"""The learning-rate schedules (:mod:`tunekit.schedules` builds them; the last four from torch's
and transformers' own schedulers)."""
PRECISIONS = ("auto", "fp32", "bf16")


class TunekitError(Exception):
    """The base of every error tunekit raises for something a user can fix: catch this one
    to catch them all. The message names the parameter or file and what is allowed."""


class ConfigError(TunekitError, ValueError):
    """A parameter is outside its allowed range. The message names it."""


class RunRecordError(TunekitError, ValueError):
    """A run directory is missing or unreadable."""


class TrainingError(TunekitError, RuntimeError):
    """A run failed (non-finite loss, out of memory, a full disk ...). ``.run`` is its partial
    record (a :class:`~tunekit.runs.Run`) when one was written."""

    def __init__(self, message: str, run: Any = None):
        super().__init__(message)
        self.run = run


def plain(value: Any) -> Any:
    """``value`` with numpy scalars (``np.int64(8)``, ``np.float32(0.5)``, ``np.bool_``; a
    sweep over ``np.arange`` gives them) as the Python numbers they hold, also inside a list or
    tuple; anything else as it is. Checks then see a number, and records hold plain JSON."""
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        return value.item()
    if isinstance(value, (list, tuple)) and any(type(v).__module__ == "numpy" for v in value):
        return type(value)(plain(v) for v in value)
    return value


def plain_fields(obj: Any) -> None:
    """:func:`plain` on every field of a dataclass instance, in place (first thing in a
    ``__post_init__``)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        converted = plain(value)
        if converted is not value:
            object.__setattr__(obj, f.name, converted)


def plain_arguments(fn):
    """Decorate a public function so that it sees its arguments through :func:`plain`."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*(plain(a) for a in args), **{k: plain(v) for k, v in kwargs.items()})
    return wrapper


def finite_number(x) -> bool:
    """A real, finite number (not a bool, not nan or inf)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def require(ok: bool, where: str, allowed: str, got: Any) -> None:
    """Raise ``ConfigError("<where> must be <allowed> (got <got!r>)")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{where} must be {allowed} (got {got!r})")


def positive_int(where: str, value: Any) -> int:
    require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
            where, "a positive integer", value)
    return value


def optional_positive_int(where: str, value: Any) -> Optional[int]:
    return None if value is None else positive_int(where, value)


MAX_LABELS = 100_000
"""The most classes a classification head takes (a head per class: more is a mistake, such as an
id column passed as labels, that would fill the memory)."""

MAX_SEED = 2**63 - 1
"""The largest seed: torch's generators take 64 bits, and a run seeds its later phases and its
validation subset with ``seed + 1`` and more."""


def seed_value(where: str, value: Any) -> int:
    """A seed: an integer in 0 .. MAX_SEED."""
    require(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED,
            where, "an integer in 0 .. 2**63 - 1", value)
    return value


@dataclass
class TrainConfig:
    """How to train. Fields not set here fall back to the strategy's defaults.

    Any field can also be passed to :func:`tunekit.train` (and ``compare``) as a keyword.
    """

    epochs: int = 1
    """Passes over the (sub-sampled) training split; >= 1."""
    lr: Optional[float | dict] = None
    """Peak learning rate; None takes the strategy's default (probe 1e-2, freeze 2e-4, LoRA 1e-3,
    full 1e-4). A dict gives a rate per layer group (``{"head": 1e-3, "block.5": 3e-4}``, the
    groups of ``model.group_names``, and ``"prompt"`` for virtual tokens); a trained group it
    does not name takes the strategy's default."""
    lr_decay: Optional[float] = None
    """Discriminative rates: layer-wise decay in (0, 1] from the top down (ELECTRA, ULMFiT). The
    head (and anything above the blocks) trains at ``lr``, the top block at ``lr * lr_decay``,
    each block below at one more factor, the embeddings (and virtual tokens) at one more than
    the bottom block. None (or 1): one rate for all. Not with a dict ``lr``."""
    batch_size: int = 16
    """Training examples per step; >= 1."""
    eval_batch_size: int = 128
    """Examples per forward pass during evaluation; >= 1."""
    schedule: str = "linear"
    """Learning-rate schedule: constant, linear (decay to 0) or cosine after a linear warm-up;
    slanted_triangular (ULMFiT: up to the peak over ``warmup`` of the steps from 1/32 of it, then
    down to 1/32), one_cycle (Smith: cosine up over ``warmup`` from 1/25 of the peak, then cosine
    down to 1/10,000 of its start; the rate only, AdamW's betas stay), cosine_restarts
    (``cycles`` cosine decays after the warm-up, each from the peak) or wsd (warm-up, stable at
    the peak, then a cosine decay to 0 over the last ``cooldown`` of the steps)."""
    warmup: float = 0.1
    """Fraction of all steps spent warming up linearly from 0 (one_cycle and slanted_triangular:
    rising to the peak), in [0, 1)."""
    cycles: int = 3
    """cosine_restarts: how many cosine decays (>= 1)."""
    cooldown: float = 0.2
    """wsd: the fraction of all steps of the final decay, in (0, 1]; warm-up + cool-down <= 1."""
    weight_decay: float = 0.01
    """AdamW weight decay, >= 0."""
    grad_clip: Optional[float] = 1.0
    """Clip the global gradient norm to this value (> 0); None turns clipping off."""
    seed: int = 0
    """Seeds shuffling, dropout and sub-sampling. The same seed gives the same run on the CPU."""
    max_length: int = 128
    """Tokens per example after truncation; batches are padded only to their longest example."""
    train_size: Optional[int] = None
    """Train on a seeded random subset of this many examples; None uses the whole split."""
    eval_size: Optional[int] = None
    """Evaluate on a seeded subset of this many validation examples; None uses all of them."""
    evals_per_epoch: int = 4
    """Validation passes per epoch (the last one at the epoch's end); >= 1."""
    device: Optional[str] = None
    """'cuda', 'mps', 'cpu' (or 'cuda:1'); None picks cuda, then mps, then cpu."""
    precision: str = "auto"
    """auto (bf16 autocast on CUDA and on a CPU with AMX / AVX-512-BF16, fp32 elsewhere), fp32
    or bf16. Autocast keeps the master weights (and the optimizer) in fp32; the record says
    which precision ran and why."""
    group_by_length: bool = True
    """Batch examples of similar length together (seeded; shuffled mega-batches of ~50
    batches, each sorted by length), so that batches pad less. False: plain shuffling."""
    log_every: Optional[int] = None
    """Read the loss back (a ``step`` event, a point on the curve) every this many steps, with
    the mean loss since the last one; None: every step on the CPU, every 10 on a GPU (where
    each read waits for the device)."""
    compile: bool = False
    """Run the task module through ``torch.compile`` (the first steps pay for compiling)."""
    cache_budget_mb: float = 4096.0
    """The most memory a frozen-prefix cache may take (the probe's features, or the hidden
    states after frozen bottom blocks); a larger cache falls back to recomputing, and says so."""
    runs_dir: str = DEFAULT_RUNS_DIR
    """Where run records are written; one sub-directory per run."""
    name: Optional[str] = None
    """Run name (sanitised); None makes one from the strategy and a timestamp."""
    save_weights: bool = True
    """Write the changed weights (or the LoRA adapter) into the run record."""
    snapshots: int = 0
    """Keep the trained tensors at this many evenly spaced points of the run, the start and the
    end included (2 .. 1000; 0: none). The start and the end are the record's own; each point
    between is one safetensors file in the record's ``snapshots/`` (its size and the time it took
    are in the summary), which ``run.load_model(step=...)`` and the instruments read."""
    progress: bool = True
    """Show a tqdm progress bar (notebook-aware)."""

    def __post_init__(self) -> None:
        plain_fields(self)
        positive_int("epochs", self.epochs)
        if isinstance(self.lr, dict):
            require(len(self.lr) > 0 and all(isinstance(k, str) for k in self.lr), "lr",
                    "a positive number, or a dict {layer group: positive number} naming at least one group",
                    self.lr)
            self.lr = {k: plain(v) for k, v in self.lr.items()}
            for group, rate in self.lr.items():
                require(finite_number(rate) and rate > 0, f"lr[{group!r}]", "a positive number", rate)
        elif self.lr is not None:
            require(finite_number(self.lr) and self.lr > 0, "lr",
                    "a positive number, or a dict {layer group: positive number}", self.lr)
        if self.lr_decay is not None:
            require(finite_number(self.lr_decay) and 0 < self.lr_decay <= 1, "lr_decay",
                    "a number in (0, 1] (the factor per layer group from the top down) or None", self.lr_decay)
            require(not isinstance(self.lr, dict), "lr_decay",
                    "None when lr gives a rate per group (the dict's rates are used as they are)", self.lr_decay)
        positive_int("batch_size", self.batch_size)
        positive_int("eval_batch_size", self.eval_batch_size)
        require(self.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}", self.schedule)
        require(finite_number(self.warmup) and 0 <= self.warmup < 1, "warmup", "in [0, 1)", self.warmup)
        require(isinstance(self.cycles, int) and not isinstance(self.cycles, bool) and 1 <= self.cycles <= 1000,
                "cycles", "an integer in 1 .. 1000 (cosine_restarts' decays)", self.cycles)
        require(finite_number(self.cooldown) and 0 < self.cooldown <= 1, "cooldown", "in (0, 1]", self.cooldown)
        if self.schedule == "wsd":
            require(self.warmup + self.cooldown <= 1, "cooldown",
                    f"at most 1 - warmup = {1 - self.warmup:g} with schedule='wsd' (the stable part "
                    f"between them cannot be negative)", self.cooldown)
        require(finite_number(self.weight_decay) and self.weight_decay >= 0,
                "weight_decay", ">= 0", self.weight_decay)
        if self.grad_clip is not None:
            require(finite_number(self.grad_clip) and self.grad_clip > 0,
                    "grad_clip", "a positive number or None", self.grad_clip)
        self.seed = seed_value("seed", self.seed)
        positive_int("max_length", self.max_length)
        optional_positive_int("train_size", self.train_size)
        optional_positive_int("eval_size", self.eval_size)
        positive_int("evals_per_epoch", self.evals_per_epoch)
        require(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}", self.precision)
        require(isinstance(self.group_by_length, bool), "group_by_length", "True or False", self.group_by_length)
        optional_positive_int("log_every", self.log_every)
        require(isinstance(self.snapshots, int) and not isinstance(self.snapshots, bool)
                and (self.snapshots == 0 or 2 <= self.snapshots <= 1000), "snapshots",
                "0 (none) or an integer in 2 .. 1000 (the start and the end count)", self.snapshots)
        require(isinstance(self.compile, bool), "compile", "True or False", self.compile)
        require(finite_number(self.cache_budget_mb) and self.cache_budget_mb >= 0,
                "cache_budget_mb", "a number >= 0", self.cache_budget_mb)
        require(self.device is None or isinstance(self.device, str),
                "device", "None or a string such as 'cpu' or 'cuda'", self.device)
        require(isinstance(self.runs_dir, (str, os.PathLike)), "runs_dir", "a path", self.runs_dir)
        self.runs_dir = os.fspath(self.runs_dir)
        require(isinstance(self.runs_dir, str) and self.runs_dir.strip() != "" and "\x00" not in self.runs_dir,
                "runs_dir", "a folder's path (not empty, no NUL byte)", self.runs_dir)
        if self.runs_dir.startswith("~") and os.path.expanduser(self.runs_dir) == self.runs_dir:
            raise ConfigError(f"runs_dir must be a folder's path; {self.runs_dir.split(os.sep)[0]!r} names no "
                              f"user's home (got {self.runs_dir!r})")

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {sorted(unknown)}; "
                              f"known: {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
