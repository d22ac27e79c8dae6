"""Which tokens pushed a model toward a class: integrated gradients on the embeddings.

    a = attribute(model, "a gorgeous, witty film")           # the predicted class
    a = attribute(model, "a gorgeous, witty film", target="rotten")
    rows = attribute_runs([probe, lora, full], "a gorgeous, witty film")   # base + each run
    tk.plots.attribution_html(rows)                          # stacked, one row per model

captum's ``LayerIntegratedGradients`` integrates the gradient of one class logit
along the straight line from a *baseline* to the sentence, in the space of the
input embedding layer's output. The baseline is the same sentence with every
token that is not special ([CLS], [SEP], BOS ...) replaced by the pad token; the
attention mask stays that of the sentence. A token's score is its attribution
summed over the embedding dimension, so the scores add up to
``F(x) - F(baseline)`` up to the integration error that captum reports as the
convergence ``delta`` (the completeness gap); ``gap_relative`` is
``|delta| / |F(x) - F(baseline)|``. More ``n_steps`` shrink it.

Token ids reach the model only through the embedding layer: whatever the model
does with the ids themselves (a decoder picks its last non-pad token) is done on
the sentence's ids, for the sentence, the baseline and every point in between.

All interpolation steps run in one batched forward and backward pass unless
``internal_batch_size`` splits them. Every hook is registered inside
:func:`removing_hooks`, which leaves the model's hooks as it found them, even
when the call fails.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from tunekit.config import ConfigError
from tunekit.inspect.models import Pair, RunLike, load_pairs
from tunekit.models import Model as TextClassifier
from tunekit.plots.attribution import attribution_html

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_HOOK_FLAGS = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


@dataclass
class Attribution:
    """Token attributions of one model for one sentence and one class.

    Attributes:
        text: the sentence.
        tokens: the tokenizer's tokens, special tokens included.
        scores: one score per token (integrated gradients summed over the embedding dim);
            positive pushes the target logit up.
        target: index of the class whose logit is attributed.
        target_label: its name.
        prediction: the model's predicted class name for the sentence.
        probabilities: ``{label: probability}`` for the sentence.
        delta: captum's convergence delta, ``sum(scores) - (f_input - f_baseline)``.
        gap_relative: ``|delta| / |f_input - f_baseline|`` (inf when the denominator is 0
            and delta is not).
        f_input: the target logit for the sentence.
        f_baseline: the target logit for the baseline (non-special tokens -> pad).
        n_steps: integration steps.
        run: the run's name, or ``"base"`` for the starting model.
        label: the strategy label (``"base"`` for the starting model).
    """

    text: str
    tokens: list[str]
    scores: list[float]
    target: int
    target_label: str
    prediction: str
    probabilities: dict[str, float]
    delta: float
    gap_relative: float
    f_input: float
    f_baseline: float
    n_steps: int
    run: str = "base"
    label: str = "base"

    @property
    def gap(self) -> float:
        """The completeness gap ``|sum(scores) - (f_input - f_baseline)|`` (= ``|delta|``)."""
        return abs(self.delta)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_frame(self) -> pd.DataFrame:
        """One row per token: run, label, position, token, score and the run's scalars."""
        rows = [{"run": self.run, "label": self.label, "position": i, "token": t, "score": s}
                for i, (t, s) in enumerate(zip(self.tokens, self.scores))]
        df = pd.DataFrame(rows, columns=["run", "label", "position", "token", "score"])
        scalars = {k: getattr(self, k) for k in ("text", "target", "target_label", "prediction", "delta",
                                                 "gap_relative", "f_input", "f_baseline", "n_steps")}
        for k, v in scalars.items():
            df[k] = v
        df["probabilities"] = [dict(self.probabilities) for _ in range(len(df))]
        return df

    def _repr_html_(self) -> str:
        return attribution_html([self])


