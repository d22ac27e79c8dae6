"""Discriminative learning rates: the peak rate of every layer group a phase trains.

One rate for all (``lr``), a layer-wise decay from the top down (``lr_decay``, as ELECTRA and
ULMFiT train), or a rate per group named by the user (``lr={"head": 1e-3, "block.5": 3e-4}``).
The engine gives each of the optimizer's groups its rate from :func:`group_rates`; the record
keeps them per phase, and :func:`tunekit.learning_rates` draws them before training from the
same function.
"""
from __future__ import annotations

from typing import Optional, Sequence

from tunekit.config import ConfigError
from tunekit.models import Model

ABOVE = 0
"""The depth of what sits above the blocks (the head, BERT's pooler, a final norm)."""


def depth(model: Model, group: str) -> int:
    """How many factors of ``lr_decay`` ``group``'s rate takes: 0 above the blocks, 1 for the
    top block, one more per block down, and one more than the bottom block for the embeddings
    and virtual tokens (both feed the first block)."""
    if group.startswith("block."):
        return model.num_blocks - int(group.split(".")[1])
    if group in ("embeddings", "prompt"):
        return model.num_blocks + 1
    return ABOVE


def known_groups(model: Model) -> list[str]:
    """The names a rate per group may use: the model's layer groups, and ``prompt``."""
    return list(model.group_names) + ["prompt"]


def check_named_groups(model: Model, lr: dict) -> None:
    """A ConfigError naming the groups of a per-group ``lr`` that ``model`` does not have."""
    unknown = [g for g in lr if g not in known_groups(model)]
    if unknown:
        raise ConfigError(f"lr names layer group(s) {unknown} that this model does not have; its groups "
                          f"are {known_groups(model)}")


def group_rates(model: Model, trained: Sequence[str], lr: Optional[float | dict], default: float,
                decay: Optional[float] = None) -> dict[str, float]:
    """``{group: peak rate}`` for the layer groups ``trained`` (in their order): ``lr`` (or
    ``default`` where it is None) for all; with a decay, the topmost group trained at that rate
    and each one below it one factor of ``decay`` per step of :func:`depth` lower (a strategy
    that trains one group trains it at ``lr``); with a dict ``lr``, each group its rate,
    ``default`` where it names none."""
    trained = list(dict.fromkeys(trained))
    if isinstance(lr, dict) and decay is not None:
        raise ConfigError("lr gives a rate per group and a layer-wise decay is set too (lr_decay, or "
                          "Discriminative): give one of them")
    if isinstance(lr, dict):
        check_named_groups(model, lr)
        return {g: float(lr.get(g, default)) for g in trained}
    base = float(lr if lr is not None else default)
    if decay is None or decay == 1:
        return {g: base for g in trained}
    top = min((depth(model, g) for g in trained), default=ABOVE)
    return {g: base * decay ** (depth(model, g) - top) for g in trained}
