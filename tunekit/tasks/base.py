"""What every task is: how to build the Hugging Face model, one ``nn.Module`` whose forward
returns the loss, a collate function and the metrics.

The engine never looks inside: it calls ``module(batch)`` and reads ``out.loss``, so
wrapping the module once (DistributedDataParallel, accelerate, ``torch.compile``)
wraps the whole computation, as nanoGPT's ``GPT.forward(idx, targets)`` does.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from tunekit.batches import EncodedSplit, collate_tokens, token_ids


@functools.lru_cache(maxsize=None)
def _past_parameter(cls: type) -> str:
    import inspect
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def _past_keyword(hf: nn.Module) -> str:
    """What ``hf``'s forward calls the keys and values of past tokens: ``cache`` (transformers 5.2x
    and later, where ``past_key_values`` is deprecated) or ``past_key_values``."""
    return _past_parameter(type(hf))


def returned_cache(out):
    """The keys and values a Hugging Face model returned with ``use_cache=True``: transformers 5.2x
    names them ``cache`` (reading ``past_key_values`` there warns that it is deprecated); older
    versions ``past_key_values``."""
    return out["cache"] if "cache" in out.keys() else out.past_key_values


def model_inputs(module: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """What a task module feeds its Hugging Face model: the token ids and their mask, or, when
    the module carries learned virtual tokens (``module.prompt``), what peft's own forward feeds:
    for prompt tuning their embeddings before the text's (``inputs_embeds``), for prefix tuning
    their keys and values as past tokens (``past_key_values``), the mask grown to cover them.
    Position and token-type embeddings are the model's own, added after."""
    prompt = getattr(module, "prompt", None)
    if prompt is None:
        return {"input_ids": input_ids, "attention_mask": attention_mask}
    if prompt.kind == "past":  # prefix tuning: every layer's keys and values for the virtual tokens
        past = prompt(input_ids.shape[0])
        mask = torch.cat([attention_mask.new_ones((input_ids.shape[0], past.get_seq_length())), attention_mask], 1)
        return {"input_ids": input_ids, "attention_mask": mask, _past_keyword(module.hf): past}
    embeds = module.hf.get_input_embeddings()(input_ids)
    virtual = prompt(input_ids.shape[0]).to(device=embeds.device, dtype=embeds.dtype)
    mask = torch.cat([attention_mask.new_ones(virtual.shape[:2]), attention_mask], dim=1)
    return {"inputs_embeds": torch.cat([virtual, embeds], dim=1), "attention_mask": mask}


@dataclass
class TaskOutput:
    """What a task module returns: the mean loss over the batch (None without targets), the
    logits, and the number of items the loss averages over (examples or tokens; an int, or a
    0-d tensor where counting would make the host wait for the device)."""

    loss: Optional[torch.Tensor]
    logits: torch.Tensor
    count: Any = 0


class Task:
    """Base class; a task is one file in ``tunekit/tasks/`` plus one registry line."""

    name: ClassVar[str] = "task"
    auto_class: ClassVar[str] = ""           # transformers' Auto class that builds the model
    pipeline_tag: ClassVar[str] = ""         # for model cards
    peft_task_type: ClassVar[str] = ""       # peft.TaskType member
    uses_labels: ClassVar[bool] = True       # does training read the data's labels?
    pairs: ClassVar[bool] = False            # does it train on (source, target) pairs?

    def build(self, path: str, **kwargs) -> tuple[nn.Module, list[str]]:
        """The Hugging Face model from ``path`` (local files only) and the names of the
        parameters the checkpoint does not hold (a new head)."""
        import transformers
        auto = getattr(transformers, self.auto_class)
        # never a model's own code: a config.json with an auto_map would otherwise make
        # transformers ask on stdin (in Jupyter, an input box) whether to run it
        # and never a pickle: safetensors only (tunekit.sources refuses a pickle-only folder first)
        hf, info = auto.from_pretrained(path, local_files_only=True, output_loading_info=True,
                                        trust_remote_code=False, use_safetensors=True, **kwargs)
        return hf, sorted(info.get("missing_keys", ()))

    def supports(self, model_type: str) -> bool:
        """Whether transformers' Auto class of this task builds a ``model_type`` model (True
        when it cannot tell: the build then says it)."""
        try:
            import transformers
            auto = getattr(transformers, self.auto_class)
            return transformers.CONFIG_MAPPING[model_type] in auto._model_mapping
        except Exception:  # noqa: BLE001 - a transformers without these tables
            return True

    def module(self, backbone) -> nn.Module:
        raise NotImplementedError

    def encode(self, tokenizer, texts, labels, max_length: int) -> EncodedSplit:
        """Tokenise one split (labels are kept only when the task uses them); its batches are
        made by this task's :meth:`collate`."""
        return self.from_ids(tokenizer, token_ids(tokenizer, texts, max_length), labels)

    def encode_frame(self, tokenizer, df, max_length: int) -> EncodedSplit:
        """Tokenise one split given as its DataFrame (``text``, ``label`` and, for pairs,
        ``target``): what the engine and the evaluation call. A text task reads ``text`` and
        ``label`` (:meth:`encode`); a text-to-text task its pairs."""
        return self.encode(tokenizer, df["text"], df["label"], max_length)

    def bind(self, tokenizer, source: str = "the model") -> None:
        """Settle what depends on the tokenizer (a text-to-text task's chat template and end
        token); nothing for a text task."""

    def options(self) -> dict:
        """The options that rebuild this task, beyond its name (recorded with the model)."""
        return {}

    def from_ids(self, tokenizer, ids: list[list[int]], labels, rows: Optional[list] = None) -> EncodedSplit:
        """The split :meth:`encode` makes, from token ids already made (by
        :func:`~tunekit.batches.token_ids`, e.g. through a :class:`~tunekit.sharing.SharedInputs`
        memo, whose keys ``rows`` are)."""
        labels = None if labels is None or not self.uses_labels else torch.as_tensor(list(labels), dtype=torch.long)
        return EncodedSplit(ids, labels, tokenizer.pad_token_id,
                            functools.partial(self.collate, pad_id=tokenizer.pad_token_id), rows)

    def collate(self, examples: list[dict], pad_id: int) -> dict:
        """A batch from a list of examples ``{"input_ids": [...], "label": int}`` (the shape a
        DataLoader's ``collate_fn`` has): padded ids, attention mask, and the targets."""
        return collate_tokens(examples, pad_id)

    def metrics(self) -> "MetricAccumulator":
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class MetricAccumulator:
    """Collects task outputs batch by batch; ``compute()`` gives ``{metric: value}``."""

    def update(self, out: TaskOutput, batch: dict) -> None:
        raise NotImplementedError

    def merge(self, other: "MetricAccumulator") -> None:
        """Add ``other``'s examples (another process's share of the same evaluation)."""
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError
