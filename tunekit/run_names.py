"""Who a run record is, for people: its number in its runs folder and its name in words.

A record's **number** (``#3``) is fixed when it is made: one more than the highest number in
its runs folder (``config.json`` ``"number"``), so it never changes, whatever is deleted or
shown beside it. Records made before numbers were kept get their place in the folder instead
(by the time their ``config.json`` was written, then by name).

A record's **name in words**: "LoRA r8 α16 · 200 ex · 1 ep", "probe · 64 ex · 1 ep · lr 0.01":
the strategy and its settings, the examples, the epochs, and any learning rate, batch size or
seed that was asked for instead of the default. A post-training record says what was done to
which record, by its number: "prune 50 % of #1", "int8 dynamic of #5", "distil of #1, 3
blocks". An imported record says so: "imported LoRA r8 α16 · 3 ep". Read from the records'
configs only (no torch), and sensible for old records that kept only a label.
"""
from __future__ import annotations

import json
import os
import re
from typing import Optional

DERIVED = ("prune", "quantize", "distil")
"""The kinds of post-training records: each is made from another record (see :func:`made_from`)."""


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


RANKED_WORDS = {"lora": "LoRA", "dora": "DoRA", "vera": "VeRA", "loha": "LoHa", "lokr": "LoKr"}
"""The adapters named by their rank in words: ``LoRA r8 α16``."""
INIT_WORDS = {"pissa": "PiSSA", "olora": "OLoRA", "gaussian": "gaussian"}
"""A LoRA start other than peft's default, in words: ``LoRA r8 α16 PiSSA``."""


def strategy_words(config: dict) -> str:
    """The strategy of a training record in words: ``LoRA r8 α16``, ``probe``, ``freeze (top 2
    blocks)``, ``LP-FT``, ``QAT int8``; unknown ones by their recorded label."""
    st = config.get("strategy") or {}
    label = str(config.get("strategy_label") or st.get("name") or "?")
    name = st.get("name") or label.split("-")[0]
    if name in RANKED_WORDS:
        rank = st.get("rank")
        if rank is None and re.match(rf"{name}-r(\d+)", label):
            rank = int(re.match(rf"{name}-r(\d+)", label).group(1))  # records that kept only the label
        words = RANKED_WORDS[name] + (f" r{rank}" if rank is not None else "")
        words += f" α{_num(st['alpha'])}" if st.get("alpha") is not None else ""
        init = st.get("init")
        words += f" {INIT_WORDS.get(init, init)}" if init not in (None, "default") else ""
        return words + (" rs" if st.get("rslora") else "")
    if name == "adalora":  # its ranks at the end average the target, from a start at init_rank
        return f"AdaLoRA r{st.get('target_rank', '?')} of {st.get('init_rank', '?')}"
    if name == "ia3":
        return "IA3"
    if name == "ln_tuning":
        return "LayerNorm tuning"
    if name == "prefix_tuning":
        return (f"prefix tuning ({st.get('tokens', '?')} tokens{', projected' if st.get('projection') else ''}"
                f"{', from text' if st.get('init') == 'text' else ''})")
    if name == "prompt_tuning":
        return f"prompt tuning ({st.get('tokens', '?')} tokens{', from text' if st.get('init') == 'text' else ''})"
    if name == "probe":
        pooling = st.get("pooling") or (label[6:] if label.startswith("probe-") else None)
        return "probe" + (f" ({pooling} pooling)" if pooling else "")
    if name == "full":
        return "full"
    if name == "lpft":
        return "LP-FT"
    if name == "gradual":  # one more layer group per stage, from the head down
        every = st.get("every")
        return "gradual unfreezing" + (f" (a group every {every} {st.get('unit', 'steps')})" if every else "")
    if name == "discriminative" and isinstance(st.get("strategy"), dict):
        inner = strategy_words({"strategy": st["strategy"], "strategy_label": st["strategy"].get("name")})
        return f"{inner}, layer decay {_num(st.get('decay', '?'))}"
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


