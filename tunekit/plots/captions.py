"""One line under every chart saying how to read it, and parameter names in words.

    tk.plots.captions.caption("spectrum")       # "Singular values of the update ΔW ..."
    tk.plots.captions.param_label("bert.encoder.layer.5.attention.self.value.weight")  # "block 5 · value"
    tk.plots.captions.caption_for(fig)          # the line for a tunekit figure, from its title

The lab's views and the report put the same line under the same figure. No torch import.
"""
from __future__ import annotations

import functools
import math
import re
from typing import Any, Optional

from tunekit.architectures import module_label

CAPTIONS: dict[str, str] = {
    "training_curves": "Loss on the training batches as training goes on (across: training step): lower is "
                       "better; a line that has gone flat has stopped learning.",
    "eval_curves": "Score on held-out validation examples, measured during training (across: step). For accuracy "
                   "and F1 higher is better and the dashed line is chance (what guessing scores); for loss "
                   "lower is better.",
    "pareto": "Each dot is one run: its validation score (up) against what it cost (across). The best runs sit "
              "up and to the left; the dotted line joins the runs that no other run beats on both.",
    "learning_curves": "Each line is one strategy: its accuracy on the test split (up) as it gets more training "
                       "examples (across), the mean over seeds; the band is the 95 % interval over seeds and "
                       "test examples. Where two bands overlap, the difference may be noise.",
    "cost_curves": "Each line is one strategy through its training-set sizes (the labels): test accuracy (up) "
                   "against what a cell cost (across), with the 95 % interval as a bar. Up and to the left is "
                   "better.",
    "weight_change_heatmap": "How far each weight matrix moved from where it started, as a share of its size "
                             "(rows: blocks, columns: parts of a block): brighter = moved more; dark = did not "
                             "move (frozen layers, and every block of a probe, stay at 0).",
    "head_change_bar": "How far the parts outside the blocks moved, as a share of their size (word embeddings, "
                       "pooler, and the classification head, which starts from random and so usually moves "
                       "most).",
    "weight_change_difference": "One run's change minus another's, per block and part: red = the first run "
                                "moved that matrix more, blue = the second did, white = the same.",
    "rank_by_block": "How many independent directions each block's update uses (its effective rank, averaged "
                     "over the block's changed matrices): LoRA with rank r can use at most r; full fine-tuning "
                     "can use many.",
    "spectrum": "Singular values of the update ΔW of one matrix, largest first (how many directions it uses); "
                "the dotted line of the same colour is random noise of the same size: points above it are "
                "learned structure.",
    "magnitude_direction": "Each dot is one weight matrix of a block: how far its rows turned (across: 1 − cosine "
                           "to the start) against how far their lengths changed (up). In the DoRA paper full "
                           "fine-tuning falls and LoRA rises; each title's r and interval say if the cloud slopes.",
    "adapter_ranks": "Each cell is one adapted weight matrix and the number in it is its rank at the end: how many "
                     "directions its update may use. LoRA gives every matrix the same; AdaLoRA moves rank to the "
                     "matrices that matter for the task.",
    "virtual_tokens": "Each bar is one learned virtual token that the model reads before every text: its length, "
                      "and above it the real word whose embedding points most the same way. The dotted line is a "
                      "typical word's length.",
    "prefix_layers": "Prefix tuning changes no weight: every layer reads learned keys and values as if tokens "
                     "had come before the text. Each line is how long they are in each layer against the model's "
                     "own for a sentence (1, the dashed line: as long); keys solid, values dotted.",
    "cka_by_layer": "How alike each layer's outputs are before and after training, on the same examples "
                    "(linear CKA): 1 = unchanged; lower = that layer now represents the text differently.",
    "pca_scatter": "Each dot is one example's features as they enter the classification head, placed on the "
                   "base model's two main directions (PC1, PC2): faint = before training, solid = after, "
                   "colour = the true class. Classes pulling apart means the model learned to tell them apart.",
    "attribution_html": "Which words pushed the prediction: red pushed towards the class being explained, blue "
                        "against it, stronger colour = stronger push. The last column says how closely the word "
                        "scores add up to the model's output (a small change = a trustworthy explanation).",
    "generation_attribution_html": "Which words of the source the boxed output word came from, for each model: "
                                   "red raised its probability, blue lowered it, stronger colour = stronger. "
                                   "Beside it, the word's log-probability with the source and with the source "
                                   "blanked; the scores add up to that difference.",
    "generation_attribution_view": "For one model, a row per output word and a column per source word: where "
                                   "each word it wrote came from (red = raised its probability, blue = lowered).",
    "attribution_view": "Each word's score for each run (red = pushed towards the explained class, blue = "
                        "against); hover for the number.",
    "attribution_difference": "Each run's word scores minus the base model's: red = the run leans on that word "
                              "more than the base does, blue = less, white = the same.",
    "sparsity_curve": "Validation score as more and more of the block weights are set to zero (further right = "
                      "more zeroed): a flat stretch means the model can be pruned that far at little cost.",
    "learning_rates": "The learning rate of each layer group at each training step (up, on a log scale), with "
                      "the training loss below on the same steps. Dashed lines are the rates planned from the "
                      "settings, solid ones what the optimizer took; groups at the same rate share one line.",
    "lr_find": "A short run whose learning rate grows at every step (across, log scale) and its training loss "
               "(up; the line is smoothed, the dots are single steps). Good rates are on the falling part, "
               "before the lowest point; the marked rate is the suggestion and the rule that gave it.",
    "forgetting_map": "Each dot is one strategy: how much it learned on the new task (up) against how much it "
                      "forgot of the old one (across). The best sit up and to the left.",
}
"""figure kind -> one line, in plain words, on how to read it."""


