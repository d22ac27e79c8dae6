"""The JSON types of what tunekit reads from a run record, declared once and checked where a
record is read (:class:`tunekit.runs.Run`), so that a damaged file is one clear error that names
the file and the field, not a ``TypeError`` deep in a table or a report.

A field may be missing (records made before it existed lack it); present, it must have one of
the types declared for it. A path names nested fields with dots (``"model.label_names"``), the
items of a list with ``[]`` (``"phases[].lr"``) and any key of an object with ``*``
(``"val_*"``). Fields not declared here are not checked (nothing reads them by type).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional

from tunekit.config import RunRecordError

OBJECT, LIST, STR, INT, NUMBER, BOOL, NULL = "object", "list", "string", "integer", "number", "boolean", "null"

_RUN_REF = {"": (OBJECT, NULL), "name": STR, "path": (STR, NULL)}  # {"name", "path"} of another record


def _ref(prefix: str) -> dict:
    return {(prefix + "." + k if k else prefix): v for k, v in _RUN_REF.items()}


CONFIG: dict[str, Any] = {
    "kind": STR, "task": (STR, NULL), "format": (STR, NULL), "name": STR, "number": INT,
    **_ref("parent"), **_ref("teacher"),
    "model": OBJECT, "model.source": (STR, NULL), "model.path": (STR, NULL), "model.task": (STR, NULL),
    "model.label_names": (LIST, NULL), "model.label_names[]": STR, "model.pooling": (STR, NULL),
    "model.groups": LIST,
    "data": OBJECT, "data.name": (STR, NULL), "data.label_names": LIST, "data.label_names[]": STR,
    "data.train_used": (INT, NULL), "data.validation_used": (INT, NULL),
    "strategy": OBJECT, "strategy.name": STR, "strategy.rank": (INT, NULL), "strategy.alpha": (NUMBER, NULL),
    "strategy.method": (STR, NULL), "strategy.bits": (INT, NULL),
    "strategy.layers": (LIST, NULL), "strategy.layers[]": STR, "strategy.pooling": (STR, NULL),
    "strategy.loss": (OBJECT, NULL), "strategy.loss.*": NUMBER,
    "strategy_label": STR,
    "train": OBJECT, "train.seed": INT, "train.lr": (NUMBER, OBJECT, NULL), "train.lr.*": NUMBER,
    "train.lr_decay": (NUMBER, NULL), "train.schedule": (STR, NULL), "train.epochs": (INT, NULL),
    "train.batch_size": (INT, NULL), "train.train_size": (INT, NULL), "train.eval_size": (INT, NULL),
    "train.max_length": (INT, NULL), "train.precision": (STR, NULL),
    "phases": LIST, "phases[]": OBJECT, "phases[].epochs": (INT, NULL), "phases[].lr": (NUMBER, NULL),
    "phases[].steps": (INT, NULL),
    "phases[].strategy": (OBJECT, NULL),
    "structure": (LIST, NULL), "structure[]": OBJECT,
    "trained_before": (LIST, NULL), "trained_before[]": STR,
    "params": OBJECT, "params.trainable": (INT, NULL), "params.total": (INT, NULL), "params.percent": (NUMBER, NULL),
    "distillation": (OBJECT, NULL), "distillation.loss": (OBJECT, NULL), "distillation.loss.*": NUMBER,
    "distillation.hard": (NUMBER, NULL), "distillation.matched_teacher_blocks": (LIST, NULL),
    "device": (STR, NULL), "versions": (OBJECT, NULL), "precision": (OBJECT, STR, NULL),
    "precision.autocast": (STR, NULL),
}
"""config.json: what was made and how."""

SUMMARY: dict[str, Any] = {
    "status": STR, "reason": (STR, NULL),
    "pid": (INT, NULL), "host": (STR, NULL), "pooling": (STR, NULL), "memory_kind": (STR, NULL),
    "experiment": (OBJECT, NULL), "experiment.name": STR, "experiment.path": (STR, NULL),
    "experiment.cell": (STR, NULL), "experiment.trial": (STR, NULL),
    "val_*": NUMBER, "steps": (INT, NULL), "samples": (INT, NULL),
    "wall_time_s": (NUMBER, NULL), "samples_per_s": (NUMBER, NULL), "peak_memory_mb": (NUMBER, NULL),
    "nonzero_params": (NUMBER, NULL), "size_mb": (NUMBER, NULL), "latency_ms": (NUMBER, NULL),
    "weights": (STR, NULL), "params": (OBJECT, INT, NULL), "before": (OBJECT, NULL), "teacher": (OBJECT, NULL),
    "snapshots": (LIST, NULL), "snapshots[]": OBJECT, "snapshots[].step": INT, "snapshots[].file": STR,
    "snapshots_mb": (NUMBER, NULL), "snapshots_s": (NUMBER, NULL),
    "rates": (LIST, NULL), "rates[]": OBJECT, "rates[].*": NUMBER,
}
"""summary.json: how the run ended, and what it measured."""

EVENT: dict[str, Any] = {
    "event": STR, "step": INT, "epoch": NUMBER, "phase": INT, "loss": NUMBER, "lr": NUMBER,
    "lrs": OBJECT, "lrs.*": NUMBER,
    "val_*": NUMBER, "elapsed_s": NUMBER,
    "generations": LIST, "generations[]": OBJECT, "generations[].*": (STR, NUMBER),
}
"""One line of metrics.jsonl (a line whose fields have other types is skipped, as a torn one is)."""


def json_type(value: Any) -> str:
    """The JSON type of a value read by ``json.load`` (a bool is not a number)."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, str):
        return STR
    if isinstance(value, list):
        return LIST
    if isinstance(value, dict):
        return OBJECT
    return type(value).__name__


