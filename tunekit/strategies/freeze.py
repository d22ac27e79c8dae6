"""Freeze any subset of the layer groups; train the rest.

In the spirit of fastai's ``freeze_to``: ``Freeze.top(2)`` trains the top two
blocks plus everything above them (pooler / final norm and head),
``Freeze(train_blocks=[4, 5])`` the same by block index, and
``Freeze(frozen=["embeddings", "block.2"])`` freezes just those groups - middle
blocks included.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from tunekit.config import ConfigError, plain_fields
from tunekit.strategies.base import Plan, Strategy
from tunekit.strategy_registry import DEFAULT_LR


@dataclass
class Freeze(Strategy):
    """Train some layer groups, freeze the others.

    Give exactly one of:
        train: the groups to train (e.g. ``["block.5", "pooler", "head"]``).
        frozen: the groups to freeze; all others train.
        train_blocks: block indices to train; the groups above the blocks
            (pooler / norm, head) train too. Negative indices count from the top;
            ``[]`` trains only the groups above the blocks (``Freeze.top(0)``,
            labelled ``freeze-top0``).
    """

    train: Optional[Sequence[str]] = None
    frozen: Optional[Sequence[str]] = None
    train_blocks: Optional[Sequence[int]] = None

    name = "freeze"
    default_lr = DEFAULT_LR["freeze"]
    lab_label = "Freeze layers"  # what the lab's strategy picker calls it

    def __post_init__(self) -> None:
        plain_fields(self)
        given = [k for k in ("train", "frozen", "train_blocks") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"Freeze takes exactly one of train=, frozen=, train_blocks= (got {given or 'none'})")
        for k in given:
            v = getattr(self, k)
            if isinstance(v, (str, int)):
                v = [v]
            if not isinstance(v, (list, tuple, range)):
                what = "block indices" if k == "train_blocks" else "layer group names"
                raise ConfigError(f"Freeze.{k} must be a list of {what} (got {v!r})")
            setattr(self, k, tuple(v))
        if self.train_blocks is not None and not all(isinstance(b, int) and not isinstance(b, bool)
                                                     for b in self.train_blocks):
            raise ConfigError(f"Freeze.train_blocks must be block indices (got {list(self.train_blocks)!r})")
        for k in ("train", "frozen"):
            v = getattr(self, k)
            if v is not None and not all(isinstance(g, str) and g for g in v):
                raise ConfigError(f"Freeze.{k} must be layer group names such as 'block.5' or 'head' (got {list(v)!r})")

    @classmethod
    def top(cls, k: int) -> "Freeze":
        """Train the top ``k`` blocks and everything above them (fastai's "train the top k")."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ConfigError(f"Freeze.top(k): k must be an integer >= 0 (got {k!r})")
        return cls(train_blocks=tuple(range(-k, 0)))

    def trainable_groups(self, model) -> list[str]:
        """The groups that train on ``model``; raises ConfigError for unknown names or indices."""
        names = model.group_names
        if self.train_blocks is not None:
            n = model.num_blocks
            bad = [b for b in self.train_blocks if not -n <= b < n]
            if bad:
                raise ConfigError(f"Freeze.train_blocks: block index(es) {bad} out of range; "
                                  f"the model has blocks 0..{n - 1} (or -{n}..-1)")
            blocks = {f"block.{b % n}" for b in self.train_blocks}
            top = [g for g in names[names.index(f"block.{n - 1}") + 1:] if g in model.active_groups]
            chosen = blocks | set(top)
        else:
            listed = self.train if self.train is not None else self.frozen
            unknown = [g for g in listed if g not in names]
            if unknown:
                field = "train" if self.train is not None else "frozen"
                raise ConfigError(f"Freeze.{field}: unknown layer group(s) {unknown}; "
                                  f"the model's groups are {names}")
            chosen = set(listed) if self.train is not None else set(names) - set(listed)
            chosen &= set(model.active_groups)
        if not chosen:
            raise ConfigError(f"Freeze: nothing left to train ({self.label}); train at least one of {names}")
        return [g for g in names if g in chosen]

    def plan(self, model) -> Plan:
        return Plan(train=tuple(self.trainable_groups(model)))

    @property
    def label(self) -> str:
        if self.train_blocks is not None:
            k = len(self.train_blocks)
            if sorted(self.train_blocks) == list(range(-k, 0)):  # [] is top(0): only what sits above the blocks
                return f"freeze-top{k}"
            return "freeze-train-" + "-".join(str(b) if b >= 0 else f"m{-b}" for b in self.train_blocks)
        if self.train is not None:
            return "freeze-train-" + "-".join(self.train)
        return "freeze-" + ("-".join(self.frozen) or "none")
