"""What the text-to-text tasks (``sft``, ``seq2seq``) share: how they generate, and how the
generated text is scored against the reference.

Scores come from the libraries made for them: ROUGE-1/2/L F-measures from ``rouge-score`` (its
own tokeniser, Porter stemming on, as the summarisation papers report them; 0..1) and corpus BLEU
and chrF from ``sacrebleu`` (0..100). Each evaluation generates for the first ``examples`` pairs
it sees (greedy unless ``num_beams > 1``) and keeps them, so a record shows what the model wrote
beside what it should have written; the loss and perplexity are over every reference token of the
split, under teacher forcing.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

from tunekit.config import ConfigError
from tunekit.tasks.base import MetricAccumulator, TaskOutput

GENERATION_DEFAULTS = {"max_new_tokens": 32, "num_beams": 1, "examples": 16}
GENERATION_LIMITS = {"max_new_tokens": (1, 1024), "num_beams": (1, 16), "examples": (1, 10_000)}
SAMPLE_CHARS = 400  # a kept example's source is cut to this many characters (a record stays small)


def text_tensor(texts: list[str]) -> torch.Tensor:
    """Texts as a [n, bytes] uint8 tensor of their UTF-8 bytes, zero-padded: a batch carries its
    references and sources exactly (a tokenizer's decoding would respace or lowercase them)."""
    raw = [t.replace("\x00", "").encode("utf-8") for t in texts]
    out = torch.zeros((len(raw), max(1, max(len(r) for r in raw))), dtype=torch.uint8)
    for j, r in enumerate(raw):
        if r:
            out[j, :len(r)] = torch.frombuffer(bytearray(r), dtype=torch.uint8)
    return out


def tensor_text(row: torch.Tensor) -> str:
    """One row of :func:`text_tensor` back as its text."""
    data = row.cpu()
    return bytes(data[data != 0].tolist()).decode("utf-8", errors="replace")


def generation_settings(generation: Optional[dict]) -> dict:
    """``generation`` (None, or a dict of some of :data:`GENERATION_DEFAULTS`' keys) checked and
    completed with the defaults: ``max_new_tokens`` (the most tokens generated per example),
    ``num_beams`` (1: greedy) and ``examples`` (how many pairs each evaluation generates for)."""
    if generation is None:
        return dict(GENERATION_DEFAULTS)
    if not isinstance(generation, dict):
        raise ConfigError(f"generation must be a dict with keys among {sorted(GENERATION_DEFAULTS)} "
                          f"(got {generation!r})")
    unknown = sorted(set(generation) - set(GENERATION_DEFAULTS))
    if unknown:
        raise ConfigError(f"generation takes the keys {sorted(GENERATION_DEFAULTS)}; {unknown} unknown")
    out = dict(GENERATION_DEFAULTS)
    for key, value in generation.items():
        low, high = GENERATION_LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"generation[{key!r}] must be an integer in [{low}, {high}] (got {value!r})")
        out[key] = value
    return out


def score_texts(generated: list[str], references: list[str]) -> dict[str, float]:
    """ROUGE-1/2/L (mean F-measure over the pairs, 0..1) and corpus BLEU and chrF (0..100) of
    ``generated`` against ``references``, one reference each."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated texts for {len(references)} references")
    if not generated:
        return {}
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU, CHRF
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for g, r in zip(generated, references):
        for key, score in scorer.score(r, g).items():
            sums[key] += score.fmeasure
    out = {k: v / len(generated) for k, v in sums.items()}
    out["bleu"] = float(BLEU(effective_order=True).corpus_score(generated, [references]).score)
    out["chrf"] = float(CHRF().corpus_score(generated, [references]).score)
    return out


class Writes:
    """What a text-to-text task module shares: reading new tokens back as text (cut at its end
    token, special tokens dropped) and writing samples for a batch. The module has ``tokenizer``,
    ``eos_id`` and ``generate_ids(ids, mask)`` (the new tokens of each row)."""

    def decode(self, ids) -> str:
        ids = [int(t) for t in ids]
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def generate_samples(self, batch: dict, limit: int) -> list[dict]:
        """The batch's pairs among the split's first ``limit`` (by their place in the split, so the
        same pairs whatever order the batches come in) as ``{"index", "source", "reference",
        "generated"}``: what the model writes from each source (its prompt, for a decoder:
        ``gen_input_ids``)."""
        rows = (batch["index"] < limit).nonzero().flatten().tolist()
        if not rows:
            return []
        ids = batch.get("gen_input_ids", batch["input_ids"])[rows]
        mask = batch.get("gen_attention_mask", batch["attention_mask"])[rows]
        if "gen_attention_mask" not in batch:  # right-padded sources: trim the padding all rows share
            width = int(mask.sum(1).max())
            ids, mask = ids[:, :width], mask[:, :width]
        new = self.generate_ids(ids, mask).cpu()
        return [{"index": int(batch["index"][j]), "source": tensor_text(batch["source_text"][j]),
                 "reference": tensor_text(batch["reference"][j]), "generated": self.decode(new[k])}
                for k, j in enumerate(rows)]


class GenerationMetrics(MetricAccumulator):
    """The token-weighted loss (and its perplexity) of the references under teacher forcing, and
    the scores of what the model generates for the first ``examples`` pairs of the split (by their
    place in it, whatever order the batches come in).

    The evaluation gives it the task module (:meth:`attach`) before the first batch; without one
    (a caller that only wants the loss) nothing is generated and only loss and perplexity are
    reported."""

    def __init__(self, examples: int):
        self.examples = examples
        self.loss_sum, self.tokens = 0.0, 0
        self.samples: list[dict] = []
        self.module = None

    def attach(self, module) -> None:
        self.module = module

    def update(self, out: TaskOutput, batch: dict) -> None:
        count = int(out.count)
        if count:
            self.loss_sum += float(out.loss.float()) * count
            self.tokens += count
        if self.module is not None and "index" in batch:
            self.samples += self.module.generate_samples(batch, self.examples)

    def merge(self, other: "GenerationMetrics") -> None:
        self.loss_sum += other.loss_sum
        self.tokens += other.tokens
        self.samples += other.samples

    def compute(self) -> dict[str, Any]:
        self.samples = [{k: v for k, v in s.items() if k != "index"}
                        for s in sorted(self.samples, key=lambda s: s.get("index", 0))]
        if self.samples:  # each kept example's own ROUGE-L, for paired comparisons example by example
            from rouge_score import rouge_scorer
            scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
            for s in self.samples:
                s["rougeL"] = scorer.score(s["reference"], s["generated"])["rougeL"].fmeasure
        loss = self.loss_sum / self.tokens if self.tokens else float("nan")
        out = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)) if math.isfinite(loss) else float("nan")}
        if self.samples:
            out.update(score_texts([s["generated"] for s in self.samples], [s["reference"] for s in self.samples]))
            out["generated"] = len(self.samples)
        return out
