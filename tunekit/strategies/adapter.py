"""The shared path of every peft method: targets, heads, validation and the plan.

A peft strategy (LoRA, IA3) only says which peft config it builds; finding the
layers, refusing targets that match nothing, training a new classification head in
full (peft's ``modules_to_save``) and counting exactly as peft does are done here
once. The default targets come from peft's own per-architecture tables; for a family
peft has no entry for (DistilBERT) they come from tunekit's canonical module labels
(``query``, ``value`` ...).
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import nn

from tunekit import adapters
from tunekit.architectures import default_targets, in_out, module_label
from tunekit.config import ConfigError, finite_number, require
from tunekit.strategies.base import Plan, Strategy


def as_names(value, where: str) -> Optional[tuple[str, ...]]:
    """None, a name or a list of names -> a non-empty tuple (or None)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ConfigError(f"{where} must be a non-empty list of module names or None (got {value!r})")
    value = tuple(value)
    require(len(value) > 0 and all(isinstance(v, str) and v for v in value), where,
            "a non-empty list of module names or None", list(value))
    return value


class AdapterStrategy(Strategy):
    """Base of the peft strategies. Subclasses set ``peft_table`` (the name of peft's
    default-target table), ``default_labels`` and implement :meth:`peft_config`."""

    peft_table = ""
    default_labels: tuple[str, ...] = ()
    rank_field = "rank"
    """The parameter that the lab's rank box and the command line's ``NAME:RANK`` set."""
    rank_words = "rank"
    """What the lab's rank box is called for this method (after its name)."""
    target_modules: Optional[Sequence[str]] = None

    def default_target_names(self, model, table: str = "", labels: tuple[str, ...] = ()) -> list[str]:
        import peft.utils.constants as constants
        table, labels = table or self.peft_table, labels or self.default_labels
        found = default_targets(model.hf.config.model_type, getattr(constants, table, {}),
                                model.backbone.block_layer_paths(), labels)
        if not found:
            raise ConfigError(f"{type(self).__name__} has no default target modules for model type "
                              f"{model.hf.config.model_type!r}; pass {type(self).__name__}(target_modules=[...]) "
                              f"with names of {self._available(model)}")
        return found

    def _available(self, model) -> str:
        paths = model.backbone.block_layer_paths()
        return "layers such as " + ", ".join(f"{p} ({module_label(p)})" if module_label(p) != p else p
                                             for p in paths)

    def targets(self, model, names: Optional[Sequence[str]] = None, where: str = "target_modules"
                ) -> dict[str, nn.Module]:
        """The layers (inside the base model) that ``names`` select, by name; each name must
        select at least one (peft's matching: the name or a dotted suffix of it)."""
        names = list(names or self.target_modules or self.default_target_names(model))
        inside = adapters.adaptable_layers(model.hf, model.backbone.base_prefix)
        hits = adapters.match(inside, names)
        missing = [t for t, found in hits.items() if not found]
        if missing:
            raise ConfigError(f"{type(self).__name__}.{where}: {missing} match no layer that peft can adapt "
                              f"in {type(model.hf).__name__}; {self._available(model)}")
        return {n: inside[n] for found in hits.values() for n in found}

    def check_rank_fits(self, layers: dict, field: str = "rank") -> None:
        """The rank parameter ``field`` at most the smallest dimension of the target ``layers``
        (from :meth:`targets`)."""
        smallest = min(min(in_out(m)) for m in layers.values())
        rank = getattr(self, field)
        require(rank <= smallest, f"{type(self).__name__}.{field}",
                f"at most {smallest} (the smallest dimension of the target layers)", rank)

    @staticmethod
    def peft_names(model, layers: Sequence[str], asked: Sequence[str]) -> list[str]:
        """What to tell peft: the names as asked when, matched over the whole model, they
        select exactly ``layers``; else the full layer names (so that a short name never
        reaches into the head)."""
        everywhere = adapters.adaptable_layers(model.hf, "")
        selected = {n for found in adapters.match(everywhere, asked).values() for n in found}
        return sorted(asked) if selected == set(layers) else sorted(layers)

    @staticmethod
    def transposed(layers: dict) -> bool:
        """peft's ``fan_in_fan_out``: True when the layers store their weight as ``[in, out]``
        (transformers' Conv1D, GPT-2)."""
        return any(not isinstance(m, nn.Linear) for m in layers.values())

    def linear_only(self, model, layers: dict) -> None:
        """Refuse, in words, target layers that are not ``nn.Linear`` for a peft method that
        adapts only those (LoHa and LoKr: not transformers' Conv1D, GPT-2's layers)."""
        other = sorted(n for n, m in layers.items() if not isinstance(m, nn.Linear))
        if other:
            kind = type(layers[other[0]]).__name__
            who = type(self).__name__
            raise ConfigError(f"{who} is not available for {model.hf.config.model_type!r} models: peft's "
                              f"{who} adapts nn.Linear layers only, and {other[0]} is a {kind} "
                              f"(use LoRA, DoRA, VeRA or IA3 on this family)")

    def check_rank(self) -> None:
        """``rank`` an integer >= 1 and ``alpha`` (None: the rank) a finite number > 0."""
        who = type(self).__name__
        require(isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1,
                f"{who}.rank", "an integer >= 1", self.rank)
        if self.alpha is None:
            self.alpha = self.rank
        require(finite_number(self.alpha) and self.alpha > 0, f"{who}.alpha", "a finite number > 0", self.alpha)

    def head_modules(self, model) -> list[str]:
        """Modules trained in full next to the adapter: a classification task's new head."""
        if model.task.name != "classification":
            return []
        prefix = model.hf.base_model_prefix
        return [n for n, m in model.hf.named_children() if n != prefix and any(True for _ in m.parameters())]

    def peft_config(self, model):
        raise NotImplementedError

    def plan(self, model) -> Plan:
        if model.peft is not None:
            raise ConfigError("this model already carries an adapter; for another adapter on top, fold it in "
                              "first (run.load_model(merged=True)), or load a fresh model (tk.load_model)")
        return Plan(adapter=self.peft_config(model))

    def peft_task_type(self, model):
        from peft import TaskType
        return TaskType[model.task.peft_task_type]