def caption(kind: str) -> str:
    """The line for a figure ``kind`` (a key of :data:`CAPTIONS`, e.g. ``"spectrum"``); "" if unknown."""
    return CAPTIONS.get(kind, "")


# the first match wins: (pattern on the title, kind)
_TITLES = [
    (r"^training loss", "training_curves"),
    (r"^weight change per module", "weight_change_heatmap"),
    (r"change outside the blocks", "head_change_bar"),
    (r"spectrum of|singular values", "spectrum"),
    (r"of the update per block", "rank_by_block"),
    (r"^magnitude and direction", "magnitude_direction"),
    (r"^where each adapter put its rank", "adapter_ranks"),
    (r"^learned virtual tokens", "virtual_tokens"),
    (r"^learned prefix", "prefix_layers"),
    (r"^learning rate per layer group", "learning_rates"),
    (r"^learning-rate finder", "lr_find"),
    (r"representation drift", "cka_by_layer"),
    (r"head input features", "pca_scatter"),
    (r"^attribution: each run minus", "attribution_difference"),
    (r"^token attributions", "attribution_view"),
    (r"as more weights are zeroed", "sparsity_curve"),
    (r"^what learning .* cost", "forgetting_map"),
    (r" minus ", "weight_change_difference"),
    (r" vs ", "pareto"),
    (r"^(validation )?(accuracy|macro-f1|loss|perplexity)", "eval_curves"),
]


def tag(fig, kind: str):
    """Mark ``fig`` as a figure of ``kind`` (a key of :data:`CAPTIONS`), kept in its layout's
    ``meta`` (through FigureWidgets, JSON and HTML pages): its caption never depends on its title."""
    meta = fig.layout.meta
    fig.layout.meta = {**(dict(meta) if isinstance(meta, dict) else {}), "tunekit_kind": kind}
    return fig


def figure_kind(kind: str):
    """Decorator: the figure a plot function returns is tagged as ``kind`` (see :func:`tag`)."""
    def decorate(fn):
        @functools.wraps(fn)
        def plot(*args, **kwargs):
            fig = fn(*args, **kwargs)
            return tag(fig, kind) if hasattr(fig, "layout") else fig
        return plot
    return decorate


