"""What an adapter holds, read as peft holds it: the rank of each adapted block matrix (where
AdaLoRA put its rank), the virtual tokens of prompt tuning, and prefix tuning's keys and values
in every layer.

LoRA (and DoRA, LoHa, LoKr, VeRA) give every adapted matrix the rank they were asked for.
AdaLoRA starts every matrix at ``init_rank`` and, while it trains, cuts the singular
triplets that matter least until the ranks average ``target_rank``: its final ranks are
peft's own ``rank_pattern`` (a kept / cut flag per triplet of each matrix), which the
record's ``adapter_config.json`` keeps and which is read here as peft holds it.

    table = adapter_ranks([lora, adalora])   # one row per run x adapted block matrix
    tk.plots.adapter_ranks(table)            # a heatmap per run, one colour scale
    tokens = virtual_tokens([prompt_run])    # one row per run x virtual token
    tk.plots.virtual_tokens(tokens)          # their lengths, the words nearest to each
    prefix = prefix_layers([prefix_run])     # one row per run x layer x keys / values
    tk.plots.prefix_layers(prefix)           # their lengths against the model's own for a sentence
"""
from __future__ import annotations

import pandas as pd

from tunekit.inspect.models import load_pairs
from tunekit.tasks.base import returned_cache

_TRIPLET_VALUES = ".lora_E"
"""The end of an AdaLoRA ``rank_pattern`` key (its singular values), before the adapter's name."""


def _pattern_ranks(config) -> dict[str, int]:
    """``{adapted layer path: kept triplets}`` from an AdaLoRA config's ``rank_pattern``
    (keys ``<layer>.lora_E`` as saved, or ``<layer>.lora_E.<adapter>`` while training)."""
    out = {}
    for key, kept in (getattr(config, "rank_pattern", None) or {}).items():
        head, found, _ = key.rpartition(_TRIPLET_VALUES)
        if found and isinstance(kept, (list, tuple)):
            out[head] = int(sum(bool(k) for k in kept))
    return out


