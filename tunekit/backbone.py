"""The task-agnostic part of a model: the Hugging Face model, its tokenizer, named layer groups,
exact parameter counts and freezing.

The parameters are sorted into ordered, named *layer groups*: ``embeddings``,
``block.0`` ... ``block.N-1``, whatever sits above the blocks (``pooler`` for BERT,
``norm`` for Llama's final norm) and ``head`` (everything outside the base model:
a classifier, a ``score`` layer, an ``lm_head``). Strategies name these groups.

An encoder-decoder (T5, BART, Marian) has two stacks: its groups are ``block.0`` ...
``block.E-1`` for the encoder's blocks and ``block.E`` ... ``block.E+D-1`` for the decoder's,
in the order the input flows (so "the bottom k blocks" and "the top k blocks" keep their
meaning); :meth:`Backbone.side` says which stack a block is in, and its index there.

Names are *canonical*: a parameter's name in the plain Hugging Face model, also
once peft has injected an adapter (:class:`tunekit.adapters.Layout` reads peft's
structure; no name is parsed).
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence

from torch import nn

from tunekit import adapters
from tunekit.architectures import block_layers, find_blocks, module_label
from tunekit.config import ConfigError

_POSITIONS_AFTER_PADDING = ("roberta", "xlm-roberta", "camembert", "longformer")
"""Model types whose position ids start after the padding index (fairseq's convention)."""


class Backbone:
    """A Hugging Face model with its tokenizer and layer groups.

    Attributes:
        hf: the Hugging Face model (peft injects adapter layers into it in place).
        tokenizer: the matching tokenizer.
        peft: the ``peft.PeftModel`` once an adapter is attached (for saving), else None.
        groups: ordered ``{group name: [canonical parameter-name prefixes]}``.
        num_blocks: number of transformer blocks.
        blocks_path: where the blocks are inside the base model (``encoder.layer``, ``layers``);
            ``blocks_prefix``: the same inside ``hf``, with a dot (``bert.encoder.layer.``).
    """

    def __init__(self, hf: nn.Module, tokenizer):
        self.hf = hf
        self.tokenizer = tokenizer
        self.peft = None
        self._layout: Optional[adapters.Layout] = None
        self._find_groups()

    @property
    def encoder_decoder(self) -> bool:
        """True for an encoder-decoder (two stacks of blocks: T5, BART, Marian)."""
        return bool(getattr(self.hf.config, "is_encoder_decoder", False))

    def side(self, index: int) -> tuple[str, int]:
        """``("encoder" | "decoder", index in that stack)`` of block ``index``; ``("block", index)``
        for a model with one stack."""
        if not self.encoder_decoder:
            return "block", index
        return ("encoder", index) if index < self.encoder_blocks else ("decoder", index - self.encoder_blocks)

    def block_title(self, index: int) -> str:
        """How a view names block ``index``: ``"block 3"``, or ``"encoder 3"`` / ``"decoder 1"``."""
        where, i = self.side(index)
        return f"{where} {i}"

    def _find_stacks(self) -> None:
        """The groups of an encoder-decoder: its embeddings (shared, positions, the norms below the
        blocks), the encoder's blocks then the decoder's, the final norms above them, the head."""
        hf, base = self.hf, self.hf.base_model
        prefix = "" if base is hf else f"{hf.base_model_prefix}."
        where = {id(m): n for n, m in base.named_modules()}
        groups: dict[str, list[str]] = {"embeddings": []}
        prefixes, norms, counts, paths = [], [], [], []
        for stack in (hf.get_encoder(), hf.get_decoder()):
            stack_path = where[id(stack)]
            path, blocks = find_blocks(stack)
            prefixes += [f"{prefix}{stack_path}.{path}.{i}." for i in range(len(blocks))]
            counts.append(len(blocks))
            paths.append(f"{stack_path}.{path}")
            seen = False
            for child, mod in stack.named_children():
                if child == path.split(".")[0]:
                    seen = True
                elif seen and any(True for _ in mod.parameters()):
                    norms.append(f"{prefix}{stack_path}.{child}.")
        groups.update({f"block.{i}": [p] for i, p in enumerate(prefixes)})
        if norms:
            groups["norm"] = norms
        out = hf.get_output_embeddings()
        head = next((n for n, m in hf.named_modules() if m is out), None)
        tied = out is not None and out.weight is hf.get_input_embeddings().weight
        groups["head"] = [f"{head}."] if head and not tied else []
        self.groups = groups
        self.num_blocks = len(prefixes)
        self.encoder_blocks = counts[0]
        self.stack_paths = tuple(paths)
        self.block_prefixes = prefixes
        self.blocks_path = None  # two stacks: no one list of blocks to swap or cut
        self.blocks_prefix = None
        self.base_prefix = prefix

    def _find_groups(self) -> None:
        if self.encoder_decoder:
            return self._find_stacks()
        prefix = self.hf.base_model_prefix
        base = self.hf.base_model
        blocks_path, blocks = find_blocks(base)
        blocks_prefix = f"{prefix}.{blocks_path}"
        groups: dict[str, list[str]] = {"embeddings": []}
        groups.update({f"block.{i}": [f"{blocks_prefix}.{i}."] for i in range(len(blocks))})
        above: dict[str, list[str]] = {}
        seen_blocks = False
        for child, mod in base.named_children():
            if not any(True for _ in mod.parameters()):
                continue
            if blocks_path == child or blocks_path.startswith(child + "."):
                seen_blocks = True
                for sub, _ in mod.named_parameters():  # parameters beside the block list, same container
                    full = f"{child}.{sub}"
                    if not full.startswith(blocks_path + "."):
                        above.setdefault("norm", []).append(f"{prefix}.{full}")
                continue
            key = f"{prefix}.{child}."
            if not seen_blocks:
                groups["embeddings"].append(key)
            else:
                above.setdefault("pooler" if "pool" in child else "norm", []).append(key)
        groups.update(above)
        groups["head"] = []  # everything outside the base model
        self.groups = groups
        self.num_blocks = len(blocks)
        self.encoder_blocks = len(blocks)
        self.blocks_path = blocks_path
        self.blocks_prefix = blocks_prefix + "."
        self.block_prefixes = [f"{blocks_prefix}.{i}." for i in range(len(blocks))]
        self.base_prefix = prefix + "."

    # ----- the blocks --------------------------------------------------------------------------------
    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, read from the model now (after pruning or a student's
        subset they are the blocks it has). An encoder-decoder's: the encoder's then the
        decoder's, in a ModuleList made to read them (setting an item there changes nothing)."""
        if self.encoder_decoder:
            base = self.hf.base_model
            return nn.ModuleList([b for path in self.stack_paths for b in base.get_submodule(path)])
        return self.hf.base_model.get_submodule(self.blocks_path)

    def block_layers(self, labels: Optional[tuple[str, ...]] = None,
                     types: Optional[tuple[type, ...]] = None) -> list[tuple[str, nn.Module]]:
        """``(name in hf, layer)`` of every layer inside the blocks of ``types`` (default: Linear
        and Conv1D) whose canonical label is in ``labels`` (default: all), block by block."""
        return [(f"{self.block_prefixes[i]}{path}", layer) for i, block in enumerate(self.blocks)
                for path, layer in block_layers(block, labels, types)]

    # ----- adapters --------------------------------------------------------------------------------
    @property
    def layout(self) -> adapters.Layout:
        """Canonical name and role of every parameter (recomputed after an adapter is attached)."""
        if self._layout is None:
            self._layout = adapters.Layout.of(self.hf)
        return self._layout

    def attach(self, peft_model) -> None:
        """Record that peft has wrapped ``hf`` (``peft_model`` is the ``PeftModel``)."""
        if self.peft is not None:
            raise ConfigError("this model already carries an adapter; load a fresh model "
                              "(tk.load_model) for another adapter run")
        self.peft = peft_model
        self._layout = None

    @property
    def peft_config(self):
        return None if self.peft is None else self.peft.peft_config["default"]

    # ----- names and groups ------------------------------------------------------------------------
    @property
    def group_names(self) -> list[str]:
        return list(self.groups)

    def canonical(self, name: str) -> str:
        """The parameter's name in the plain Hugging Face model."""
        return self.layout.canonical(name)

    def group_of(self, name: str) -> str:
        """The layer group of a parameter (raw or canonical name)."""
        name = self.canonical(name)
        for group, prefixes in self.groups.items():
            if any(name.startswith(p) for p in prefixes):
                return group
        if name.startswith(self.base_prefix):
            return "embeddings"
        return "head"

    def locate(self, name: str) -> tuple[str, Optional[int], str]:
        """(group, block index or None, module label) of a canonical parameter name."""
        group = self.group_of(name)
        if not group.startswith("block."):
            return group, None, group
        path = name[len(self.groups[group][0]):].rsplit(".", 1)[0]
        return group, int(group.split(".")[1]), module_label(path)

    def block_layer_paths(self) -> list[str]:
        """Paths, inside block 0, of the layers peft can adapt (``attention.self.query`` ...); an
        encoder-decoder's from its first encoder and first decoder block (the decoder's have
        cross-attention)."""
        firsts = [self.groups["block.0"][0]]
        if self.encoder_decoder and self.num_blocks > self.encoder_blocks:
            firsts.append(self.groups[f"block.{self.encoder_blocks}"][0])
        return sorted({n[len(f):] for f in firsts for n in adapters.adaptable_layers(self.hf, f)})

    @property
    def max_tokens(self) -> Optional[int]:
        """The most tokens one example may have: the model's table of learned positions (RoBERTa's
        start after the padding index), or None where there is no such table (rotary positions,
        DeBERTa-v2's relative ones)."""
        config = self.hf.config
        if getattr(config, "rope_parameters", None) is not None or getattr(config, "rope_theta", None) is not None:
            return None  # rotary: no table of positions (a longer example runs, if less well)
        if getattr(config, "model_type", "") == "deberta-v2" and not getattr(config, "position_biased_input", True):
            return None
        positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if not isinstance(positions, int) or positions <= 0:
            return None
        if getattr(config, "model_type", "") in _POSITIONS_AFTER_PADDING:
            positions -= (config.pad_token_id or 0) + 1
        return positions

    def fit_max_length(self, max_length: int, where: str = "max_length") -> int:
        """``max_length``, or the model's :attr:`max_tokens` with a warning when it is longer (an
        example longer than the model's positions cannot run through it)."""
        limit = self.max_tokens
        if limit is None or max_length <= limit:
            return max_length
        warnings.warn(f"{where}={max_length} is more than the {limit} tokens this model takes; "
                      f"using {where}={limit}", stacklevel=3)
        return limit

    def parameters_by_group(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        out: dict[str, list] = {g: [] for g in self.groups}
        for n, p in self.hf.named_parameters():
            out[self.group_of(n)].append((n, p))
        return out

    def parameter_counts(self) -> dict:
        """Exact trainable / total parameter counts, overall and per group."""
        by_group = {}
        for g, params in self.parameters_by_group().items():
            by_group[g] = {"trainable": sum(p.numel() for _, p in params if p.requires_grad),
                           "total": sum(p.numel() for _, p in params)}
        trainable = sum(v["trainable"] for v in by_group.values())
        total = sum(v["total"] for v in by_group.values())
        return {"trainable": trainable, "total": total,
                "percent": 100.0 * trainable / total if total else 0.0, "by_group": by_group}

    def set_trainable(self, groups: Sequence[str], active: Optional[Sequence[str]] = None) -> None:
        """Make exactly the parameters of ``groups`` trainable and freeze the rest; groups not
        in ``active`` (those the forward pass does not use) stay frozen too."""
        unknown = [g for g in groups if g not in self.groups]
        if unknown:
            raise ConfigError(f"unknown layer group(s) {unknown}; the model's groups are {self.group_names}")
        wanted = set(groups) & set(active if active is not None else self.groups)
        for n, p in self.hf.named_parameters():
            p.requires_grad_(self.group_of(n) in wanted)
