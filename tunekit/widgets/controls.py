"""The left side of the lab: the model diagram with freeze toggles, and the strategy controls.

State lives in traitlets; turning it into a tunekit Strategy / TrainConfig is one
small function each (:meth:`StrategyControls.strategy`, :meth:`StrategyControls.overrides`).
"""
from __future__ import annotations

import html
from typing import Optional

import ipywidgets as W
import traitlets

import tunekit as tk
from tunekit.adapters import adaptable_layers
from tunekit.runtime import training_memory_estimate

KINDS = [("Freeze (toggle layers)", "freeze"), ("LoRA", "lora"), ("IA3", "ia3"), ("Full fine-tune", "full"),
         ("Probe (head only)", "probe")]


class ModelDiagram(W.VBox):
    """The model's layer groups, top to bottom, each with a train / frozen toggle."""

    trainable = traitlets.List(traitlets.Unicode()).tag(sync=False)
    locked = traitlets.Bool(False)

    def __init__(self, model: tk.TextClassifier, **kw):
        self.model = model
        self.toggles: dict[str, W.ToggleButton] = {}
        counts = model.parameter_counts()["by_group"]
        rows = []
        for g in model.group_names:
            unused = g not in model.active_groups
            t = W.ToggleButton(value=False, description=g, tooltip=f"{counts[g]['total']:,} parameters",
                               disabled=unused, layout=W.Layout(width="130px"))
            t.observe(self._toggled, "value")
            self.toggles[g] = t
            note = f"unused ({model.pooling} pooling)" if unused else f"{counts[g]['total']:,} params"
            rows.append(W.HBox([t, W.Label(note, layout=W.Layout(width="170px"))]))
        self.presets = {name: W.Button(description=name, layout=W.Layout(width="auto"))
                        for name in ("probe", "top k", "full")}
        for name, b in self.presets.items():
            b.on_click(lambda _b, n=name: self.preset(n))
        self.k = W.BoundedIntText(min(2, model.num_blocks), min=1, max=max(1, model.num_blocks), description="k",
                                  style={"description_width": "15px"}, layout=W.Layout(width="80px"))
        self.k.observe(lambda _c: self.preset("top k"), "value")
        super().__init__([W.HTML("<b>Model</b> (pressed = trains)"), *rows,
                          W.HBox([*self.presets.values(), self.k])], **kw)
        self.preset("top k")

    def preset(self, name: str) -> None:
        """probe: only the head; top k (or "top 3"): the top k blocks and what sits above them;
        full: everything on the path to the logits."""
        if name.startswith("top"):
            k = self.k.value if name == "top k" else int(name.split()[1])
            groups = tk.Freeze.top(k).trainable_groups(self.model)
        else:
            groups = {"probe": ["head"], "full": self.model.active_groups}[name]
        self.set(groups)

    def set(self, groups) -> None:
        with self.hold_trait_notifications():
            for g, t in self.toggles.items():
                t.value = g in groups and g in self.model.active_groups
        self._toggled(None)

    def _toggled(self, _change) -> None:
        for t in self.toggles.values():
            t.button_style = "success" if t.value else ""
        self.trainable = [g for g, t in self.toggles.items() if t.value]

    @traitlets.observe("locked")
    def _lock(self, change) -> None:
        for g, t in self.toggles.items():
            t.disabled = change["new"] or g not in self.model.active_groups
        for b in self.presets.values():
            b.disabled = change["new"]