def imported_words(config: dict) -> str:
    """An imported record's method in words (:func:`tunekit.imports.import_run`): ``imported
    LoRA r8 α16``, ``imported full fine-tune``."""
    st = dict(config.get("strategy") or {})
    method = st.get("method")
    if method == "full":
        return "imported full fine-tune"
    return "imported " + strategy_words({"strategy": {**st, "name": method}, "strategy_label": method or "?"})


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


def lr_words(lr: float) -> str:
    """A learning rate in two figures, as a slider leaves it: ``0.00018``, ``3e-5``, ``0.01``."""
    return f"{lr:.2g}".replace("e-0", "e-")


def _asked(config: dict) -> list[str]:
    """The settings asked for instead of their defaults (a learning rate, batch size, seed)."""
    train = config.get("train") or {}
    lr = train.get("lr")
    phases = config.get("phases") or []
    if phases and phases[-1].get("lr") is not None:
        lr = phases[-1]["lr"]
    out = []
    if isinstance(lr, (int, float)) and not isinstance(lr, bool):
        out.append("lr " + lr_words(lr))
    if isinstance(train.get("batch_size"), int) and train["batch_size"] != 16:
        out.append(f"batch {train['batch_size']}")
    if isinstance(train.get("seed"), int) and train["seed"] != 0:
        out.append(f"seed {train['seed']}")
    return out


def made_from(run) -> Optional[dict]:
    """``{"name", "path"}`` of the record a post-training record was made from (a
    distillation's teacher; a pruned or quantized record's parent), or None for a training
    run and for a post-training step applied to the pretrained checkpoint."""
    config = run.config
    if config.get("teacher") and run.kind == "distil":
        return config["teacher"]
    if run.kind in DERIVED:
        return run.parent
    return None


def _source_words(run) -> str:
    """What a post-training record was made from, in words: that record's number (``#1``),
    read from its record; its folder name when the record is gone or has no number; ``the
    pretrained model`` when it started from no record."""
    ref = made_from(run)
    if ref is None:
        return "the pretrained model"
    beside = os.path.join(os.path.dirname(os.path.abspath(os.fspath(run.path))), str(ref.get("name")))
    for candidate in ([ref["path"]] if ref.get("path") else []) + [beside]:
        if os.path.isfile(os.path.join(candidate, "config.json")):
            number = run_number(candidate)
            if number is not None:
                return f"#{number}"
    return str(ref.get("name"))  # its record is gone (or outside any folder): by its name


def _student_words(config: dict) -> str:
    """A distilled student's size, ``, 3 blocks``, when its record says it ("" otherwise)."""
    matched = (config.get("distillation") or {}).get("matched_teacher_blocks")
    if isinstance(matched, list) and matched:
        return f", {len(matched)} block" + ("s" if len(matched) != 1 else "")
    return ""


def display_name(run) -> str:
    """``run``'s name in words (see :attr:`tunekit.runs.Run.display_name`); a post-training
    record says what was done and to which record, by that record's number: ``prune 50 % of
    #1``, ``int8 dynamic of #5``, ``distil of #1, 3 blocks``."""
    config = run.config
    if run.kind in DERIVED:
        of = " of " + _source_words(run)
        if run.kind == "distil":
            return "distil" + of + _student_words(config)
        return _operation_words(config) + of
    parts = [imported_words(config) if run.kind == "import" else strategy_words(config)]
    train = config.get("train") or {}
    examples = (config.get("data") or {}).get("train_used") or train.get("train_size")
    if isinstance(examples, int):
        parts.append(f"{examples:,} ex")
    phases = [p.get("epochs") for p in config.get("phases") or []]
    if len(phases) > 1 and all(isinstance(e, int) for e in phases):
        parts.append("+".join(map(str, phases)) + " ep")
    elif isinstance(train.get("epochs"), int):
        parts.append(f"{train['epochs']} ep")
    return " · ".join(parts + _asked(config))


