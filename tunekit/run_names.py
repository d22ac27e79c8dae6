"""A run record's name in words, for people: "LoRA r8 α16 · 200 ex · 1 ep", "probe · 64 ex ·
1 ep", "full · 500 ex · 2 ep → prune 50 %". Read from the record's config only (no torch), and
sensible for old records that kept only a strategy label. :func:`tunekit.plots.display_names`
tells apart runs shown together that share one."""
from __future__ import annotations

import re


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _strategy_words(config: dict) -> str:
    """The strategy of a training record in words: ``LoRA r8 α16``, ``probe``, ``freeze (top 2
    blocks)``, ``LP-FT``, ``QAT int8``; unknown ones by their recorded label."""
    st = config.get("strategy") or {}
    label = str(config.get("strategy_label") or st.get("name") or "?")
    name = st.get("name") or label.split("-")[0]
    if name == "lora":
        rank = st.get("rank")
        if rank is None and re.match(r"lora-r(\d+)", label):
            rank = int(re.match(r"lora-r(\d+)", label).group(1))  # records that kept only the label
        words = "LoRA" + (f" r{rank}" if rank is not None else "")
        return words + (f" α{_num(st['alpha'])}" if st.get("alpha") is not None else "")
    if name == "ia3":
        return "IA3"
    if name == "probe":
        pooling = st.get("pooling") or (label[6:] if label.startswith("probe-") else None)
        return "probe" + (f" ({pooling} pooling)" if pooling else "")
    if name == "full":
        return "full"
    if name == "lpft":
        return "LP-FT"
    if name == "qat":
        return f"QAT int{st.get('bits', label[7:] if label.startswith('qat-int') else '?')}"
    if name == "freeze":
        rest = label[len("freeze-"):] if label.startswith("freeze-") else label
        if rest.startswith("top") and rest[3:].isdigit():
            k = int(rest[3:])
            return f"freeze (top {k} block{'s' if k != 1 else ''} train)"
        return f"freeze ({rest.replace('-', ' ')})"
    if name == "distil":
        loss = (config.get("distillation") or {}).get("loss") or st.get("loss") or {}
        return "distil (" + "+".join(loss) + ")" if loss else "student alone (no teacher)"
    return label


def _operation_words(config: dict) -> str:
    """A post-training step in words: ``prune 50 %``, ``prune 2 heads``, ``int8 dynamic``."""
    op = config.get("strategy") or {}
    label = str(config.get("strategy_label") or op.get("name") or config.get("kind", "?"))
    if op.get("name") == "prune":
        method = op.get("method")
        if method == "magnitude" and isinstance(op.get("sparsity"), (int, float)):
            return f"prune {round(100 * op['sparsity'])} %" + (" per layer" if op.get("scope") == "layer" else "")
        if method == "heads" and op.get("amount") is not None:
            return f"prune {op['amount']} head{'s' if op['amount'] != 1 else ''}"
        if isinstance(op.get("amount"), (int, float)) and method:
            return f"prune {round(100 * op['amount'])} % {method}"
    if op.get("name") == "quantize" and op.get("method"):
        method = str(op["method"])
        if method.startswith("intx") and op.get("bits"):
            method = f"int{op['bits']}" + method[4:]
        return method.replace("-", " ")
    return label


def display_name(run, depth: int = 0) -> str:
    """``run``'s name in words (see :attr:`tunekit.runs.Run.display_name`); a post-training
    record is named by the chain of records it came from (at most 8 deep)."""
    config = run.config
    if run.kind in ("prune", "quantize"):
        parent = run.parent
        start = "pretrained"
        if parent is not None:
            start = str(parent.get("name"))
            if depth < 8:  # a chain of records: name each by what it came from
                try:
                    start = display_name(run.parent_run(), depth + 1)
                except (ValueError, OSError):  # a parent record gone or damaged: its folder name
                    pass
        return f"{start} → {_operation_words(config)}"
    parts = [_strategy_words(config)]
    train = config.get("train") or {}
    examples = (config.get("data") or {}).get("train_used") or train.get("train_size")
    if isinstance(examples, int):
        parts.append(f"{examples:,} ex")
    phases = [p.get("epochs") for p in config.get("phases") or []]
    if len(phases) > 1 and all(isinstance(e, int) for e in phases):
        parts.append("+".join(map(str, phases)) + " ep")
    elif isinstance(train.get("epochs"), int):
        parts.append(f"{train['epochs']} ep")
    return " · ".join(parts)
