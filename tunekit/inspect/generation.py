"""Which source tokens an output token came from: integrated gradients for what a text-to-text
model writes (``task="sft"`` or ``"seq2seq"``).

    a = tk.inspect.attribute_generation(model, article)                 # what it writes, explained
    rows = tk.inspect.attribute_generation_runs([lora, full], article, target=headline)  # base + each run
    tk.plots.generation_attribution_html(rows, token=0)                 # the source coloured for one token

captum's ``IntegratedGradients`` integrates the gradient of the log-probability the model gives
one output token (teacher-forced: every earlier output token is given) along the straight line
from a *baseline* to the input, in the space of the input embeddings. The baseline replaces the
**source's** tokens by the pad token and keeps everything around them as it is: the chat
template, the instruction, the output tokens before the explained one (a decoder reads them in
the same sequence, so they are fixed, not attributed). A source token's score is its attribution
summed over the embedding dimension; the scores of one output token add up to ``log p(token |
input) - log p(token | baseline)`` up to captum's convergence ``delta``.

Why captum and not inseq: captum already explains tunekit's classifiers (one method, one
baseline rule, one completeness check for both views); it installs from a package registry
with no further dependencies, and it works on the task module tunekit trains (prompt tuning's
virtual tokens and prefix tuning's past keys included), where inseq wraps a Hugging Face model
of its own. captum's ``LLMGradientAttribution`` drives a decoder by its ids; an encoder-decoder's
shared embedding (T5, BART) reads the source and the decoder's inputs through the same layer, so
the embeddings of the source alone are interpolated here, by identity of the tensor of ids.

Compare a base model and a tuned one on the same ``target`` text (the reference, or what one of
them wrote): the same output tokens are then explained in both, so the rows line up.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

import pandas as pd
import torch

from tunekit.config import ConfigError
from tunekit.inspect.attribution import MAX_STEPS, removing_hooks
from tunekit.inspect.models import Pair, RunLike, load_pairs
from tunekit.models import Model
from tunekit.plots.attribution import generation_attribution_html

TEXT_TASKS = ("sft", "seq2seq")
MAX_OUTPUT_TOKENS = 64
"""The most output tokens one call explains (each is one integration over the source)."""


@dataclass
class GenerationAttribution:
    """The source tokens' attributions for each output token of one model, for one source.

    Attributes:
        source: the source text.
        tokens: the source's tokens, as the model read them (inside its template and
            instruction, which are not attributed), each as its own text.
        output: the output tokens explained, in order.
        positions: where each explained token sits in the whole output (``target``'s tokens).
        scores: ``scores[i][j]``: source token ``j``'s attribution for output token ``i``
            (integrated gradients summed over the embedding dim); positive raises that
            output token's log-probability.
        logprobs: ``log p`` of each output token given the source (teacher-forced).
        baseline_logprobs: the same with the source's tokens replaced by the pad token.
        delta: captum's convergence delta for each output token.
        target: the output text explained.
        generated: True when ``target`` is what this model wrote (greedy) for the source.
        n_steps: integration steps per output token.
        run / label: the run's name and strategy label, or ``"base"``.
    """

    source: str
    tokens: list[str]
    output: list[str]
    positions: list[int]
    scores: list[list[float]]
    logprobs: list[float]
    baseline_logprobs: list[float]
    delta: list[float]
    target: str
    generated: bool
    n_steps: int
    run: str = "base"
    label: str = "base"

    def for_token(self, i: int) -> list[float]:
        """The source tokens' scores for output token ``i`` (negative counts from the end)."""
        if not -len(self.output) <= i < len(self.output):
            raise ConfigError(f"token must be an output position in {-len(self.output)} .. {len(self.output) - 1} "
                              f"(the output has {len(self.output)} tokens: {self.output})")
        return self.scores[i]

    def top_sources(self, i: int, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` source tokens with the largest attribution for output token ``i``."""
        row = self.for_token(i)
        order = sorted(range(len(row)), key=lambda j: -row[j])[:k]
        return [(self.tokens[j], row[j]) for j in order]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_frame(self) -> pd.DataFrame:
        """One row per (output token, source token): run, label, output position and token,
        source position and token, score."""
        rows = [{"run": self.run, "label": self.label, "output_position": i, "output_token": o,
                 "source_position": j, "source_token": t, "score": s}
                for i, (o, row) in enumerate(zip(self.output, self.scores))
                for j, (t, s) in enumerate(zip(self.tokens, row))]
        return pd.DataFrame(rows, columns=["run", "label", "output_position", "output_token", "source_position",
                                           "source_token", "score"])

    def _repr_html_(self) -> str:
        return generation_attribution_html([self])


# ----- the inputs ----------------------------------------------------------------------------------
def _span(with_source: list[int], without: list[int]) -> tuple[int, int]:
    """Where the source's tokens sit in ``with_source``: what is left between the longest prefix
    and the longest suffix it shares with the same prompt around an empty source."""
    start = 0
    while start < min(len(with_source), len(without)) and with_source[start] == without[start]:
        start += 1
    end = len(with_source)
    while end > start and len(with_source) - end < len(without) - start and \
            with_source[end - 1] == without[len(without) - (len(with_source) - end) - 1]:
        end -= 1
    return start, end


def _source_ids(model: Model, source: str, max_length: int) -> tuple[list[int], tuple[int, int]]:
    """The ids the model reads for ``source`` (its template and instruction around it; cut to
    ``max_length`` as training cuts it) and where the source's own tokens are."""
    task, tok = model.task, model.tokenizer
    if task.name == "sft":
        from tunekit.tasks.sft import cut_text
        overhead = len(task.prompt_ids(tok, ""))
        text = cut_text(tok, source, max(1, max_length - overhead))
        ids, empty = task.prompt_ids(tok, text), task.prompt_ids(tok, "")
    else:
        ids = tok(task.source_text(source))["input_ids"]
        if len(ids) > max_length:
            ids = ids[:max_length - 1] + [ids[-1]]
        empty = tok(task.instruction)["input_ids"] if task.instruction else tok("")["input_ids"]
    start, end = _span(ids, empty)
    if end <= start:
        raise ConfigError("the source has no tokens of its own once the prompt is built; give a longer source")
    return ids, (start, end)


def _target_ids(model: Model, prompt: list[int], target: Optional[str], max_new_tokens: int) -> tuple[list[int], bool]:
    """The output's token ids as the decoder is fed them when it trains: ``target`` tokenised as
    training tokenises a response or a target (the end token left out; an encoder-decoder's
    tokenizer may write a start token, kept), or what the model writes for the prompt (greedy;
    cut at its end token)."""
    task, tok, module = model.task, model.tokenizer, model.module
    if target is not None:
        if task.name == "sft":
            ids = tok(target, add_special_tokens=False)["input_ids"]
        else:
            ids = tok(text_target=target)["input_ids"]
            ids = ids[:-1] if ids and ids[-1] == task.eos_id else ids
        return ids[:max_new_tokens], False
    x = torch.tensor([prompt], device=model.device)
    saved = dict(module.generation)
    module.generation = {**saved, "max_new_tokens": max_new_tokens, "num_beams": 1}
    try:
        new = module.generate_ids(x, torch.ones_like(x))[0].tolist()
    finally:
        module.generation = saved
    end = [i for i, t in enumerate(new) if t == task.eos_id]  # (generate pads after it)
    new = new[:end[0]] if end else new
    if not new:
        raise ConfigError("the model wrote nothing for this source (its first token was the end token); "
                          "give target=... to explain a text of your choice")
    return new, True


def shown(tokenizer, token_id: int) -> str:
    """A token as a reader sees it: its own text (" plunges", "\\n"), not the tokenizer's byte
    symbols ("Ġplunges", "Ċ"); WordPiece's pieces keep their "##"."""
    text = tokenizer.decode([token_id])
    piece = tokenizer.convert_ids_to_tokens(token_id)
    return piece if isinstance(piece, str) and piece.startswith("##") else text


def _source_embeddings(hf, embedding) -> list:
    """The layers that embed the source: the model's input embedding and, for an encoder-decoder
    whose encoder holds a layer of its own (tied to the shared one, as T5's may), that one too."""
    layers = [embedding]
    get_encoder = getattr(hf, "get_encoder", None)
    encoder = get_encoder() if callable(get_encoder) else None
    own = getattr(encoder, "embed_tokens", None) if encoder is not None else None
    if own is not None and own is not embedding:
        layers.append(own)
    return layers


# ----- one model -----------------------------------------------------------------------------------
def attribute_generation(model: Model | RunLike, source: str, target: Optional[str] = None,
                         tokens: Optional[Iterable[int]] = None, n_steps: int = 24,
                         internal_batch_size: Optional[int] = None, max_length: int = 512,
                         max_new_tokens: int = 16) -> GenerationAttribution:
    """Integrated-gradients attributions of ``source``'s tokens for each output token.

    Args:
        model: a text-to-text :class:`~tunekit.models.Model`, or a run (its trained model).
        source: the source text (an article, a question): what the model reads.
        target: the output to explain (the reference, or another model's output); None: what
            this model writes for ``source`` (greedy, at most ``max_new_tokens`` tokens).
        tokens: which output positions to explain (default: every one); others are left out.
        n_steps: integration steps per output token (more steps, smaller ``delta``).
        internal_batch_size: at most this many interpolated inputs per forward pass.
        max_length: the source is cut to this many tokens, prompt included, as training cuts it.
        max_new_tokens: the most output tokens (at most :data:`MAX_OUTPUT_TOKENS`).
    """
    from captum.attr import IntegratedGradients

    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"source must be a non-empty string (got {source!r})")
    if target is not None and (not isinstance(target, str) or not target.strip()):
        raise ConfigError(f"target must be None (explain what the model writes) or a non-empty string (got {target!r})")
    for name, value, top in (("n_steps", n_steps, MAX_STEPS), ("max_new_tokens", max_new_tokens, MAX_OUTPUT_TOKENS),
                             ("max_length", max_length, 1_000_000)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
            raise ConfigError(f"{name} must be an integer in 1 .. {top} (got {value!r})")
    if internal_batch_size is not None and (not isinstance(internal_batch_size, int)
                                            or isinstance(internal_batch_size, bool) or internal_batch_size < 1):
        raise ConfigError(f"internal_batch_size must be None or an integer >= 1 (got {internal_batch_size!r})")
    run_name = label = None
    if not isinstance(model, Model):
        pair = model if isinstance(model, Pair) else load_pairs(model)[0]
        model, run_name, label = pair.result, pair.name, pair.label
    if model.task.name not in TEXT_TASKS:
        raise ConfigError(f"attribute_generation explains what a text-to-text model writes (task 'sft' or "
                          f"'seq2seq'); this model's task is {model.task.name!r} (tk.inspect.attribute explains "
                          f"a classifier)")
    if run_name is None:
        run_name = label = model.trained_by[-1] if model.trained_by else "base"
    tok, module, device = model.tokenizer, model.module, model.device
    pad = tok.pad_token_id if tok.pad_token_id is not None else model.task.eos_id

    was_training = module.training
    module.eval()
    try:
        prompt, (start, end) = _source_ids(model, source, model.backbone.fit_max_length(max_length))
        out_ids, generated = _target_ids(model, prompt, target, max_new_tokens)
        special = set(tok.all_special_ids)
        positions = [i for i, t in enumerate(out_ids) if t not in special] if tokens is None else list(tokens)
        if tokens is None and not positions:
            raise ConfigError(f"the output {tok.convert_ids_to_tokens(out_ids)} has no token to explain (only "
                              f"special tokens)" + ("" if target is not None else "; give target=..."))
        bad = [p for p in positions if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p < len(out_ids)]
        if bad or not positions:
            raise ConfigError(f"tokens must name output positions in 0 .. {len(out_ids) - 1} (the output "
                              f"{tok.convert_ids_to_tokens(out_ids)}); got {bad or 'none'}")
        seq2seq = model.task.name == "seq2seq"
        ids = torch.tensor([prompt + ([] if seq2seq else out_ids)], device=device)
        labels = torch.tensor([out_ids], device=device)
        embedding = model.hf.get_input_embeddings()
        base_ids = ids.clone()
        base_ids[0, start:end] = pad
        with torch.no_grad():
            x, x0 = embedding(ids).detach(), embedding(base_ids).detach()
        feed: dict = {}

        def swap(mod, args, output):  # the interpolated embeddings, for the call that reads these ids only
            read = args[0] if args else None  # (a stack may pass a view of them: the same storage)
            fed = feed.get("ids")
            if isinstance(read, torch.Tensor) and fed is not None and read.data_ptr() == fed.data_ptr() \
                    and read.shape[-1] == fed.shape[-1] and output.shape == feed["embeds"].shape:
                return feed["embeds"]
            return output

        def logprob(embeds: torch.Tensor, position: int) -> torch.Tensor:
            n = embeds.shape[0]
            feed["ids"], feed["embeds"] = ids.repeat(n, 1), embeds  # (a stack may view() them: contiguous)
            batch = {"input_ids": feed["ids"], "attention_mask": torch.ones_like(feed["ids"])}
            if seq2seq:
                batch["labels"] = labels.repeat(n, 1)
            logits = module(batch).logits.float()
            at = position if seq2seq else len(prompt) - 1 + position  # the position that predicts it
            return logits[:, at].log_softmax(-1)[:, out_ids[position]]

        ig = IntegratedGradients(logprob)
        scores, lps, blps, deltas = [], [], [], []
        with removing_hooks(module):
            for layer in _source_embeddings(model.hf, embedding):
                layer.register_forward_hook(swap)
            for p in positions:
                with torch.no_grad():
                    both = logprob(torch.cat([x, x0]), p)
                with torch.enable_grad():
                    attr, delta = ig.attribute(x, baselines=x0, additional_forward_args=(p,), n_steps=n_steps,
                                               internal_batch_size=min(internal_batch_size or n_steps, n_steps),
                                               return_convergence_delta=True)
                scores.append(attr.detach().float().sum(-1)[0, start:end].cpu().tolist())
                lps.append(float(both[0]))
                blps.append(float(both[1]))
                deltas.append(float(delta.reshape(-1)[0]))
    finally:
        module.train(was_training)
    return GenerationAttribution(
        source=source, tokens=[shown(tok, i) for i in prompt[start:end]],
        output=[shown(tok, out_ids[p]) for p in positions], positions=positions, scores=scores,
        logprobs=lps,
        baseline_logprobs=blps, delta=deltas, target=tok.decode(out_ids, skip_special_tokens=True),
        generated=generated, n_steps=n_steps, run=run_name, label=label)


# ----- several runs --------------------------------------------------------------------------------
def attribute_generation_runs(runs: RunLike | Iterable[RunLike], source: str, target: Optional[str] = None,
                              include_base: bool = True, **kw) -> list[GenerationAttribution]:
    """:func:`attribute_generation` by the starting model (the first run's base) and each
    run's trained model, in order. With ``target`` given every model explains the same
    output tokens, so the rows compare token by token; None explains what each model writes.
    Other keywords go to :func:`attribute_generation`."""
    pairs = load_pairs(runs)
    unknown = sorted(set(kw) - {"tokens", "n_steps", "internal_batch_size", "max_length", "max_new_tokens"})
    if unknown:
        raise ConfigError(f"unknown keyword(s) {unknown}; attribute_generation_runs passes tokens, n_steps, "
                          f"internal_batch_size, max_length and max_new_tokens on")
    out = []
    if include_base:
        out.append(dataclasses.replace(attribute_generation(pairs[0].start, source, target, **kw),
                                       run="base", label="base"))
    for pair in pairs:
        a = attribute_generation(pair.result, source, target, **kw)
        out.append(dataclasses.replace(a, run=pair.name, label=pair.label))
    return out
