"""Sequence to sequence: an encoder-decoder (T5, BART, Marian, mT5, Pegasus) reads a source
and writes its target; teacher-forced cross-entropy over the target's tokens, and for the
evaluation the text it generates, scored with ROUGE, BLEU and chrF (:mod:`tunekit.tasks.generation`).

    model = tk.load_model("path/to/a-t5", task="seq2seq", instruction="summarize:")
    tk.train(model, tk.data.bbc_headlines(), tk.LoRA(rank=8))

The source is tokenised as the tokenizer writes it (an ``instruction`` such as T5's
``"summarize:"`` goes before it, a space between), truncated to ``max_length``; the target
through the tokenizer's target side (``text_target``, Marian's second vocabulary), truncated to
``max_length`` too. The model shifts the target right itself to feed its decoder (from its
``decoder_start_token_id``). The split counts what was cut (``truncated``).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import nn

from tunekit.batches import EncodedSplit, pad
from tunekit.config import ConfigError
from tunekit.tasks.base import Task, TaskOutput, model_inputs
from tunekit.tasks.generation import SAMPLE_CHARS, GenerationMetrics, Writes, generation_settings, text_tensor


class Seq2SeqModule(Writes, nn.Module):
    """``forward(batch) -> TaskOutput``: the mean cross-entropy over the target tokens (``count`` of
    them); ``generate_samples`` writes targets for the batch's sources."""

    pooling = None

    def __init__(self, hf: nn.Module, head_name: str, tokenizer, generation: dict, eos_id: int):
        super().__init__()
        self.hf = hf
        self.head_name = head_name
        self.tokenizer = tokenizer
        self.generation = generation
        self.eos_id = eos_id
        self.prompt = None  # learned virtual tokens before the source (prompt tuning)

    def head(self) -> nn.Module:
        return self.hf.get_submodule(self.head_name)

    def inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        return model_inputs(self, input_ids, attention_mask)

    def forward(self, batch: dict) -> TaskOutput:
        labels = batch.get("labels")
        out = self.hf(**self.inputs(batch["input_ids"], batch["attention_mask"]), labels=labels)
        count = (labels != -100).sum() if labels is not None else 0
        return TaskOutput(out.loss, out.logits, count)

    @torch.no_grad()
    def generate_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The tokens the decoder writes for each source [batch, new] (its start token dropped),
        greedy or beam search, through transformers' ``generate``."""
        g = self.generation
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        out = self.hf.generate(**self.inputs(input_ids, attention_mask), max_new_tokens=g["max_new_tokens"],
                               num_beams=g["num_beams"], do_sample=False, pad_token_id=pad_id,
                               eos_token_id=self.eos_id)
        return out[:, 1:]  # the decoder's start token


