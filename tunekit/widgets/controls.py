"""The lab's controls: the strategy's settings beside the model diagram (:mod:`tunekit.widgets.diagram`).

State lives in traitlets; turning it into a tunekit Strategy / TrainConfig is one
small function each (:meth:`StrategyControls.strategy`, :meth:`StrategyControls.overrides`).
The diagram always shows what the selected strategy trains (:func:`trained_parts`, read
from the strategy's own plan), and every value a control shows is the one the run uses:
the learning rate follows the strategy's default and LoRA's alpha follows 2 x rank until
the user sets them.
"""
from __future__ import annotations

import dataclasses
import html
import math
import re
from typing import Optional

import ipywidgets as W
import traitlets

import tunekit as tk
from tunekit.adapters import adaptable_layers
from tunekit.run_names import lr_words, strategy_words
from tunekit.runtime import training_memory_estimate
from tunekit.strategies import REGISTRY
from tunekit.widgets.diagram import ModelDiagram, group_title, trained_parts  # noqa: F401  (the lab's imports)
from tunekit.widgets.sizer import figure_widget

#: where the picker puts these first (the lab's order since 0.1); other strategies follow in the registry's order
LAB_ORDER = ("freeze", "lora", "ia3", "full", "probe")

#: the adapters whose rank, alpha and targets the lab sets: name -> (alpha's default as a multiple of the rank,
#: or None for a method without alpha; the rank slider's largest value)
RANKED = {"lora": (2, 64), "dora": (2, 64), "adalora": (None, 64), "loha": (1, 64), "lokr": (1, 64),
          "vera": (None, 256), "prompt_tuning": (None, 100), "prefix_tuning": (None, 100)}
#: the adapters whose start and scaling the lab sets too (LoRA's ``init`` and ``rslora``), and the starts' words
LORA_STARTED = ("lora", "dora")
LORA_STARTS = {"default": "usual", "pissa": "PiSSA", "olora": "OLoRA", "gaussian": "Gaussian"}


def _has_targets(kind: str) -> bool:
    """Whether strategy ``kind`` adapts chosen layers (a ``target_modules`` parameter): prompt
    tuning adapts none."""
    return "target_modules" in {f.name for f in dataclasses.fields(REGISTRY[kind])}


def lab_strategies() -> list[tuple[str, str]]:
    """The strategy picker's choices, ``(label, name)``: each registered strategy whose class
    sets a ``lab_label`` of its own (a subclass does not inherit its place), those of
    :data:`LAB_ORDER` first."""
    names = sorted(REGISTRY, key=lambda n: LAB_ORDER.index(n) if n in LAB_ORDER else len(LAB_ORDER))
    return [(vars(REGISTRY[n])["lab_label"], n) for n in names if "lab_label" in vars(REGISTRY[n])]


#: the learning rates the slider offers, each decade from 1e-6 to 0.1 in steps of 1, 2, 3, 5
#: (every built-in strategy's default is one of them; :func:`lr_choices` adds any other)
LAYER_DECAYS = [("one rate", None), ("0.95", 0.95), ("0.9", 0.9), ("0.8", 0.8), ("0.65", 0.65), ("0.5", 0.5)]
"""The layer-decay choices: one rate for all, or each layer group's rate this factor of the one above."""
LR_STEPS = tuple(float(f"{m}e{e}") for e in range(-6, 0) for m in (1, 2, 3, 5)) + (0.1,)


def lr_label(lr: float) -> str:
    """The slider's readout of ``lr``, exact: ``0.0002``, ``1e-5``, as a run's name says it
    (:func:`tunekit.run_names.lr_words`) where that is exact, else every digit."""
    short = lr_words(lr)
    return short if float(short) == lr else repr(float(lr)).replace("e-0", "e-")


def lr_choices() -> list[tuple[str, float]]:
    """The learning-rate slider's ``(label, value)`` choices, smallest first: :data:`LR_STEPS`
    and every registered strategy's ``default_lr``, so that each default is shown exactly."""
    values = sorted(set(LR_STEPS) | {float(cls.default_lr) for cls in REGISTRY.values()})
    return [(lr_label(v), v) for v in values]


