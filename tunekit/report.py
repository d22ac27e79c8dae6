"""One self-contained HTML report of a comparison: open it anywhere, no kernel, no network.

    tk.report.write_report(runs, "report.html", title="Rotten Tomatoes, MiniLM")

The file holds plotly.js once (inlined with the first figure), the comparison table,
where and on what the runs were trained, and the figures of :mod:`tunekit.plots`.
Every piece of text that comes from a run record is HTML-escaped.
"""
from __future__ import annotations

import datetime as _dt
import html
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from tunekit import plots
from tunekit.config import ConfigError
from tunekit.metrics import primary
from tunekit.plots import captions
from tunekit.run_names import lr_words
from tunekit.runs import Run

_FORMATS: dict[str, Callable[[float], str]] = {
    "rank": lambda v: f"{int(v)}",
    "alpha": lambda v: f"{v:g}",
    "lr": lr_words,
    "epochs": lambda v: f"{int(v)}",
    "train examples": lambda v: f"{int(v):,}",
    "batch size": lambda v: f"{int(v)}",
    "seed": lambda v: f"{int(v)}",
    "trainable params": lambda v: f"{int(v):,}",
    "trainable %": lambda v: f"{v:.3g}",
    "accuracy": lambda v: f"{v:.3f}",
    "macro-F1": lambda v: f"{v:.3f}",
    "perplexity": lambda v: f"{v:,.2f}",
    **{k: (lambda v: f"{v:.3f}") for k in ("ROUGE-L", "ROUGE-1", "ROUGE-2")},
    **{k: (lambda v: f"{v:.1f}") for k in ("BLEU", "chrF")},
    "wall time s": lambda v: f"{v:,.1f}",
    "samples/s": lambda v: f"{v:,.0f}",
    "memory MB": lambda v: f"{v:,.0f}",
    "params": lambda v: f"{int(v):,}",
    "size MB": lambda v: f"{v:,.1f}",
    "CPU latency ms": lambda v: f"{v:,.0f}",
}
TEXT_COLUMNS = ("run", "strategy", "kind", "status", "record")
#: the runs table's first columns, where a room looks: the name, the metrics, the status, the cost
FIRST_COLUMNS = ("run", "accuracy", "macro-F1", "ROUGE-L", "ROUGE-1", "ROUGE-2", "BLEU", "chrF", "perplexity",
                 "status", "kind", "size MB", "CPU latency ms",
                 "trainable %", "wall time s", "memory MB")
"""Columns of the runs table read as text (left-aligned); the others are numbers (right)."""
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { padding: 0.3em 0.8em; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f6f6f6; } td.text, th.text { text-align: left; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: 600; } dd { margin: 0; }
.note { color: #555; font-size: 0.9em; } .swatch { display: inline-block; width: 0.8em; height: 0.8em;
        border-radius: 50%; margin-right: 0.4em; vertical-align: middle; }
