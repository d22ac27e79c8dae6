"""The lower half of the lab: every run in the runs directory, and the views over a selection.

Each view is one call into :mod:`tunekit.inspect` and :mod:`tunekit.plots`; figures are
shown as plotly FigureWidgets, tables and attributions as escaped HTML. A run has one name
(:func:`tunekit.plots.display_names`) and one colour (:func:`tunekit.plots.run_color`) in the
table, the picker and every view.
"""
from __future__ import annotations

import dataclasses
import html
import threading
import time
from typing import Callable

import ipywidgets as W
import plotly.graph_objects as go

import tunekit as tk
from tunekit import inspect, plots
from tunekit.inspect import views as inspect_views
from tunekit.inspect.views import DEFAULT_SENTENCE
from tunekit.plots import captions
from tunekit.report import runs_table_html
from tunekit.run_names import made_from
from tunekit.widgets.experiments import ExperimentsPanel
from tunekit.widgets.importer import ImportBox
from tunekit.widgets.post import PostPanel
from tunekit.widgets.sizer import FitFigures, figure_widget
from tunekit.widgets.steps import StepSlider
from tunekit.widgets.words import note

VIEWS = ("Compare", "Weights", "Representations", "Attribution")
WHAT = {"Compare": "the training curves and costs", "Weights": "the weight change",
        "Representations": "the representation drift", "Attribution": "the token attributions"}
"""What each view computes, in the banner's words ("Computing the weight change for 3 runs…")."""

_BANNER = ('<div class="tunekit-view-status" style="font-size:1em;padding:6px 10px;margin:4px 0;'
           'border-radius:4px;{style}">{text}</div>')
_STYLES = {"computing": "background:#e8f1fb;border-left:4px solid #1f77b4;color:#123",
           "stale": "background:#fff4e0;border-left:4px solid #e08e0b;color:#402a00",
           "error": "background:#fdecea;border-left:4px solid #b00020;color:#5f0010",
           "info": "background:#f4f4f4;border-left:4px solid #999;color:#333"}


def banner(kind: str, text: str) -> str:
    """The status line inside a view's tab (escaped text, normal size, coloured by ``kind``)."""
    return _BANNER.format(style=_STYLES[kind], text=html.escape(text))


def _as_widget(item, text_scale: float = 1.0) -> W.Widget:
    if isinstance(item, str):
        return W.HTML(item)
    if isinstance(item, W.Widget):  # a view of its own (the step slider)
        return item
    # as wide as its tab (FitFigures, in the panel, tells it when); its text as large as the lab's
    return figure_widget(plots.axes.scale_text(item, text_scale))


def _kind(kind: str, item):
    """Tag a figure with its kind (a key of :data:`tunekit.plots.captions.CAPTIONS`) for its caption."""
    if not isinstance(item, str):
        item._tunekit_kind = kind
    return item


def _with_captions(items: list, text_scale: float = 1.0) -> list[W.Widget]:
    """Each figure (or HTML view) followed by its caption line: how to read it, in words."""
    out = []
    for item in items:
        kind = getattr(item, "_tunekit_kind", None)
        out.append(_as_widget(item, text_scale))
        text = captions.caption_for(item, kind)
        if text:
            out.append(W.HTML(captions.caption_html(text)))
    return out


def _origin(run, by_name: dict) -> str:
    """The name of the training run a record comes from: a post-training record's source,
    followed back (a prune of a distillation of #1: #1) while that source is in the folder; a
    training run's (or an orphan's) own name."""
    name, seen = run.name, {run.name}
    source = made_from(run)
    while source is not None and source.get("name") in by_name and source["name"] not in seen:
        name = source["name"]
        seen.add(name)
        source = made_from(by_name[name])
    return name