class Seq2Seq(Task):
    """An encoder-decoder taught to write targets from sources: (source, target) pairs
    (:func:`tunekit.data.from_pairs`, :func:`tunekit.data.bbc_headlines`).

    Args:
        instruction: text put before each source, a space between (T5 was pretrained with
            prefixes such as ``"summarize:"``); None: the source alone.
        generation: how evaluations generate (:func:`tunekit.tasks.generation.generation_settings`).
        chat_template: not for this task (an encoder-decoder has no chat turns); refused if True.
    """

    name = "seq2seq"
    auto_class = "AutoModelForSeq2SeqLM"
    pipeline_tag = "text2text-generation"
    peft_task_type = "SEQ_2_SEQ_LM"
    uses_labels = False
    pairs = True
    label_names: list = []

    def __init__(self, instruction: Optional[str] = None, generation: Optional[dict] = None,
                 chat_template: Optional[bool] = None):
        if chat_template:
            raise ConfigError("chat_template is for task='sft' (a decoder's chat turns); task 'seq2seq' writes the "
                              "source as it is (pass instruction= for a prefix such as 'summarize:')")
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise ConfigError(f"instruction must be a non-empty string or None (got {instruction!r})")
        self.instruction = instruction
        self.generation = generation_settings(generation)

    def build(self, path: str, **kwargs):
        try:
            hf, new = super().build(path, **kwargs)
        except ValueError as e:  # transformers: "Unrecognized configuration class ..."
            raise ConfigError(f"task 'seq2seq' needs an encoder-decoder model (T5, BART, Marian, mT5, Pegasus); "
                              f"transformers has no sequence-to-sequence head for {path}: "
                              f"{str(e).splitlines()[0]}") from e
        return hf, new

    def bind(self, tokenizer, source: str = "the model") -> None:
        for tid in (tokenizer.eos_token_id, tokenizer.sep_token_id):
            if tid is not None:
                self.eos_id = int(tid)
                return
        raise ConfigError(f"task 'seq2seq' needs a tokenizer with an end-of-sequence token; that of {source} has none")

    def options(self) -> dict:
        return {"instruction": self.instruction, "generation": dict(self.generation)}

    def describe(self) -> dict:
        return {"name": self.name, **self.options()}

    def head_name(self, hf: nn.Module) -> str:
        out = hf.get_output_embeddings()
        for name, mod in hf.named_modules():
            if mod is out:
                return name
        raise ConfigError(f"cannot find the output layer of {type(hf).__name__}")

    # ----- examples -------------------------------------------------------------------------------
    def source_text(self, source: str) -> str:
        return source if self.instruction is None else f"{self.instruction} {source}"

    def encode_frame(self, tokenizer, df, max_length: int) -> EncodedSplit:
        if "target" not in df.columns:
            raise ConfigError("task 'seq2seq' trains on (source, target) pairs; this data has texts only. Make pairs "
                              "with tk.data.from_pairs(...) or use tk.data.bbc_headlines()")
        sources = [self.source_text(s) for s in df["text"]]
        full = tokenizer(sources, truncation=False)["input_ids"]
        ids = [r[:max_length - 1] + [r[-1]] if len(r) > max_length else r for r in full]  # keep the end token
        targets = tokenizer(text_target=list(df["target"]), truncation=False)["input_ids"]
        cut_targets = [t[:max_length - 1] + [t[-1]] if len(t) > max_length else t for t in targets]
        counts = {k: v for k, v in (("sources_truncated", sum(len(r) > max_length for r in full)),
                                    ("targets_truncated", sum(len(t) > max_length for t in targets))) if v}
        extras = [{"target_ids": t, "reference": r, "source_text": s[:SAMPLE_CHARS]}
                  for t, r, s in zip(cut_targets, df["target"], df["text"])]
        split = EncodedSplit(ids, None, tokenizer.pad_token_id,
                             functools.partial(self.collate, pad_id=tokenizer.pad_token_id), extras=extras)
        split.truncated = counts
        return split

    def encode(self, tokenizer, texts, labels, max_length: int) -> EncodedSplit:
        raise ConfigError("task 'seq2seq' trains on (source, target) pairs, not on texts alone: give it a data set "
                          "made by tk.data.from_pairs(...) (or tk.data.bbc_headlines())")

    def collate(self, examples: list[dict], pad_id: int) -> dict:
        """Padded sources and mask; ``labels`` the targets padded with -100; the reference and
        source texts (UTF-8 bytes) for scoring and showing."""
        ids, mask = pad([e["input_ids"] for e in examples], pad_id)
        labels, target_mask = pad([e["target_ids"] for e in examples], pad_id)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels.masked_fill(target_mask == 0, -100),
                "index": torch.tensor([e["index"] for e in examples]),
                "reference": text_tensor([e["reference"] for e in examples]),
                "source_text": text_tensor([e["source_text"] for e in examples])}

    def module(self, backbone) -> Seq2SeqModule:
        if not hasattr(self, "eos_id"):
            self.bind(backbone.tokenizer)
        return Seq2SeqModule(backbone.hf, self.head_name(backbone.hf), backbone.tokenizer, self.generation,
                             self.eos_id)

    def metrics(self) -> GenerationMetrics:
        return GenerationMetrics(self.generation["examples"])