class TargetToggles(W.HBox):
    """A multiple choice shown whole: a toggle per option (pressed: chosen), wrapping onto more
    lines when narrow, after its description. ``value`` is the tuple of chosen options, in the
    options' order (as ``SelectMultiple``'s), and may be set from code."""

    value = traitlets.Tuple()

    def __init__(self, options, value=(), description: str = "", description_width: str = "92px"):
        self.options = tuple(options)
        self.toggles = {name: W.ToggleButton(value=False, description=name, tooltip=f"adapt {name}",
                                             layout=W.Layout(width="auto", margin="1px 2px"))
                        for name in self.options}
        buttons = W.HBox(list(self.toggles.values()), layout=W.Layout(flex_flow="row wrap", flex="1 1 0",
                                                                      min_width="0"))
        label = W.Label(description, layout=W.Layout(width=description_width, flex="0 0 auto", margin="0 8px 0 0"))
        super().__init__([label, buttons], layout=W.Layout(width="auto", align_items="center"))
        self._syncing = False
        for t in self.toggles.values():
            t.observe(self._pressed, "value")
        self.value = tuple(value)

    @traitlets.validate("value")
    def _valid(self, proposal) -> tuple:
        unknown = [v for v in proposal["value"] if v not in self.options]
        if unknown:
            raise traitlets.TraitError(f"not among the options {list(self.options)}: {unknown}")
        return tuple(o for o in self.options if o in proposal["value"])

    @traitlets.observe("value")
    def _show(self, change) -> None:
        """Press the toggles of the chosen options, and only those, marked with a tick and colour."""
        self._syncing = True
        try:
            for name, t in self.toggles.items():
                t.value = chosen = name in change["new"]
                t.button_style, t.icon = ("success", "check") if chosen else ("", "")
        finally:
            self._syncing = False

    def _pressed(self, _change) -> None:
        """A toggle was pressed: the value is the pressed ones."""
        if not self._syncing:
            self.value = tuple(name for name, t in self.toggles.items() if t.value)