def default_selection(runs: list, limit: int) -> list[str]:
    """The runs selected when nothing was (a new lab, a kernel restart): the newest training
    runs, each with every record derived from it (pruned, quantized, distilled), at most
    ``limit`` names, in the runs' order. A family larger than ``limit`` keeps its training run
    and its newest derived records."""
    by_name = {r.name: r for r in runs}
    roots: list[str] = []  # training runs (and records whose source is gone), oldest first
    derived: dict[str, list[str]] = {}
    for r in runs:
        root = _origin(r, by_name)
        if root == r.name:
            roots.append(root)
        else:
            derived.setdefault(root, []).append(r.name)
    chosen: list[str] = []
    for root in reversed(roots):  # the newest training run first
        family = [root] + derived.get(root, [])
        if len(chosen) + len(family) > limit:
            if not chosen:  # the newest family alone is too many: its training run, its newest records
                chosen = [root] + family[1:][len(family) - limit:]
            break
        chosen += family
    keep = set(chosen)
    return [r.name for r in runs if r.name in keep]


def _runs_word(n: int) -> str:
    return f"{n} run" + ("" if n == 1 else "s")


class RunsPanel(W.VBox):
    """A table of the runs on disk, a selection, and the Compare / Weights /
    Representations / Attribution views of the selected runs.

    A view computes when its tab is opened; when the selection changes, the open view
    recomputes and the others are marked out of date (they recompute when opened). While
    a view computes, a banner and a progress bar inside its tab say what is being done;
    a failure is said there in words."""

    DEFAULT_LIMIT = 4
    """How many runs are selected when none was: the newest training runs with their derived records."""

    def __init__(self, runs_dir: str, data: tk.TextDataset, model: str = "minilm",
                 busy: Callable[[], bool] = lambda: False):
        self.runs_dir, self._data = runs_dir, data
        self.table = W.HTML()
        self.select = W.SelectMultiple(options=[], rows=6, description="compare", layout=W.Layout(width="520px"))
        self.refresh_button = W.Button(description="Refresh runs", layout=W.Layout(width="auto"))
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.sentence = W.Text(value=DEFAULT_SENTENCE, description="sentence", layout=W.Layout(width="620px"))
        self.message = W.HTML()
        self.panes = {name: W.VBox() for name in VIEWS}
        self.status = {name: W.HTML() for name in VIEWS}
        self.progress = {name: W.IntProgress(value=0, min=0, max=1, bar_style="info",
                                             layout=W.Layout(width="320px", display="none")) for name in VIEWS}
        self.state = dict.fromkeys(VIEWS, "empty")  # empty, computing, drawn, stale, error
        self.drawn_for: dict[str, tuple] = {}
        self._generation = dict.fromkeys(VIEWS, 0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()  # one view computes at a time (they share the CPU and the models)
        self.text_scale = 1.0  # the lab's projector switch: the figures' text this many times its size
        self.buttons = {}
        tabs = []
        for name in VIEWS:
            b = W.Button(description="Recompute", tooltip=f"compute {WHAT[name]} again for the selected runs",
                         layout=W.Layout(width="auto"))
            b.on_click(lambda _b, n=name: self.show(n))
            self.buttons[name] = b
            extra = [self.sentence] if name == "Attribution" else []
            tabs.append(W.VBox([*extra, W.HBox([b, self.progress[name]]), self.status[name], self.panes[name]]))
        self.post = PostPanel(self)
        self.importer = ImportBox(self)
        imports = W.Accordion(children=[self.importer], selected_index=None)
        imports.set_title(0, "Import… an adapter or a fine-tune made elsewhere")
        self.experiments = ExperimentsPanel(runs_dir, data, model, busy=busy, finished=self.refresh)
        self.tabs = W.Tab(children=tabs + [self.post, self.experiments])
        for i, name in enumerate(VIEWS + ("Post-training", "Experiments")):
            self.tabs.set_title(i, name)
        super().__init__([FitFigures(), W.HTML("<b>Runs</b> (in " + html.escape(str(runs_dir)) + ")"), self.table,
                          W.HBox([self.select, self.refresh_button]), imports, self.message, self.tabs])
        self.refresh()
        self.tabs.observe(lambda _c: self._opened(), names="selected_index")
        self.select.observe(lambda _c: self._selection_changed(), names="value")
        self._opened()

    def runs(self) -> list:
        return tk.list_runs(self.runs_dir)

    @property
    def data(self) -> tk.TextDataset:
        """The lab's data set (the views' sentences and the experiments' cells use it)."""
        return self._data

    @data.setter
    def data(self, data: tk.TextDataset) -> None:
        self._data = data
        if hasattr(self, "experiments"):
            self.experiments.data = data

    def set_text_scale(self, scale: float) -> None:
        """The views' figures with their text ``scale`` times its size (the lab's projector
        switch), those shown now and those drawn later."""
        factor, self.text_scale = scale / self.text_scale, scale
        for pane in self.panes.values():
            for w in pane.children:
                if isinstance(w, go.FigureWidget):
                    plots.axes.scale_text(w, factor)
                elif isinstance(w, StepSlider):
                    w.set_text_scale(scale, factor)
        self.experiments.set_text_scale(scale)

    def selected(self) -> list:
        names = set(self.select.value)
        return [r for r in self.runs() if r.name in names]

    def refresh(self) -> None:
        """Re-read the runs directory (it survives kernel restarts); keep the selection and add
        new runs, or select the newest training runs with their derived records."""
        runs = self.runs()
        self.table.value = runs_table_html(runs) if runs else "<i>No runs yet: press Train.</i>"
        before, known = set(self.select.value), {v for _, v in self.select.options}
        names = plots.display_names(runs)
        self.select.options = [(f"{names[r.name]}  [{r.status}]", r.name) for r in runs]
        # keep the selection, and add runs that appeared since (the one just trained)
        chosen = [r.name for r in runs if r.name in before or (known and r.name not in known)]
        self.select.value = tuple(chosen or default_selection(runs, self.DEFAULT_LIMIT))
        if hasattr(self, "post"):
            self.post.refresh(runs)

    # ----- when views compute ---------------------------------------------------------------
    def visible(self) -> str | None:
        """The view whose tab is open (None for the Post-training tab)."""
        i = self.tabs.selected_index
        return VIEWS[i] if i is not None and i < len(VIEWS) else None

    def _opened(self) -> None:
        """A tab was opened: compute its view unless it shows the current selection already."""
        view = self.visible()
        if view and self.state[view] in ("empty", "stale") and self.select.value:
            self.show(view)
        elif view and not self.select.value:
            self.status[view].value = banner("info", "Select one or more runs above to see this view.")

    def _selection_changed(self) -> None:
        """The open view recomputes; the others, if drawn, are marked out of date."""
        chosen = tuple(self.select.value)
        for view in VIEWS:
            if self.state[view] in ("empty",) or self.drawn_for.get(view) == chosen:
                continue
            if view == self.visible() and chosen:
                self.show(view, stale=True)
            elif self.state[view] != "computing" or not chosen:
                self.state[view] = "stale"
                self.status[view].value = banner(
                    "stale", "Out of date: the selection changed. "
                    + ("It recomputes when you open this tab." if chosen else "Select one or more runs."))
        self._opened()

    def wait(self, timeout: float = 300) -> None:
        """Wait for the views being computed (tests; the app itself never waits)."""
        deadline = time.monotonic() + timeout
        while any(t.is_alive() for t in self._threads) and time.monotonic() < deadline:
            for t in list(self._threads):
                t.join(max(0.0, deadline - time.monotonic()))

    def show(self, view: str, wait: bool = False, stale: bool = False) -> None:
        """Compute a view for the selected runs (in a thread: the kernel stays responsive)."""
        runs = self.selected()
        if not runs:
            self.message.value = "<i>Select one or more runs first.</i>"
            self.status[view].value = banner("info", "Select one or more runs above to see this view.")
            return
        self.message.value = ""
        builders: dict[str, Callable[[list], list]] = {
            "Compare": self._view_compare, "Weights": self._view_weights,
            "Representations": self._view_representations, "Attribution": self._view_attribution}
        self._generation[view] += 1
        generation, chosen = self._generation[view], tuple(self.select.value)
        self.state[view] = "computing"
        doing = f"Computing {WHAT[view]} for {_runs_word(len(runs))}…"
        if stale or (self.panes[view].children and self.drawn_for.get(view) != chosen):
            self.status[view].value = banner("stale", "Out of date: the selection changed — "
                                             + doing[0].lower() + doing[1:])
        else:
            self.status[view].value = banner("computing", doing)
        bar = self.progress[view]
        bar.value, bar.max, bar.layout.display = 0, 1, None

        def step(done: int, total: int) -> None:
            if generation == self._generation[view]:
                bar.max, bar.value = max(1, total), min(done, max(1, total))

        def work():
            with self._lock:
                if generation != self._generation[view]:
                    return  # a newer request for this view replaced this one
                try:
                    items = builders[view](runs, step)
                    widgets = _with_captions(items, self.text_scale)
                except Exception as e:  # noqa: BLE001 - say it in the app, in words
                    if generation != self._generation[view]:
                        return
                    said = str(e) if isinstance(e, (tk.TunekitError, ValueError)) else f"{type(e).__name__}: {e}"
                    self.state[view] = "error"
                    self.drawn_for[view] = chosen
                    self.panes[view].children = ()  # no figure of an older selection under the error
                    self.status[view].value = banner("error", f"Could not draw this view: {said}")
                    bar.layout.display = "none"
                    return
                if generation != self._generation[view]:
                    return
                self.panes[view].children = widgets
                self.state[view], self.drawn_for[view] = "drawn", chosen
                bar.layout.display = "none"
                if tuple(self.select.value) != chosen:  # the selection changed while this computed
                    self.state[view] = "stale"
                    self.status[view].value = banner("stale", "Out of date: the selection changed. It "
                                                     "recomputes when you open this tab.")
                    if view == self.visible():
                        self._opened()  # starts the next computation (it waits for this lock)
                    return
                names = plots.display_names(runs)
                self.status[view].value = (
                    '<div class="tunekit-view-status" style="color:#555;margin:4px 0">Showing '
                    + html.escape(", ".join(names[r.name] for r in runs)) + ".</div>")

        thread = threading.Thread(target=work, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        if wait:
            thread.join()

    def _view_compare(self, runs: list, step=lambda done, total: None) -> list:
        trained = [r for r in runs if r.kind != "prune" and r.kind != "quantize"] or runs
        out = [_kind("training_curves", plots.training_curves(trained)),
               _kind("eval_curves", plots.eval_curves(trained))]
        out += [_kind("pareto", plots.pareto(trained, x))
                for x in ("trainable_params", "peak_memory_mb", "wall_time_s")]
        if any(r.summary.get("size_mb") is not None for r in runs):  # post-training records: what they cost to run
            out += [_kind("pareto", plots.pareto(runs, x)) for x in ("size_mb", "latency_ms")]
        return out

    def _usable(self, runs: list) -> list:
        ok = [r for r in runs if r.status in ("completed", "stopped") and r.has_weights
              and ((r.summary.get("steps") or 0) > 0 or r.kind != "train")]
        if not ok:
            raise ValueError("none of the selected runs has trained weights to inspect")
        return ok

    def _view_weights(self, runs: list, step=lambda done, total: None) -> list:
        runs = self._usable(runs)
        names, colours = plots.display_names(runs), plots.colors(runs)
        step(0, 4)
        pairs = inspect.load_pairs(runs)  # each run's models loaded once, for every instrument below
        wc = plots.named(inspect.weight_change(pairs), runs)
        step(1, 4)
        sp = inspect.update_spectra(pairs)
        plots.named(sp.table, runs)
        step(2, 4)
        changed = sp.table[(sp.table["delta_norm"] > 0) & sp.table["block"].notna()]
        # the spectrum of the matrix that moved most, for every run that changed it
        top_matrix = changed.loc[changed["delta_norm"].idxmax(), "name"] if len(changed) else None
        kept = inspect.kept_points(pairs)
        # no run changed any weight (prefix tuning on a causal LM: no head either): no empty map, no
        # empty bars; the lines below say where their change is
        none_moved = not (wc["delta_norm"] > 0).any()
        if none_moved:
            out = []
        elif kept:  # kept during training: the map and the spectrum at each point
            top = wc.loc[wc["block"].notna(), "rel_change"].max()
            out = [StepSlider(pairs, runs, zmax=float(top) if top > 0 else 1.0, text_scale=self.text_scale,
                              spectrum=top_matrix, colors=colours)]
        else:
            out = [_kind("weight_change_heatmap", plots.weight_change_heatmap(wc))]
        norms = inspect.norms_only(wc)
        if norms:  # LayerNorm tuning: where its change is, in words
            out.append(note(", ".join(names[n] for n in norms) + (" changes" if len(norms) == 1 else " change")
                             + " no weight matrix: only the normalization layers' scale and shift moved (the "
                             "'attn norm' and 'out norm' columns above), with the new head."))
        prompts = inspect.prompted(pairs)
        for kind, what in (("prompt", "prompt tuning learned virtual tokens that the model reads before every "
                                      "text (below: their lengths and the nearest words)"),
                           ("prefix", "prefix tuning learned keys and values that every layer reads as if tokens "
                                      "had come before the text")):
            held = list(prompts.loc[prompts["kind"] == kind, "run"])
            if held:  # their change is in what the model reads, not in any weight
                out.append(note(", ".join(names[n] for n in held) + (" changes" if len(held) == 1 else " change")
                                 + f" no weight of the model: {what}."))
        tokens = plots.named(inspect.virtual_tokens(pairs), runs)
        if len(tokens):
            out.append(_kind("virtual_tokens", plots.virtual_tokens(tokens, colors=colours)))
        prefix = plots.named(inspect.prefix_layers(pairs), runs)
        if len(prefix):  # prefix tuning: its keys and values in every layer, against the model's own
            out.append(_kind("prefix_layers", plots.prefix_layers(prefix, colors=colours)))
        rebased = inspect_views.rebased_words(runs, names)
        if rebased:  # PiSSA / OLoRA moved part of each weight into the adapter before training
            out.append(note(rebased))
        if none_moved:
            step(4, 4)
            return out
        out.append(_kind("head_change_bar", plots.head_change_bar(wc, colors=colours)))
        # "A minus B" only between runs that changed something inside the blocks: against a run that
        # changed none (a probe), the difference is the other run's own map, nothing more
        changed_names = inspect.moved_blocks(wc)
        moved = [r for r in runs if r.name in changed_names]
        still = [r for r in runs if r not in moved]
        if len(moved) >= 2:
            out.append(_kind("weight_change_difference",
                        plots.weight_change_difference(wc, moved[-1].name, moved[0].name)))
        elif len(runs) >= 2 and still:
            out.append(note(
                "No difference map: " + ", ".join(names[r.name] for r in still)
                + (" changes" if len(still) == 1 else " change") + " no weight inside the blocks (a probe trains "
                "only the head; frozen blocks stay put), so a difference would only repeat the other run's map "
                "above."))
        if len(changed):
            out.append(_kind("rank_by_block", plots.rank_by_block(sp.table, colors=colours)))
            if not kept:  # with snapshots the slider draws it, at each point
                out.append(_kind("spectrum", plots.spectrum(sp, top_matrix, colors=colours)))
            step(3, 4)
            # with snapshots, every point after the start (coloured by step), as the DoRA paper plots them
            table = plots.named(inspect.magnitude_direction(pairs, steps=kept), runs)
            out.append(_kind("magnitude_direction", plots.magnitude_direction(table, colors=colours)))
            ranks = inspect.adapter_ranks(pairs)
            if inspect.ranks_moved(ranks):  # AdaLoRA's allocation, beside any LoRA's uniform one
                out.append(_kind("adapter_ranks", plots.adapter_ranks(plots.named(ranks, runs))))
        step(4, 4)
        return out

    def data_for(self, runs: list) -> tk.TextDataset:
        """The examples to compare representations on: the data the runs were trained on (the
        lab's current data, or that built-in set if the runs came from another)."""
        names = {r.config.get("data", {}).get("name") for r in runs}
        if names <= {self.data.name}:
            return self.data
        if len(names) == 1 and next(iter(names)) in tk.data.BUILTIN:
            return tk.data.load(next(iter(names)))
        raise tk.ConfigError(f"the selected runs were trained on {', '.join(sorted(map(str, names)))}; "
                         f"select runs of one data set (the lab holds {self.data.name})")

    def _view_representations(self, runs: list, step=lambda done, total: None) -> list:
        runs = self._usable(runs)
        data = self.data_for(runs)
        step(0, 2)
        drift = plots.named(inspect.representation_drift(runs, data=data, n=128), runs)
        step(1, 2)
        pca = plots.named(inspect.pca_features(runs, data, n=128), runs)
        step(2, 2)
        return [_kind("cka_by_layer", plots.cka_by_layer(drift, colors=plots.colors(runs))),
                _kind("pca_scatter", plots.pca_scatter(pca))]

    GENERATION_TOKENS = 8  # output tokens the lab explains (one integration each)
    GENERATION_STEPS = 16

    def _view_generation_attribution(self, runs: list, names: dict, step) -> list:
        """Text-to-text runs: which source tokens each token of one reference came from, for the
        base model and each run (the same tokens in every row). The source is the sentence box's
        text, or, while it holds the classification example, the first validation pair's."""
        if len({r.task for r in runs}) > 1:
            raise tk.ConfigError("select runs of one task: text-to-text attributions explain output tokens, a "
                                 "classifier's explain a class")
        data = self.data_for(runs)
        first = data.validation.iloc[0]
        typed = self.sentence.value.strip()
        source, target = (first["text"], first["target"]) if typed in ("", DEFAULT_SENTENCE) else (typed, None)
        what = "The first validation pair's reference" if target is not None else "What the first run writes"
        if target is None:  # a source of the user's own: every model explains what the first run writes
            target = inspect.attribute_generation(runs[0], source, max_new_tokens=self.GENERATION_TOKENS,
                                                  n_steps=1, tokens=[0]).target
        step(0, 1)
        attrs = [a if a.run not in names else dataclasses.replace(a, label=names[a.run])
                 for a in inspect.attribute_generation_runs(runs, source, target, n_steps=self.GENERATION_STEPS,
                                                            max_new_tokens=self.GENERATION_TOKENS)]
        step(1, 1)
        last = attrs[-1]
        token = max(range(len(last.output)), key=lambda i: last.logprobs[i] - last.baseline_logprobs[i])
        return [note(f"{what}, {target!r}, token by token: the boxed one is the token whose probability "
                      f"depends most on the source for {last.label}."),
                _kind("generation_attribution_html", plots.generation_attribution_html(attrs, token=token)),
                _kind("generation_attribution_view", plots.generation_attribution_view(last))]

    def _view_attribution(self, runs: list, step=lambda done, total: None) -> list:
        runs = self._usable(runs)
        names = plots.display_names(runs)
        if {r.task for r in runs} & {"sft", "seq2seq"}:
            return self._view_generation_attribution(runs, names, step)
        step(0, 1)
        attrs = [a if a.run not in names else dataclasses.replace(a, label=names[a.run])
                 for a in inspect.attribute_runs(runs, self.sentence.value)]
        step(1, 1)
        return [_kind("attribution_html", plots.attribution_html(attrs)),
                _kind("attribution_difference", plots.attribution_view(attrs, difference=True))]