def kind_of(item: Any) -> Optional[str]:
    """The kind of a tunekit figure (from the tag its plot function gave it; for a figure without
    one, from its title) or HTML snippet; None if not known."""
    if isinstance(item, str):
        if "tunekit-generation-attribution" in item:
            return "generation_attribution_html"
        return "attribution_html" if "tunekit-attribution" in item else None
    try:
        meta = item.layout.meta
        title = item.layout.title.text or ""
    except AttributeError:
        return None
    if isinstance(meta, dict) and meta.get("tunekit_kind") in CAPTIONS:
        return meta["tunekit_kind"]
    title = title.split("<br>")[0].strip().lower()
    for pattern, kind in _TITLES:
        if re.search(pattern, title):
            return kind
    return None


def caption_for(item: Any, kind: Optional[str] = None) -> str:
    """The line to put under ``item`` (a figure or HTML snippet); ``kind`` when the caller knows it."""
    return caption(kind or kind_of(item) or "")


def caption_html(text: str) -> str:
    """The caption as a line of HTML (normal size, grey), as the lab and the report show it."""
    import html
    return (f'<div class="tunekit-caption" style="color:#444;font-size:0.95em;margin:2px 0 14px 0;'
            f'max-width:900px">{html.escape(text)}</div>') if text else ""


# ----- parameter names in words ------------------------------------------------------------------
_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.(.+)$")
_OUTSIDE_PARTS = {"word_embeddings": "word", "position_embeddings": "position", "token_type_embeddings":
                  "token type", "LayerNorm": "norm", "wte": "word", "wpe": "position", "embed_tokens": "word"}


MODULE_WORDS = {"query": "query", "key": "key", "value": "value", "qkv": "query·key·value",
                "attn_out": "attention out", "attn_norm": "attention norm", "gate": "MLP gate",
                "intermediate": "MLP in", "output": "MLP out", "out_norm": "MLP norm"}
"""The parts of a block in words (the canonical labels of :mod:`tunekit.architectures`)."""


def module_words(label: str) -> str:
    """A block part's canonical label in words: ``attn_out`` -> ``attention out``."""
    return MODULE_WORDS.get(label, str(label).replace("_", " "))


def param_label(name: str) -> str:
    """A parameter's name in words, the same for every architecture:
    ``bert.encoder.layer.5.attention.self.value.weight`` -> ``block 5 · value``,
    ``bert.embeddings.word_embeddings.weight`` -> ``embeddings · word``, the classifier -> ``head``.
    A bias says so (``block 5 · value bias``)."""
    parts = name.split(".")
    kind = ""
    if parts[-1] in ("weight", "bias"):
        kind = " bias" if parts[-1] == "bias" else ""
        parts = parts[:-1]
    path = ".".join(parts)
    m = _BLOCK.search(path)
    if m:
        return f"block {int(m.group(1))} · {module_words(module_label(m.group(2)))}{kind}"
    low = path.lower()
    if any(w in low for w in ("classifier", "score", "lm_head", "head", "pre_classifier")) and "embed" not in low:
        return "head" + kind
    if "pooler" in low:
        return "pooler" + kind
    if "embed" in low or parts[-1] in ("wte", "wpe"):
        last = parts[-1]
        return f"embeddings · {_OUTSIDE_PARTS.get(last, last.replace('_embeddings', '').replace('_', ' '))}" + kind
    if "norm" in low or parts[-1].startswith("ln_"):
        return "final norm" + kind
    return name


def share_in_words(fraction: float) -> str:
    """A relative size in words with 2 significant digits: 0.0000067 -> "0.00067 %", 0.12 -> "12 %"."""
    if not isinstance(fraction, (int, float)) or not math.isfinite(fraction):
        return "?"
    pct = 100 * abs(fraction)
    if pct == 0:
        return "0 %"
    digits = max(0, 1 - int(math.floor(math.log10(pct))))
    return f"{pct:.{digits}f} %"


__all__ = ["CAPTIONS", "caption", "caption_for", "caption_html", "kind_of", "param_label", "share_in_words"]