def _in_words(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


# a grid of controls: as many 200 px columns as the width holds
_GRID_CSS = ("<style>.tunekit-grid{display:grid!important;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));"
             "gap:2px 10px;width:100%}.tunekit-grid>*{min-width:0}.tunekit-grid .widget-html-content"
             # LoRA's rank, alpha and targets: a row of their own, the targets the widest (a toggle each, in
             # one line: stacked in a third of the row they took four lines)
             "{white-space:normal;line-height:1.3}.tunekit-lora{grid-column:1/-1;display:flex;gap:10px}"
             ".tunekit-lora>*{flex:0.8 1 0;min-width:0}.tunekit-lora>:first-child{flex-grow:1.5}"
             ".tunekit-lora>:last-child{flex-grow:2}"
             ".tunekit-span2{grid-column:span 2;display:flex;gap:10px}"
             ".tunekit-span2>:first-child{flex:1 1 0;min-width:0}"
             # the rates' toggle over the right end of the counts' first line (the parameters: short),
             # so that the memory line below keeps the whole width and the lab its height
             ".tunekit-counts{position:relative;width:100%}"
             ".tunekit-counts>.tunekit-rates-toggle{position:absolute;right:0;top:0;margin:0}"
             "</style>")


def _red(message: str) -> str:
    return f'<span class="tunekit-error" style="color:#b00020">{html.escape(message)}</span>' if message else ""


class StrategyControls(W.VBox):
    """Strategy and hyper-parameters; ``strategy()`` and ``overrides()`` read them out.

    ``problem`` is what makes the controls invalid, in words ("" when a run can start); it
    is shown beside the control that causes it."""

    kind = traitlets.Unicode("freeze")
    problem = traitlets.Unicode("")

    def __init__(self, model: tk.TextClassifier, diagram: ModelDiagram, **kw):
        self.model, self.diagram = model, diagram
        self._updating = False
        self._shown_default = float(tk.Freeze.default_lr)  # the default the learning rate follows
        style = {"description_width": "92px"}
        wide = W.Layout(width="auto")
        self.kind_w = W.Dropdown(options=lab_strategies(), value="freeze", description="strategy",  # its choice whole
                                 style={"description_width": "62px"}, layout=wide)
        # every layer peft can adapt inside the base model (Linear, and GPT-2's Conv1D)
        targets = sorted({n.rsplit(".", 1)[-1] for n in adaptable_layers(model.hf, model.hf.base_model_prefix + ".")})
        default_targets = [t for t in tk.LoRA().targets(model)] if targets else []
        default_short = sorted({t.rsplit(".", 1)[-1] for t in default_targets})
        self.rank = W.IntSlider(8, min=1, max=64, description="LoRA rank", style=style, layout=wide,
                                continuous_update=False)
        self.alpha = W.FloatText(16.0, description="LoRA alpha", style=style, layout=wide)
        self.alpha_note = W.HTML()
        self.alpha_edited = False  # True once the user set alpha to something other than 2 x rank
        self.targets = TargetToggles(targets, default_short, description="LoRA targets", description_width="auto")
        # LoRA's and DoRA's start (peft's init_lora_weights) and rsLoRA's scaling: one line under the rank,
        # where the rank's column had room (alpha's column is two lines), so the row grows no taller
        self.start = W.Dropdown(options=[(label, name) for name, label in LORA_STARTS.items()], value="default",
                                description="start", style={"description_width": "34px"},
                                layout=W.Layout(width="160px", flex="0 0 auto"),
                                tooltip="how the adapter starts: usual (B = 0), PiSSA (the weights' principal "
                                        "components, moved out of the base), OLoRA (a QR of the weights), "
                                        "Gaussian (A drawn from a normal)")
        self.rslora = W.Checkbox(False, description="rsLoRA", indent=False, layout=W.Layout(width="auto"),
                                 tooltip="scale the update by alpha / sqrt(rank) instead of alpha / rank")
        self.start_row = W.HBox([self.start, self.rslora], layout=W.Layout(align_items="center", gap="8px"))
        self.errors = {name: W.HTML() for name in ("kind", "rank", "alpha", "targets")}
        # shown for LoRA only: rank, alpha and targets side by side, three columns of the grid
        self.lora_box = W.HBox([W.VBox([self.rank, self.start_row, self.errors["rank"]]),
                                W.VBox([self.alpha, self.alpha_note, self.errors["alpha"]]),
                                W.VBox([self.targets, self.errors["targets"]])])
        self.lora_box.add_class("tunekit-lora")
        # a slider over round values that include every strategy's default: what it shows is exactly the
        # run's rate, and the browser sends back a position, never a rounded rate
        self.lr = W.SelectionSlider(options=lr_choices(), value=tk.Freeze.default_lr, description="learning rate",
                                    style=style, layout=wide)
        self.default_lr = W.Checkbox(True, description="the strategy's default", indent=False,
                                     layout=W.Layout(width="auto"))
        self.epochs = W.BoundedIntText(1, min=1, max=100, description="epochs", style=style, layout=wide)
        self.batch_size = W.BoundedIntText(16, min=1, max=1024, description="batch size", style=style, layout=wide)
        self.schedule = W.Dropdown(options=list(tk.config.SCHEDULES), value="linear", description="schedule",
                                   style=style, layout=wide)
        self.lr_decay = W.Dropdown(options=LAYER_DECAYS, value=None, description="layer decay", style=style,
                                   layout=wide, tooltip="each layer group's rate this factor of the one above it "
                                                        "(discriminative rates); one rate: the same for all")
        self.find = W.Button(description="Find", layout=W.Layout(width="64px"),
                             tooltip="a short learning-rate sweep for this strategy; sets the rate to its suggestion")
        # the rate of every layer group over the run's steps, drawn from these settings (the finder's
        # curve beside it once Find ran); folded away until its toggle (over the counts' first line,
        # where it costs no line) opens it, so the lab stays one screen
        self.rates_box, self.finder_box = W.VBox(), W.VBox()
        self.show_rates = W.ToggleButton(False, description="show the rates", icon="chart-line",
                                         layout=W.Layout(width="auto", flex="0 0 auto"),
                                         tooltip="the planned rate of every layer group over the run's steps, "
                                                 "and the finder's sweep")
        self.rates_panel = W.HBox([self.rates_box, self.finder_box],
                                  layout=W.Layout(flex_flow="row wrap", display="none"))
        self.rates_panel.add_class("tunekit-rates")
        self.show_rates.observe(self._rates_shown, "value")
        sizes = {"description_width": "108px"}  # "train examples" whole
        self.train_size = W.BoundedIntText(500, min=8, max=10**7, description="train examples", style=sizes,
                                           layout=wide)
        self.eval_size = W.BoundedIntText(300, min=8, max=10**7, description="eval examples", style=sizes,
                                          layout=wide)
        self.seed = W.BoundedIntText(0, min=0, max=2**31 - 1, description="seed", style=style, layout=wide)
        self.counts = W.HTML()
        for w in (self.kind_w, self.rank, self.targets, self.start, self.rslora):
            w.observe(self._changed, "value")
        self.alpha.observe(self._alpha_set, "value")
        diagram.observe(self._changed, "chosen")
        self.lr.observe(self._lr_set, "value")
        for w in (self.lr, self.lr_decay, self.schedule, self.epochs, self.batch_size, self.train_size):
            w.observe(lambda _c: self.preview(), "value")
        self.default_lr.observe(lambda c: self._changed() if c["new"] else None, "value")
        # four columns beside the file browser at 1280 px (fewer when narrower): strategy, learning
        # rate and its default, epochs; the run's sizes; the seed; LoRA's rank, alpha and targets
        lr = W.HBox([self.lr, self.find, self.default_lr])
        lr.add_class("tunekit-span2")
        grid = W.HBox([W.VBox([self.kind_w, self.errors["kind"]]), lr, self.epochs,
                       self.batch_size, self.schedule, self.lr_decay, self.train_size, self.eval_size, self.seed,
                       self.lora_box])
        grid.add_class("tunekit-grid")
        self.counts.layout.width = "100%"
        counts = W.Box([self.counts, self.show_rates])  # the toggle at the right of the counts' short first line
        counts.add_class("tunekit-counts")
        self.show_rates.add_class("tunekit-rates-toggle")
        super().__init__([W.HTML(_GRID_CSS), grid, counts, self.rates_panel], **kw)
        self._changed()

    # ----- reading the controls out ------------------------------------------------------------
    def strategy(self) -> tk.Strategy:
        """The strategy the controls describe (raises ConfigError on a bad combination)."""
        kind = self.kind_w.value
        if kind in RANKED:
            settings = {REGISTRY[kind].rank_field: self.rank.value}
            if _has_targets(kind):
                settings["target_modules"] = list(self.targets.value)
            if RANKED[kind][0] is not None:
                settings["alpha"] = self.alpha.value
            if kind in LORA_STARTED:
                settings.update(init=self.start.value, rslora=self.rslora.value)
            return REGISTRY[kind](**settings)
        if kind != "freeze":  # probe, full, ia3, LayerNorm tuning: no settings of their own
            return REGISTRY[kind]()
        trainable = set(self.diagram.chosen)
        if trainable == {"head"}:  # head only: the probe computes features once
            return tk.Probe()
        for k in range(1, self.model.num_blocks + 1):  # the top k blocks: the same run as tk.Freeze.top(k)
            if trainable == set(tk.Freeze.top(k).trainable_groups(self.model)):
                return tk.Freeze.top(k)
        return tk.Freeze(train=list(self.diagram.chosen))

    def take_settings(self, other: "StrategyControls") -> None:
        """Copy the strategy kind and hyper-parameters from ``other`` (the controls of the model
        this one replaces); the LoRA targets and the diagram stay this model's own. A learning
        rate or alpha that followed its default keeps following it."""
        for name in ("epochs", "batch_size", "schedule", "lr_decay", "train_size", "eval_size", "seed", "rank",
                     "start", "rslora", "kind_w"):
            getattr(self, name).value = getattr(other, name).value
        if other.alpha_edited:
            self.alpha.value = other.alpha.value
        if not other.default_lr.value:
            self.lr.value = other.lr.value
            self.default_lr.value = False  # the user's rate, even where it equals this strategy's default

    def overrides(self) -> dict:
        """TrainConfig fields set by the controls (the learning rate only once the user set it;
        until then the run takes the strategy's default, which the control shows)."""
        out = dict(epochs=self.epochs.value, batch_size=self.batch_size.value, schedule=self.schedule.value,
                   train_size=self.train_size.value, eval_size=self.eval_size.value, seed=self.seed.value)
        if self.lr_decay.value is not None:
            out["lr_decay"] = float(self.lr_decay.value)
        if not self.default_lr.value:
            out["lr"] = float(self.lr.value)
        return out

    def rate_settings(self) -> dict:
        """The settings a run's learning rates follow (:func:`tunekit.learning_rates` and the
        finder take them), as :meth:`overrides` gives them to the run."""
        return {k: v for k, v in self.overrides().items()
                if k in ("lr", "lr_decay", "schedule", "epochs", "batch_size", "train_size", "seed")}

    def preview(self) -> None:
        """Draw the planned rate of every layer group over the run's steps (while the panel is
        open): the rates ``tk.learning_rates`` gives for these settings, as the run will take them."""
        if not self.show_rates.value or self.problem:
            return
        try:
            settings = self.rate_settings()
            table = tk.learning_rates(self.model, self.strategy(), steps=-(-settings.pop("train_size")
                                                                          // settings["batch_size"]), **settings)
        except tk.ConfigError as e:
            self.rates_box.children = (W.HTML(_red(str(e))),)
            return
        fig = tk.plots.learning_rates(planned=table, title="Learning rate per layer group, as planned")
        fig.update_layout(height=340, width=None)
        self.rates_box.layout.flex = "1 1 420px"
        self.rates_box.children = (figure_widget(fig),)

    def show_finder(self, found) -> None:
        """Show a finder's sweep beside the planned rates, open the panel, and set the rate to the
        slider's value nearest its suggestion (the user's rate from now on)."""
        fig = found.plot()
        fig.update_layout(height=340, width=None)
        self.finder_box.layout.flex = "1 1 420px"
        self.finder_box.children = (figure_widget(fig),)
        if found.suggestion:
            self.lr.value = min((v for _, v in lr_choices()), key=lambda v: abs(math.log(v / found.suggestion)))
            self.default_lr.value = False
        self.show_rates.value = True
        self.preview()

    def _rates_shown(self, change) -> None:
        self.rates_panel.layout.display = None if change["new"] else "none"
        self.show_rates.description = "hide the rates" if change["new"] else "show the rates"
        self.preview()

    # ----- keeping what is shown true ------------------------------------------------------------
    def _lr_set(self, change) -> None:
        """A person moved the learning rate: theirs from now on (the default unticks). The lab's own
        update, or the browser sending back the rate shown, is no edit."""
        if self._updating or change["new"] == self._shown_default:
            return
        self.default_lr.value = False

    def _alpha_factor(self) -> int:
        return RANKED.get(self.kind_w.value, (2, 0))[0] or 2

    def _alpha_set(self, change) -> None:
        if not self._updating:
            self.alpha_edited = change["new"] != self._alpha_factor() * self.rank.value
            self._changed()

    def _set(self, widget, value) -> None:
        self._updating = True
        try:
            widget.value = value
        finally:
            self._updating = False

    def _changed(self, _change=None) -> None:
        if self._updating:
            return
        kind = self.kind = self.kind_w.value
        self.lora_box.layout.display = "" if kind in RANKED else "none"
        if kind in RANKED:  # the rank box speaks of the method chosen
            factor, most = RANKED[kind]
            title = vars(REGISTRY[kind])["lab_label"]
            self.rank.description = f"{title} {REGISTRY[kind].rank_words}"
            self.alpha.description = f"{title} alpha"
            self.targets.description = f"{title} targets"
            self.targets.layout.display = self.errors["targets"].layout.display = "" if _has_targets(kind) else "none"
            self._set(self.rank, min(self.rank.value, most))
            self.rank.max = most
            self.alpha.layout.display = self.alpha_note.layout.display = "" if factor else "none"
            self.start_row.layout.display = "" if kind in LORA_STARTED else "none"
        factor = self._alpha_factor()
        if not self.alpha_edited:
            self._set(self.alpha, float(factor * self.rank.value))
        default = factor * self.rank.value
        times = "rank" if factor == 1 else f"{factor} &times; rank"
        self.alpha_note.value = (f"= {times}" if not self.alpha_edited else
                                 f"set by you (default {times} = {default})")
        self.diagram.locked = kind != "freeze"
        problem, where, strategy, parts = "", "kind", None, {}
        if kind == "freeze" and not self.diagram.chosen:
            names = [group_title(g) for g in self.model.active_groups]
            problem, where = f"Nothing trains: press at least one layer ({_in_words(names)}) or a preset.", "diagram"
        elif kind in RANKED and _has_targets(kind) and not self.targets.value:
            problem, where = f"Pick at least one layer for {vars(REGISTRY[kind])['lab_label']} to adapt.", "targets"
        else:
            try:
                strategy = self.strategy()
                parts = trained_parts(self.model, strategy)
            except tk.ConfigError as e:
                problem, where = self._in_words(str(e))
                strategy = None
        for name, w in self.errors.items():
            w.value = _red(problem) if name == where else ""
        self.diagram.error.value = _red(problem) if where == "diagram" else ""
        if strategy is not None:
            adapter = type(strategy).__name__ if strategy.name in RANKED or strategy.name == "ia3" else (
                vars(type(strategy)).get("lab_label", strategy.name))
            self.diagram.show(parts, strategy_words({"strategy": strategy.describe(),
                                                     "strategy_label": strategy.label}), adapter,
                              strategy.stages(self.model) if isinstance(strategy, tk.GradualUnfreeze) else None)
        else:
            self.diagram.show({} if self.diagram.locked else None, kind)
        cls = type(strategy) if strategy is not None else REGISTRY[kind]
        self.default_lr.description = f"default for {cls.name}"
        self._shown_default = float(cls.default_lr)
        if self.default_lr.value:
            self._set(self.lr, self._shown_default)
        self.problem = problem
        if problem:
            self.counts.value = ""
            return
        c = self._count = strategy.count(self.model)
        mem = training_memory_estimate(c)
        self.counts.value = (self._params_line(c) + f"<br>training memory &ge; {mem['total_mb']:,} MB "
                             f"(estimate: weights {mem['weights_mb']:,} + gradients {mem['gradients_mb']:,} + "
                             f"AdamW {mem['optimizer_mb']:,}; activations extra)" + self._stages_line(strategy))
        self.preview()

    def _stages_line(self, strategy) -> str:
        """Gradual unfreezing: the group(s) that join at each stage, in order."""
        if not isinstance(strategy, tk.GradualUnfreeze):
            return ""
        stages = strategy.stages(self.model)
        joins = [" + ".join(group_title(g) for g in stages[0])] + [
            group_title(next(g for g in later if g not in earlier)) for earlier, later in zip(stages, stages[1:])]
        return (f"<br>{len(stages)} stages, one group more in each (the diagram: the stage each joins at): "
                + " &rarr; ".join(html.escape(j) for j in joins))

    FIELDS = {"tokens": ("rank", "The number of virtual tokens"), "rank": ("rank", "The rank"),
              "alpha": ("alpha", "Alpha"), "target_modules": ("targets", "The targets"),
              "target_rank": ("rank", "The target rank"), "init": ("rank", "The start"),
              "init_rank": ("rank", "The starting rank (1.5 x target)")}

    def _in_words(self, message: str) -> tuple[str, str]:
        """(message, control) for a strategy's ConfigError: ``LoRA.rank must be at most 32 (...)
        (got 64)`` -> ``The rank must be at most 32 (...).`` beside the rank (and ``LoRA.init='olora'
        is not available ...`` -> ``The start is not available ...`` there too)."""
        m = re.match(rf"^(?:{'|'.join(cls.__name__ for cls in REGISTRY.values())})\.(\w+)(?:=\S+)?:? (.*?)"
                     rf"(?: \(got .*\))?$",
                     message, re.S)
        if m and m.group(1) in self.FIELDS:
            where, words = self.FIELDS[m.group(1)]
            return f"{words} {m.group(2)}.", where
        return message, "kind"

    @staticmethod
    def _params_line(c: dict) -> str:
        return (f"<b>{c['trainable']:,}</b> of {c['total']:,} parameters train "
                f"(<b>{c['percent']:.3g}%</b>)")

    def show_measured(self, mem: dict, params: Optional[dict] = None) -> None:
        """Replace the estimate by the memory the run measured at its first step (the engine's
        ``memory`` event)."""
        c = params or getattr(self, "_count", None)
        line = self._params_line(c) + "<br>" if c else ""
        cache = f" + cache {mem['cache_mb']:,.1f}" if mem.get("cache_mb") else ""
        cuda = f"; GPU peak {mem['cuda_peak_mb']:,.0f} MB" if "cuda_peak_mb" in mem else ""
        self.counts.value = (line + f"training memory <b>{mem['total_mb']:,.1f} MB</b> (measured: weights "
                             f"{mem['weights_mb']:,.1f} + gradients {mem['gradients_mb']:,.1f} + AdamW "
                             f"{mem['optimizer_mb']:,.1f} + activations {mem['activations_mb']:,.1f}{cache}{cuda})")