def adapter_ranks(runs) -> pd.DataFrame:
    """One row per run x adapted matrix inside the blocks: run, label, method (peft's type),
    block, module, name (the weight's canonical name), rank (what the matrix holds at the
    end) and init_rank (what it started with: AdaLoRA's ``init_r``, else the same rank).
    Runs without a ranked adapter (full fine-tuning, IA3, LayerNorm tuning, a probe) give
    no rows."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    rows = []
    for pair in load_pairs(runs):
        model = pair.result
        if model.peft is None:
            continue
        name = model.peft.active_adapter
        config = model.peft.peft_config[name]
        kept = _pattern_ranks(config)
        for path, module in model.hf.named_modules():
            ranks = getattr(module, "r", None)
            if not isinstance(module, BaseTunerLayer) or not isinstance(ranks, dict) or name not in ranks:
                continue
            weight = f"{path}.weight"
            _, block, label = model.backbone.locate(weight)
            if block is None:
                continue
            start = int(getattr(config, "init_r", None) or ranks[name])  # AdaLoRA: before any cut
            rank = kept.get(path, start)
            rows.append({"run": pair.run.name, "label": pair.run.label, "method": str(config.peft_type.value),
                         "block": block, "module": label, "name": weight, "rank": rank, "init_rank": start})
    return pd.DataFrame(rows, columns=["run", "label", "method", "block", "module", "name", "rank", "init_rank"])



def ranks_moved(table: pd.DataFrame) -> bool:
    """True when some matrix of ``table`` (from :func:`adapter_ranks`) ends at another rank than
    it started with (AdaLoRA): only then does a map of the ranks show more than the settings."""
    return bool(len(table)) and bool((table["rank"] != table["init_rank"]).any())


def virtual_tokens(runs, nearest: int = 5) -> pd.DataFrame:
    """What prompt tuning learned, per run x virtual token: run, label, token (its place before
    the text, from 0), norm (the vector's length), vocab_norm (the median length of the model's
    word embeddings, for scale), nearest (the ``nearest`` vocabulary tokens by cosine, most
    alike first) and cosine (theirs). Runs without virtual tokens give no rows, and so do
    prefix-tuning runs (their virtual tokens are keys and values in every layer, not word
    embeddings: :func:`prompted` names them)."""
    import torch
    rows = []
    for pair in load_pairs(runs):
        model = pair.result
        prompt = getattr(model.module, "prompt", None)
        if prompt is None or prompt.kind != "embeddings":  # a prefix is keys and values, not words
            continue
        with torch.no_grad():
            learned = prompt(1)[0].float().cpu()
            vocab = model.hf.get_input_embeddings().weight.detach().float().cpu()
            cos = torch.nn.functional.normalize(learned, dim=1) @ torch.nn.functional.normalize(vocab, dim=1).T
            best = cos.topk(min(nearest, vocab.shape[0]), dim=1)
        median = float(vocab.norm(dim=1).median())
        for i, (vector, values, ids) in enumerate(zip(learned, best.values, best.indices)):
            rows.append({"run": pair.run.name, "label": pair.run.label, "token": i, "norm": float(vector.norm()),
                         "vocab_norm": median, "nearest": model.tokenizer.convert_ids_to_tokens(ids.tolist()),
                         "cosine": [round(float(v), 4) for v in values]})
    return pd.DataFrame(rows, columns=["run", "label", "token", "norm", "vocab_norm", "nearest", "cosine"])


def prompted(runs) -> pd.DataFrame:
    """The runs that learned virtual tokens instead of changing weights: run, label, kind
    (``"prompt"``: embeddings before the text; ``"prefix"``: keys and values in every layer)
    and tokens (how many)."""
    rows = []
    for pair in load_pairs(runs):
        prompt = getattr(pair.result.module, "prompt", None)
        if prompt is not None:
            rows.append({"run": pair.run.name, "label": pair.run.label,
                         "kind": "prefix" if prompt.kind == "past" else "prompt", "tokens": prompt.count})
    return pd.DataFrame(rows, columns=["run", "label", "kind", "tokens"])


PREFIX_SENTENCE = "The following is a news article from the BBC."
"""The words whose keys and values prefix tuning's are compared with (any text will do: a scale)."""


def prefix_layers(runs, text: str = PREFIX_SENTENCE) -> pd.DataFrame:
    """What prefix tuning learned, per run x layer x part (``"keys"`` / ``"values"``): norm (the
    mean length of a virtual token's vector over the layer's heads, all heads together) and
    text_norm (the same mean for the tokens of ``text`` as the run's pretrained model computes
    them, for scale), and ratio = norm / text_norm: 1 is as long as the model's own. A prefix is
    read by every layer as if tokens had come before the text; its change is there, in no
    weight. Runs that are not prefix tuning give no rows."""
    import torch
    rows = []
    for pair in load_pairs(runs):
        prompt = getattr(pair.result.module, "prompt", None)
        if prompt is None or prompt.kind != "past":
            continue
        with torch.no_grad():
            learned = prompt(1)
            enc = pair.start.tokenizer([text], add_special_tokens=False, return_tensors="pt")
            out = pair.start.hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=True)
        own = returned_cache(out)
        for layer, (mine, theirs) in enumerate(zip(learned.layers, own.layers)):
            for part in ("keys", "values"):
                a, b = getattr(mine, part).float(), getattr(theirs, part).float()  # [1, heads, tokens, dim]
                norm = float(a[0].transpose(0, 1).flatten(1).norm(dim=1).mean())
                text_norm = float(b[0].transpose(0, 1).flatten(1).norm(dim=1).mean())
                rows.append({"run": pair.run.name, "label": pair.run.label, "layer": layer, "part": part,
                             "norm": norm, "text_norm": text_norm, "ratio": norm / text_norm if text_norm else None})
    return pd.DataFrame(rows, columns=["run", "label", "layer", "part", "norm", "text_norm", "ratio"])