def _allowed(value: Any, types) -> bool:
    types = (types,) if isinstance(types, str) else types
    kind = json_type(value)
    return kind in types or (kind == INT and NUMBER in types)


def _values(doc: Any, path: str):
    """``(where, value)`` of every value at ``path`` in ``doc`` (none where a step is missing or
    not a container: the check of that step reports it)."""
    found = [("", doc)]
    for step in re.findall(r"[^.\[\]]+|\[\]", path):
        nxt = []
        for where, value in found:
            if step == "[]" and isinstance(value, list):
                nxt += [(f"{where}[{i}]", v) for i, v in enumerate(value)]
            elif step == "*" and isinstance(value, dict):
                nxt += [(f"{where}.{k}" if where else k, v) for k, v in value.items()]
            elif isinstance(value, dict) and step in value:
                nxt.append((f"{where}.{step}" if where else step, value[step]))
        found = nxt
    return found


def _matching(doc: Mapping, pattern: str):
    """Top-level keys matching a pattern with ``*`` (``val_*``), else the key itself."""
    if "*" not in pattern.split(".")[0]:
        return [pattern]
    head, _, rest = pattern.partition(".")
    rx = re.compile(re.escape(head).replace(r"\*", ".*") + r"\Z")
    return [k + ("." + rest if rest else "") for k in doc if isinstance(k, str) and rx.match(k)]


def problem(doc: Any, fields: Mapping[str, Any]) -> Optional[str]:
    """Words for the first field of ``doc`` whose type is not the declared one, else None."""
    if not isinstance(doc, dict):
        return f"not a JSON object (a {json_type(doc)})"
    for pattern, types in fields.items():
        for path in _matching(doc, pattern):
            for where, value in _values(doc, path):
                if not _allowed(value, types):
                    allowed = " or ".join((types,) if isinstance(types, str) else types)
                    return f"{where!r} is {_a(json_type(value))} {_shown(value)}, not {allowed}"
    return None


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _shown(value: Any) -> str:
    text = repr(value)
    return "(" + (text if len(text) <= 40 else text[:37] + "...") + ")"


def check(doc: Any, fields: Mapping[str, Any], file) -> dict:
    """``doc`` as read from ``file``, or a :class:`RunRecordError` naming the file and the field."""
    said = problem(doc, fields)
    if said is not None:
        raise RunRecordError(f"{file} is damaged: {said}")
    return doc

