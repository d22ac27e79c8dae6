"""What a post-training record's size and speed mean, in words a room can read.

    tk.post.in_words(run)   # "Half the block weights (50 %) are now zero, but ..."

Two results surprise people and are explained from the record's own measurements: a magnitude
prune is no smaller and no faster (its zeros are still stored and multiplied as dense matrices),
and int8 quantization does not quarter the file (only the block Linear layers are quantized; the
embeddings, norms and head stay in float). Latency is quoted as the ratio to the model before,
timed in turns, with its spread (:func:`tunekit.post.base.latency_ratio`): milliseconds wander
with the machine's load, the ratio much less.
"""
from __future__ import annotations

from typing import Optional

from tunekit.runs import Run


def _mb(x) -> str:
    return f"{x:,.1f} MB"


def speed_in_words(summary: dict) -> Optional[str]:
    """The latency ratio and its spread, e.g. ``"0.98x the time of the model before (0.95-1.02
    over 15 paired runs)"``; None for a record without one."""
    r = summary.get("latency_ratio")
    if r is None:
        return None
    q1, q3 = summary.get("latency_ratio_q1"), summary.get("latency_ratio_q3")
    spread = f" ({q1:.2f}-{q3:.2f} over {summary.get('latency_repeats', '?')} paired runs)" if q1 is not None else ""
    return f"{r:.2f}x the time of the model before{spread}"


def size_in_words(run: Run) -> Optional[str]:
    """Why the record's size on disk is what it is (prune and quantize records), or None."""
    s, op = run.summary, run.strategy
    before, after = (s.get("before") or {}).get("size_mb"), s.get("size_mb")
    if before is None or after is None:
        return None
    if run.kind == "prune" and op.get("method") == "magnitude":
        share = s.get("sparsity")
        zeros = f"{100 * share:.0f} % of the block weights" if share is not None else "the pruned weights"
        return (f"{zeros} are now exactly zero, but they are still stored and multiplied as dense matrices: "
                f"{_mb(before)} before, {_mb(after)} after, and no faster. Removing whole heads or neurons "
                f"(method 'heads' or 'neurons') makes the matrices smaller")
    if run.kind == "prune":
        return f"whole {op.get('method')} were removed, so the matrices are smaller: {_mb(before)} -> {_mb(after)}"
    if run.kind == "quantize":
        quantized, total = s.get("quantized_params"), (s.get("before") or {}).get("params")
        bits = op.get("bits", 8)
        kept = ""
        if quantized is not None and total:
            kept = (f"; the other {total - quantized:,} parameters ({100 * (1 - quantized / total):.0f} %: "
                    f"embeddings, norms and the head) stay in 32-bit float")
        layers = f"the weights of the {s.get('quantized_layers', '?')} block Linear layers"
        if bits >= 8:
            return f"{_mb(before)} -> {_mb(after)}, not a quarter: only {layers} take one byte instead of four{kept}"
        return (f"{_mb(before)} -> {_mb(after)}: {layers} are rounded to {bits} bits but torchao stores them one "
                f"value per byte, as int8{kept}")
    return None


def in_words(run: Run) -> str:
    """What a post-training record's size and speed mean, in one or two sentences (empty for a
    record with neither measured)."""
    parts = [p for p in (size_in_words(run), speed_in_words(run.summary)) if p]
    if not parts:
        return ""
    text = parts[0][0].upper() + parts[0][1:]
    if len(parts) > 1:
        text += f". It takes {parts[1]}"
    return text + "."