class StrategyControls(W.VBox):
    """Strategy and hyper-parameters; ``strategy()`` and ``overrides()`` read them out."""

    kind = traitlets.Unicode("freeze")

    def __init__(self, model: tk.TextClassifier, diagram: ModelDiagram, **kw):
        self.model, self.diagram = model, diagram
        style = {"description_width": "110px"}
        wide = W.Layout(width="330px")
        self.kind_w = W.Dropdown(options=KINDS, value="freeze", description="strategy", style=style, layout=wide)
        # every layer peft can adapt inside the base model (Linear, and GPT-2's Conv1D)
        targets = sorted({n.rsplit(".", 1)[-1] for n in adaptable_layers(model.hf, model.hf.base_model_prefix + ".")})
        default_targets = [t for t in tk.LoRA().targets(model)] if targets else []
        default_short = sorted({t.rsplit(".", 1)[-1] for t in default_targets})
        self.rank = W.IntSlider(8, min=1, max=64, description="LoRA rank", style=style, layout=wide,
                                continuous_update=False)
        self.alpha = W.FloatText(16.0, description="LoRA alpha", style=style, layout=wide)
        self.targets = W.SelectMultiple(options=targets, value=default_short, rows=min(6, len(targets)),
                                        description="LoRA targets", style=style, layout=wide)
        self.lora_box = W.VBox([self.rank, self.alpha, self.targets])
        self.lr = W.FloatLogSlider(value=1e-4, base=10, min=-6, max=-1, step=0.25, description="learning rate",
                                   style=style, layout=wide, readout_format=".1e")
        self.default_lr = W.Checkbox(True, description="strategy's default lr", indent=False)
        self.epochs = W.BoundedIntText(1, min=1, max=100, description="epochs", style=style, layout=wide)
        self.batch_size = W.BoundedIntText(16, min=1, max=1024, description="batch size", style=style, layout=wide)
        self.schedule = W.Dropdown(options=["linear", "cosine", "constant"], description="schedule", style=style,
                                   layout=wide)
        self.train_size = W.BoundedIntText(500, min=8, max=10**7, description="train examples", style=style,
                                           layout=wide)
        self.eval_size = W.BoundedIntText(300, min=8, max=10**7, description="eval examples", style=style,
                                          layout=wide)
        self.seed = W.BoundedIntText(0, min=0, max=2**31 - 1, description="seed", style=style, layout=wide)
        self.counts = W.HTML()
        for w in (self.kind_w, self.rank, self.alpha, self.targets):
            w.observe(self._changed, "value")
        diagram.observe(self._changed, "trainable")
        self.default_lr.observe(lambda c: setattr(self.lr, "disabled", c["new"]), "value")
        self.lr.disabled = True
        super().__init__([W.HTML("<b>Strategy</b>"), self.kind_w, self.lora_box, self.default_lr, self.lr,
                          self.epochs, self.batch_size, self.schedule, self.train_size, self.eval_size,
                          self.seed, self.counts], **kw)
        self._changed()

    def strategy(self) -> tk.Strategy:
        """The strategy the controls describe (raises ConfigError on a bad combination)."""
        kind = self.kind_w.value
        if kind == "lora":
            return tk.LoRA(rank=self.rank.value, alpha=self.alpha.value, target_modules=list(self.targets.value))
        if kind == "full":
            return tk.Full()
        if kind == "ia3":
            return tk.IA3()
        if kind == "probe":
            return tk.Probe()
        trainable = set(self.diagram.trainable)
        if trainable == {"head"}:  # head only: the probe computes features once
            return tk.Probe()
        for k in range(1, self.model.num_blocks + 1):  # the top k blocks: the same run as tk.Freeze.top(k)
            if trainable == set(tk.Freeze.top(k).trainable_groups(self.model)):
                return tk.Freeze.top(k)
        return tk.Freeze(train=list(self.diagram.trainable))

    def take_settings(self, other: "StrategyControls") -> None:
        """Copy the strategy kind and hyper-parameters from ``other`` (the controls of the model
        this one replaces); the LoRA targets and the diagram stay this model's own."""
        for name in ("epochs", "batch_size", "schedule", "train_size", "eval_size", "seed", "default_lr", "lr",
                     "rank", "alpha", "kind_w"):
            getattr(self, name).value = getattr(other, name).value

    def overrides(self) -> dict:
        """TrainConfig fields set by the controls."""
        out = dict(epochs=self.epochs.value, batch_size=self.batch_size.value, schedule=self.schedule.value,
                   train_size=self.train_size.value, eval_size=self.eval_size.value, seed=self.seed.value)
        if not self.default_lr.value:
            out["lr"] = float(self.lr.value)
        return out

    def _changed(self, _change=None) -> None:
        kind = self.kind = self.kind_w.value
        self.lora_box.layout.display = "" if kind == "lora" else "none"
        if kind in ("full", "probe"):
            self.diagram.set(self.model.active_groups if kind == "full" else ["head"])
        self.diagram.locked = kind != "freeze"
        try:
            c = self.strategy().count(self.model)
        except tk.ConfigError as e:
            self.counts.value = f'<span style="color:#b00">{html.escape(str(e))}</span>'
            return
        self._count = c
        mem = training_memory_estimate(c)
        self.counts.value = (self._params_line(c) + f"<br>training memory &ge; {mem['total_mb']:,} MB "
                             f"(estimate: weights {mem['weights_mb']:,} + gradients {mem['gradients_mb']:,} + "
                             f"AdamW {mem['optimizer_mb']:,}; activations extra)")

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