# ----- hooks -------------------------------------------------------------------------------------
@contextlib.contextmanager
def removing_hooks(module: nn.Module):
    """Remove, on the way out, every hook that was added to ``module`` or any of its
    submodules inside the block, also when the block raises. Hooks that were there
    before are kept."""
    before = {id(m): {d: set(getattr(m, d, {})) for d in _HOOK_DICTS} for m in module.modules()}
    try:
        yield
    finally:
        for m in module.modules():
            seen = before.get(id(m), {})
            for d in _HOOK_DICTS:
                hooks = getattr(m, d, None)
                if not hooks:
                    continue
                for key in [k for k in hooks if k not in seen.get(d, ())]:
                    del hooks[key]
                    for flags in _HOOK_FLAGS:
                        getattr(m, flags, {}).pop(key, None)


def hook_counts(module: nn.Module) -> dict[str, int]:
    """Number of forward, forward-pre, backward and backward-pre hooks on ``module`` and
    all its submodules (for checking that none is left behind)."""
    return {d.strip("_"): sum(len(getattr(m, d, {})) for m in module.modules()) for d in _HOOK_DICTS}


# ----- one model ---------------------------------------------------------------------------------
def _resolve_target(model: TextClassifier, target, predicted: int) -> int:
    names = model.label_names
    if target is None:
        return predicted
    if isinstance(target, str):
        if target in names:
            return names.index(target)
        raise ConfigError(f"target must be one of the labels {names} or an index 0..{len(names) - 1} "
                          f"(got {target!r})")
    if isinstance(target, int) and not isinstance(target, bool) and -len(names) <= target < len(names):
        return target % len(names)
    raise ConfigError(f"target must be one of the labels {names} or an index 0..{len(names) - 1} "
                      f"(got {target!r})")


MAX_STEPS = 10_000
"""The most integration steps: the gap shrinks fast (50 is captum's default), and every step is one
more copy of the sentence through the model."""


def _check(text, n_steps, internal_batch_size, max_length) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"text must be a non-empty string (got {text!r})")
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or not 1 <= n_steps <= MAX_STEPS:
        raise ConfigError(f"n_steps must be an integer in 1 .. {MAX_STEPS} (got {n_steps!r})")
    if internal_batch_size is not None and (not isinstance(internal_batch_size, int)
                                            or isinstance(internal_batch_size, bool) or internal_batch_size < 1):
        raise ConfigError(f"internal_batch_size must be None or an integer >= 1 (got {internal_batch_size!r})")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
        raise ConfigError(f"max_length must be an integer >= 2 (got {max_length!r})")


def pad_baseline(model: TextClassifier, input_ids: torch.Tensor, special_mask: torch.Tensor) -> torch.Tensor:
    """The sentence with every non-special token replaced by the pad token."""
    pad = model.tokenizer.pad_token_id
    if pad is None:
        raise ConfigError("the tokenizer has no pad token to build the baseline from")
    return torch.where(special_mask.bool(), input_ids, torch.full_like(input_ids, pad))