"""


def formatted_table(runs: Any) -> pd.DataFrame:
    """:func:`tunekit.plots.comparison_table` with every value as display text ("-" if missing)."""
    df = plots.comparison_table(runs)
    out = df.astype(object)
    for col in df.columns:
        fmt = _FORMATS.get(col, str)
        out[col] = [("-" if v is None or (not isinstance(v, str) and pd.isna(v)) else fmt(v)) for v in df[col]]
    return out


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _distinct(values) -> list:
    out = []
    for v in values:
        if v not in (None, "", [], {}) and v not in out:
            out.append(v)
    return out


def runs_table_html(runs: Any, css_class: str = "tunekit-runs") -> str:
    """The runs table as plain HTML, the same in the lab and in the report: one header cell
    per column and one cell per column in every row, text left and numbers right (inline
    styles, so it needs no style sheet), and each run's colour swatch before its name.

    What a room reads first comes first: the run's name, its metrics and its status (the name
    already says the strategy and its settings); the rest follows. A table wider than its place
    scrolls sideways inside itself, with the run's name column kept in view."""
    runs = plots.as_runs(runs)
    df = formatted_table(runs)
    df = df[[c for c in FIRST_COLUMNS if c in df.columns] + [c for c in df.columns if c not in FIRST_COLUMNS]]
    colours = plots.colors(runs)
    cell = "padding:0.25em 0.7em;border-bottom:1px solid #eee;white-space:nowrap;"
    pinned = "position:sticky;left:0;z-index:1;background:#fff;"  # the name stays while the rest scrolls

    def align(c):
        return "text" if c in TEXT_COLUMNS else "num", "left" if c in TEXT_COLUMNS else "right"

    def style(c):
        return f"{cell}{pinned if c == 'run' else ''}text-align:{align(c)[1]}"

    head = "".join(f'<th class="{align(c)[0]}" style="{style(c)}">{_esc(c)}</th>' for c in df.columns)
    body = []
    for r, row in zip(runs, df.to_dict("records")):
        cells = []
        for c in df.columns:
            value = _esc(row[c])
            if c == "run":
                value = (f'<span class="swatch" title="{_esc(colours[r.name])}" style="display:inline-block;'
                         f"width:0.8em;height:0.8em;border-radius:50%;margin-right:0.4em;vertical-align:middle;"
                         f'background:{_esc(colours[r.name])}"></span>{value}')
            cells.append(f'<td class="{align(c)[0]}" style="{style(c)}">{value}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    # a table wider than its place scrolls sideways inside its own box, never the panel around it
    return (f'<div class="tunekit-table-scroll" style="overflow-x:auto;max-width:100%;width:100%;min-width:0;'
            f'overscroll-behavior-x:contain"><table class="{_esc(css_class)}" '
            f'style="border-collapse:collapse"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _settings_html(runs: list[Run]) -> str:
    """Per-run settings: epochs, batch size, peak learning rate of each phase, seed, steps."""
    rows, names = [], plots.display_names(runs)
    for r in runs:
        t = r.config.get("train", {})
        lrs = [m.get("lr") for m in r.metrics() if m.get("event") == "phase_start"] or [t.get("lr")]
        peak_lr = " then ".join("-" if v is None else f"{v:.3g}" for v in lrs)
        phases = r.config.get("phases", [])
        epochs = " + ".join(str(p.get("epochs")) for p in phases) if len(phases) > 1 else t.get("epochs", "-")
        rows.append([names[r.name], epochs, t.get("batch_size", "-"), peak_lr, t.get("max_length", "-"),
                     t.get("seed", "-"), r.summary.get("steps", "-")])
    head = ["run", "epochs", "batch size", "peak lr", "max tokens", "seed", "steps"]
    return ("<table><thead><tr>" + "".join(f'<th class="{"text" if i == 0 else "num"}">{_esc(h)}</th>'
                                           for i, h in enumerate(head)) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f'<td class="{"text" if i == 0 else "num"}">{_esc(v)}</td>'
                                       for i, v in enumerate(row)) + "</tr>" for row in rows)
            + "</tbody></table>")


def _setup_html(runs: list[Run], written: str) -> str:
    cfgs = [r.config for r in runs]
    sums = [r.summary for r in runs]
    data = []
    for d in _distinct([c.get("data", {}) for c in cfgs]):
        used = f"{d.get('train_used', '?')} train / {d.get('validation_used', '?')} validation examples used"
        labels = ", ".join(map(str, d.get("label_names", [])))
        data.append(f"{d.get('name', '?')} ({d.get('source', '?')}; split seed {d.get('seed', '?')}): "
                    f"{used}; labels: {labels}")
    models = [f"{m.get('source', '?')} ({m.get('architecture', '?')}, {len(m.get('groups', []))} layer groups, "
              f"pooling {m.get('pooling', '?')})" for m in _distinct([c.get("model", {}) for c in cfgs])]
    versions = [", ".join(f"{k} {v}" for k, v in vs.items()) for vs in _distinct([c.get("versions") for c in cfgs])]
    created = sorted(str(c["created"]) for c in cfgs if c.get("created"))
    items = [
        ("report written", f"{written} on {platform.node()} ({platform.platform()})"),
        ("trained on", ", ".join(f"{h}" for h in _distinct([s.get("host") for s in sums])) or "-"),
        ("device", ", ".join(map(str, _distinct([c.get("device") for c in cfgs]))) or "-"),
        ("runs created", f"{created[0]} to {created[-1]}" if len(created) > 1 else (created[0] if created else "-")),
        ("data", "<br>".join(_esc(d) for d in data) or "-"),
        ("model", "<br>".join(_esc(m) for m in models) or "-"),
        ("software", "<br>".join(_esc(v) for v in versions) or "-"),
    ]
    escaped_already = {"data", "model", "software"}
    return "<dl>" + "".join(f"<dt>{_esc(k)}</dt><dd>{v if k in escaped_already else _esc(v)}</dd>"
                            for k, v in items) + "</dl>"