def loss_words(run) -> str:
    """What ``run``'s training loss is, in words: ``cross-entropy loss`` (every task's loss on
    its labels or next tokens); a distillation's loss is its distillation loss, with its terms
    and their weights: ``distillation loss (response + cross-entropy)``, ``distillation loss
    (response + 0.5 relation)``."""
    distillation = run.config.get("distillation") or {}
    weights = distillation.get("loss") or {}
    if run.kind != "distil" or not isinstance(weights, dict) or not weights:
        return "cross-entropy loss"
    terms = list(weights.items())
    hard = distillation.get("hard")
    if isinstance(hard, (int, float)) and hard > 0:
        terms.append(("cross-entropy", hard))
    words = [name if w == 1 else f"{_num(w)} {name}" for name, w in terms]
    return "distillation loss (" + " + ".join(words) + ")"


# ----- numbers ------------------------------------------------------------------------------------------
_FOLDERS: dict[str, tuple[int, dict[str, int]]] = {}


def _records(runs_dir) -> list[tuple[int, str]]:
    """``(config.json mtime_ns, name)`` of each record in ``runs_dir``, oldest first."""
    entries = []
    try:
        with os.scandir(os.fspath(runs_dir)) as it:
            for e in it:
                if e.name.startswith(".") or not e.is_dir():
                    continue
                try:
                    entries.append((os.stat(os.path.join(e.path, "config.json")).st_mtime_ns, e.name))
                except OSError:
                    continue  # not a record (or one still being made)
    except OSError:
        return []
    return sorted(entries)


def creation_order(runs_dir, refresh: bool = False) -> dict[str, int]:
    """``{record name: place}`` of the records in ``runs_dir``, 0 for the first made (by the
    time its config.json was written, then by name). Only file times are read."""
    return {name: i for i, (_, name) in enumerate(_records(runs_dir))}


_STORED: dict[str, tuple[int, Optional[int]]] = {}  # config.json path: (its mtime_ns, the number in it)


def _stored_number(config_path: str, mtime_ns: int) -> Optional[int]:
    """The number a record's config.json holds (read once per version of the file), or None."""
    known = _STORED.get(config_path)
    if known is not None and known[0] == mtime_ns:
        return known[1]
    try:
        with open(config_path, encoding="utf-8") as f:
            n = json.load(f).get("number")
    except (OSError, ValueError, AttributeError):
        n = None
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None
    _STORED[config_path] = (mtime_ns, n)
    return n


def numbers(runs_dir, refresh: bool = False) -> dict[str, int]:
    """``{record name: number}`` of the records in ``runs_dir``: each record's stored number,
    or (records made before numbers were kept) its place in the folder plus one. Kept until the
    folder changes; a config.json is read once (a folder of a thousand records costs one stat each)."""
    root = os.path.abspath(os.fspath(runs_dir))
    try:
        stamp = os.stat(root).st_mtime_ns
    except OSError:
        return {}
    cached = _FOLDERS.get(root)
    if cached is not None and cached[0] == stamp and not refresh:
        return cached[1]
    out = {}
    for place, (mtime, name) in enumerate(_records(root)):
        stored = _stored_number(os.path.join(root, name, "config.json"), mtime)
        out[name] = stored if stored is not None else place + 1
    _FOLDERS[root] = (stamp, out)
    return out


def next_number(runs_dir) -> int:
    """The number the next record made in ``runs_dir`` gets: one more than the highest there."""
    return 1 + max(numbers(runs_dir, refresh=True).values(), default=0)


def run_number(run) -> Optional[int]:
    """``run``'s number in its runs folder (a Run, or its record's path), or None."""
    path = getattr(run, "path", None) or run
    path = os.path.abspath(os.fspath(path))
    config = getattr(run, "config", None)
    if isinstance(config, dict):
        n = config.get("number")
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return n
    parent, name = os.path.split(path)
    found = numbers(parent)
    if name not in found:  # made since the folder was last read (within its clock tick)
        found = numbers(parent, refresh=True)
    return found.get(name)