def attribute(model: TextClassifier | RunLike, text: str, target: int | str | None = None,
              n_steps: int = 50, internal_batch_size: int | None = None,
              max_length: int = 128) -> Attribution:
    """Integrated-gradients attributions of one sentence's tokens for one class logit.

    Args:
        model: a :class:`~tunekit.models.TextClassifier`, or a run (its trained model).
        text: the sentence.
        target: the class to explain: None for the model's prediction, a label name,
            or a class index.
        n_steps: integration steps (captum's Gauss-Legendre rule); more steps, smaller gap.
        internal_batch_size: at most this many interpolated sentences per forward pass
            (None: all ``n_steps`` in one pass).
        max_length: the tokenizer's truncation length.
    """
    from captum.attr import LayerIntegratedGradients

    _check(text, n_steps, internal_batch_size, max_length)
    run_name = label = None
    if not isinstance(model, TextClassifier):
        pair = model if isinstance(model, Pair) else load_pairs(model)[0]
        model, run_name, label = pair.result, pair.name, pair.label
    if model.task.name != "classification":
        raise ConfigError(f"attribute explains a class logit; this model's task is {model.task.name!r}")
    if run_name is None:
        run_name = model.trained_by[-1] if model.trained_by else "base"
        label = run_name

    max_length = model.backbone.fit_max_length(max_length)
    enc = model.tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt",
                          return_special_tokens_mask=True)
    device = model.device
    ids = enc["input_ids"].to(device)
    mask = enc["attention_mask"].to(device)
    baseline = pad_baseline(model, ids, enc["special_tokens_mask"].to(device))
    embedding = model.hf.get_input_embeddings()

    # The ids handed to forward() reach the model only through the embedding layer (the
    # pre-hook swaps them in); everything else sees the sentence's own ids.
    feed: dict[str, torch.Tensor] = {}

    def swap_ids(module, args, kwargs):
        if args:
            return (feed["ids"],) + tuple(args[1:]), kwargs
        return args, {**kwargs, "input": feed["ids"]}

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feed["ids"] = input_ids
        return model.logits(ids.expand(input_ids.shape[0], -1), attention_mask)

    was_training = model.module.training
    model.module.eval()
    try:
        with removing_hooks(model.module):
            embedding.register_forward_pre_hook(swap_ids, with_kwargs=True)
            with torch.no_grad():
                logits = forward(torch.cat([ids, baseline]), mask.expand(2, -1)).float()
            probs = logits[0].softmax(-1)
            t = _resolve_target(model, target, int(probs.argmax()))
            lig = LayerIntegratedGradients(forward, embedding)
            with torch.enable_grad():
                attr, delta = lig.attribute(ids, baselines=baseline, additional_forward_args=(mask,),
                                            target=t, n_steps=n_steps,
                                            internal_batch_size=min(internal_batch_size or n_steps, n_steps),
                                            return_convergence_delta=True)
    finally:
        model.module.train(was_training)
        feed.clear()

    scores = attr.detach().float().sum(-1)[0].cpu()
    f_input, f_baseline = float(logits[0, t]), float(logits[1, t])
    delta = float(delta.reshape(-1)[0])
    diff = abs(f_input - f_baseline)
    gap_relative = abs(delta) / diff if diff > 0 else (0.0 if delta == 0 else float("inf"))
    names = model.label_names
    return Attribution(
        text=text, tokens=model.tokenizer.convert_ids_to_tokens(ids[0].tolist()), scores=scores.tolist(),
        target=t, target_label=names[t], prediction=names[int(probs.argmax())],
        probabilities={n: float(p) for n, p in zip(names, probs.tolist())}, delta=delta,
        gap_relative=gap_relative, f_input=f_input, f_baseline=f_baseline, n_steps=n_steps,
        run=run_name, label=label)


# ----- several runs ------------------------------------------------------------------------------
def attribute_runs(runs: RunLike | Iterable[RunLike], text: str, target: int | str | None = None,
                   include_base: bool = True, **kw) -> list[Attribution]:
    """Attributions of the same sentence by the starting model (the first run's base) and
    each run's trained model, in order.

    ``target`` applies to every model: None explains each model's own prediction. Other
    keywords (``n_steps``, ``internal_batch_size``, ``max_length``) go to :func:`attribute`.
    """
    pairs = load_pairs(runs)
    unknown = sorted(set(kw) - {"n_steps", "internal_batch_size", "max_length"})
    if unknown:
        raise ConfigError(f"unknown keyword(s) {unknown}; attribute_runs passes n_steps, "
                          f"internal_batch_size and max_length on to attribute()")
    _check(text, kw.get("n_steps", 50), kw.get("internal_batch_size"), kw.get("max_length", 128))
    out = []
    if include_base:
        a = attribute(pairs[0].start, text, target=target, **kw)
        out.append(dataclasses.replace(a, run="base", label="base"))
    for pair in pairs:
        a = attribute(pair.result, text, target=target, **kw)
        out.append(dataclasses.replace(a, run=pair.name, label=pair.label))
    return out
