"""How the lab's tabs say time and progress (``1:02 elapsed < 3:10 left``), and a line in words
between a view's figures."""
from __future__ import annotations

import html
from typing import Optional


def clock(seconds: float) -> str:
    """``0:12``, ``12:05``, ``1:02:05``."""
    seconds = int(round(max(0.0, seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_label(step: int, total: int, elapsed_s: float) -> str:
    """``step 12/40 · 0:12 elapsed < 0:28 left`` (the time left from the mean time per step so far);
    ``step 0/40 · starting`` before the first step, when there is nothing to estimate from."""
    if step <= 0:
        return f"step 0/{total} · starting"
    left = elapsed_s / step * max(0, total - step)
    return f"step {step}/{total} · {clock(elapsed_s)} elapsed < {clock(left)} left"


def end_label(status: str, steps: int, total: int, wall_s: Optional[float] = None) -> str:
    """A finished run's progress, with no time left to wait: ``completed: step 32 of 32 · 0:12
    elapsed``, ``stopped at step 5 of 32 · 0:03 elapsed``, ``failed at step 0 of 32``."""
    where = f"step {steps} of {total}"
    said = f"completed: {where}" if status == "completed" else f"{status} at {where}"
    return said + (f" · {clock(wall_s)} elapsed" if isinstance(wall_s, (int, float)) else "")


def cells_label(done: int, total: int, elapsed_s: float, left_s: Optional[float]) -> str:
    """An experiment's progress: ``7 of 16 cells · 1:02 elapsed < 3:10 left`` (no estimate
    before a cell is done, none once all are)."""
    said = f"{done} of {total} cells · {clock(elapsed_s)} elapsed"
    return said + (f" < {clock(left_s)} left" if left_s is not None and done < total else "")


__all__ = ["clock", "progress_label", "end_label", "cells_label"]


def note(text: str) -> str:
    """A line in words between the figures of a view (HTML, escaped)."""
    return html.escape(text).join(['<div class="tunekit-note" style="margin:6px 0 14px 0">', "</div>"])