def _notes_html(runs: list[Run]) -> str:
    notes = []
    kinds = _distinct([r.summary.get("memory_kind") for r in runs])
    meaning = {"cuda_max_allocated": "the most GPU memory PyTorch had allocated during the run "
                                     "(torch.cuda.max_memory_allocated)",
               "measured_tensors": "the bytes of the run's own tensors, measured: weights, gradients, optimizer "
                                   "state, the activations autograd kept over one training step, and any "
                                   "frozen-prefix cache"}
    for k in kinds:
        if k in meaning:
            notes.append(f"Memory ({k}): {meaning[k]}.")
        else:
            notes.append(f"Memory is left out for the runs that recorded {k} (the process's memory, which grows "
                         "with the runs made before in the same process, so it does not compare runs).")
    if len([k for k in kinds if k in meaning]) > 1:
        notes.append("The runs measured memory in different ways; their memory columns do not compare.")
    names = plots.display_names(runs)
    for r in runs:
        s = r.summary
        if s.get("status") != "completed":
            notes.append(f"{names[r.name]} ({r.name}) {s.get('status')}: {s.get('reason') or 'no reason recorded'}.")
    return "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)


def _figures(runs: list[Run]) -> list[tuple[str, Any]]:
    """The run figures, for the metrics the runs' task has (accuracy, or perplexity)."""
    tasks = {r.task for r in runs}
    main = primary(tasks.pop() if len(tasks) == 1 else "classification")
    name = main.title[0].upper() + main.title[1:]
    figs = [("Training loss", plots.training_curves(runs)),
            (f"Validation {main.title}", plots.eval_curves(runs, f"val_{main.key}")),
            ("Validation loss", plots.eval_curves(runs, "val_loss")),
            (f"{name} vs trainable parameters", plots.pareto(runs, "trainable_params", main.key))]
    if any(r.summary.get("wall_time_s") for r in runs):
        figs.append((f"{name} vs wall time", plots.pareto(runs, "wall_time_s", main.key)))
    return figs


def render_report(runs: Any, title: str = "tunekit comparison", extra: Sequence[tuple[str, Any]] = ()) -> str:
    """The report as an HTML string (what :func:`write_report` writes).

    ``extra``: more ``(heading, figure or HTML string)`` sections after the run figures,
    e.g. the instrument views of :func:`tunekit.inspect.views.instrument_sections`. HTML
    strings are inserted as they are (tunekit's own views escape their text)."""
    runs = plots.as_runs(runs)
    written = _dt.datetime.now().isoformat(timespec="seconds")
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_esc(title)}</h1>",
             f'<p class="note">{len(runs)} run{"s" if len(runs) != 1 else ""}, written {_esc(written)} '
             f"by tunekit.</p>"]
    if not runs:
        parts.append("<p>No runs to show.</p>")
    parts += ["<h2>Comparison</h2>", runs_table_html(runs, css_class="runs"), _notes_html(runs),
              "<h2>Setup</h2>", _setup_html(runs, written), "<h3>Settings per run</h3>", _settings_html(runs)]
    first = True
    for heading, fig in (_figures(runs) if runs else []) + list(extra):
        parts.append(f"<h2>{_esc(heading)}</h2>")
        line = captions.caption_html(captions.caption_for(fig))  # how to read it, as under the lab's views
        if isinstance(fig, str):
            parts += [fig, line]
            continue
        height = fig.layout.height
        parts.append(fig.to_html(full_html=False, include_plotlyjs=first, include_mathjax=False,
                                 config={"displaylogo": False, "responsive": True},
                                 default_height=f"{height}px" if height else "460px"))
        parts.append(line)
        first = False
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(runs: Any, path: str | os.PathLike = "tunekit-report.html",
                 title: str = "tunekit comparison", extra: Sequence[tuple[str, Any]] = ()) -> Path:
    """Write the report to ``path`` atomically (a temporary file, then a rename) and return it."""
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"path: cannot create the folder {str(path.parent)!r} for the report: "
                          f"{e.strerror or e}") from None
    if path.is_dir():
        raise ConfigError(f"path {str(path)!r} is a folder; give the report's file name, "
                          f"e.g. {str(path / 'report.html')!r}")
    text = render_report(runs, title, extra)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    except OSError as e:
        raise ConfigError(f"path: cannot write the report into {str(path.parent)!r}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is for sharing
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):  # e.g. the disk filled: the old report, if any, is untouched
            raise ConfigError(f"path: writing the report {str(path)!r} failed: {e.strerror or e}") from None
        raise
    return path.resolve()


__all__ = ["write_report", "render_report", "formatted_table", "runs_table_html", "TEXT_COLUMNS"]
