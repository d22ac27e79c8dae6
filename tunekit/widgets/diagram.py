"""The lab's model diagram: the model's layer groups in one row, from the input to the head, each
a train / frozen toggle with its size under it, painted with what the selected strategy trains
(:func:`trained_parts`, read from the strategy's own plan)."""
from __future__ import annotations

import copy
import html
from typing import Optional

import ipywidgets as W
import torch
import traitlets

import tunekit as tk
from tunekit import adapters


def group_title(group: str) -> str:
    """A layer group in the user's words: ``block.5`` -> ``block 5``."""
    return group.replace(".", " ")


def trained_parts(model, strategy) -> dict[str, dict]:
    """What ``strategy`` trains on ``model``, by layer group:
    ``{group: {"params": trainable parameters, "adapted": [layer labels]}}`` where
    ``adapted`` is empty for a group that trains in full. Read from the strategy's own plan
    (for an adapter: from a peft skeleton on the meta device, as peft builds it; nothing is
    allocated and ``model`` is not touched). Raises ConfigError as the plan does."""
    plan = strategy.plan(model)
    if plan.adapter is None:
        by = model.parameter_counts()["by_group"]
        return {g: {"params": by[g]["total"], "adapted": []} for g in model.group_names
                if g in plan.train and g in model.active_groups}
    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # as adapters.count builds it
        skeleton = type(model.hf)(copy.deepcopy(model.hf.config))
        adapters.wrap(skeleton, copy.deepcopy(plan.adapter))
    layout = adapters.Layout.of(skeleton)
    parts: dict[str, dict] = {}
    for name, p in skeleton.named_parameters():
        if not p.requires_grad:
            continue
        canonical, role = layout.roles[name]
        group, _, label = model.backbone.locate(canonical)
        part = parts.setdefault(group, {"params": 0, "adapted": [], "full": False})
        part["params"] += p.numel()
        if role == adapters.ADAPTER:
            if label not in part["adapted"]:
                part["adapted"].append(label)
        else:
            part["full"] = True
    for part in parts.values():  # a group with a fully trained module is shown as trained in full
        if part.pop("full"):
            part["adapted"] = []
    return {g: parts[g] for g in model.group_names if g in parts}


def _short(n: int) -> str:
    """A parameter count for a narrow cell: ``11.9 M``, ``770``."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return str(n)


# the diagram: one row of layers from the input (left) to the head (right), wrapping when long
_DIAGRAM_CSS = ("<style>.tunekit-strip{flex-wrap:wrap;gap:2px 4px;align-items:flex-start}"
                ".tunekit-cell{flex:1 0 auto;min-width:%dpx;max-width:160px}.tunekit-cell .widget-html-content"
                "{white-space:normal;line-height:1.25;text-align:center}"
                ".tunekit-cell .widget-toggle-button{width:100%%;padding:0 6px}</style>")
CELL_WIDTH = 80
"""px of a layer's cell in the diagram, at least (nine cells, a 6-block model, fit one row beside
the file browser at 1280 px; a longer model wraps to more rows)."""


class ModelDiagram(W.VBox):
    """The model's layer groups in one row, from the input (left) to the head (right), each a
    train / frozen toggle with its size under it.

    ``chosen`` is what the user toggled (what Freeze trains); ``show`` paints what a
    strategy trains (``trainable``: groups trained in full; ``adapted``: groups with adapter
    layers, by label), and ``locked`` disables the toggles where the strategy decides."""

    trainable = traitlets.List(traitlets.Unicode()).tag(sync=False)
    adapted = traitlets.Dict().tag(sync=False)
    chosen = traitlets.List(traitlets.Unicode()).tag(sync=False)
    locked = traitlets.Bool(False)

    def __init__(self, model: tk.TextClassifier, **kw):
        self.model = model
        self.toggles: dict[str, W.ToggleButton] = {}
        self.notes: dict[str, W.HTML] = {}
        self.params: dict[str, int] = {}  # trainable parameters per group, as shown
        self._showing = False
        self._counts = counts = model.parameter_counts()["by_group"]
        cells = []
        for g in model.group_names:
            unused = g not in model.active_groups
            t = W.ToggleButton(value=False, description=group_title(g), tooltip=f"{counts[g]['total']:,} parameters",
                               disabled=unused, layout=W.Layout(width="auto"))
            t.observe(self._toggled, "value")
            self.toggles[g] = t
            self.notes[g] = W.HTML()
            cell = W.VBox([t, self.notes[g]])
            cell.add_class("tunekit-cell")
            cells.append(cell)
        strip = W.HBox(cells)
        strip.add_class("tunekit-strip")
        self.title = W.HTML()
        self.error = W.HTML()
        self.presets = {name: W.Button(description=name, layout=W.Layout(width="auto"))
                        for name in ("probe", "top k", "full")}
        for name, b in self.presets.items():
            b.on_click(lambda _b, n=name: self.preset(n))
        self.k = W.BoundedIntText(min(2, model.num_blocks), min=1, max=max(1, model.num_blocks), description="k",
                                  style={"description_width": "15px"}, layout=W.Layout(width="80px"))
        self.k.observe(lambda _c: None if self.locked else self.preset("top k"), "value")
        head = W.HBox([self.title, W.HBox([*self.presets.values(), self.k])],
                      layout=W.Layout(justify_content="space-between", flex_flow="row wrap", align_items="center"))
        super().__init__([W.HTML(_DIAGRAM_CSS % CELL_WIDTH), head, strip, self.error], **kw)
        self.preset("top k")
        self.show(None)

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
        """Set the user's choice (the toggles under Freeze)."""
        self.chosen = [g for g in self.toggles if g in groups and g in self.model.active_groups]
        if not self.locked:
            self._put(self.chosen)

    def _put(self, groups) -> None:
        self._showing = True
        try:
            with self.hold_trait_notifications():
                for g, t in self.toggles.items():
                    t.value = g in groups
        finally:
            self._showing = False

    def _toggled(self, _change) -> None:
        if self._showing:
            return
        self.chosen = [g for g, t in self.toggles.items() if t.value]

    def show(self, parts: Optional[dict], label: str = "", adapter: str = "",
             stages: Optional[list] = None) -> None:
        """Paint what a strategy trains (``parts`` as :func:`trained_parts` gives it; None: the
        user's toggles with the group sizes; {}: nothing trains). ``stages``: the groups that
        train in each stage of gradual unfreezing; each cell then says the stage it joins at."""
        joins = {}
        for k, groups in enumerate(stages or (), 1):
            for g in groups:
                joins.setdefault(g, k)
        if parts is None:
            parts = {g: {"params": self._counts[g]["total"], "adapted": []} for g in self.chosen}
        full = [g for g, p in parts.items() if not p["adapted"]]
        self._put(full)
        for g, t in self.toggles.items():
            part = parts.get(g)
            t.button_style = "" if part is None else ("info" if part["adapted"] else "success")
            total = self._counts[g]["total"]
            if g not in self.model.active_groups:
                note = f'<span title="not used: the head reads {self.model.pooling} pooling">unused</span>'
            elif part is None:
                note = f'<span title="{total:,} parameters, frozen">{_short(total)}</span>'
            elif part["adapted"]:
                note = (f'<span title="{part["params"]:,} {html.escape(adapter)} parameters train: '
                        f'{html.escape(", ".join(part["adapted"]))}">+ {html.escape(adapter)}</span>')
            else:
                note = f'<span title="{total:,} parameters train">{_short(total)} train</span>'
            if g in joins:
                note += (f'<br><span title="trains from stage {joins[g]} of {len(stages)} on">'
                         f'<b>stage {joins[g]}</b></span>')
            self.notes[g].value = note
        self.params = {g: p["params"] for g, p in parts.items()}
        self.adapted = {g: list(p["adapted"]) for g, p in parts.items() if p["adapted"]}
        self.trainable = full
        where = sorted({", ".join(labels) for labels in self.adapted.values()})
        on = f"{html.escape(adapter)} on {html.escape('; '.join(where))}, " if where else ""
        self.title.value = ("<b>Model</b>, input to output: pressed = trains (press a layer to train it)"
                            if not self.locked else
                            f"<b>Model</b>: what {html.escape(label)} trains (set by the strategy: "
                            f"{on}green = in full" + ("; stage k: joins at the k-th stage" if joins else "") + ")")

    @traitlets.observe("locked")
    def _lock(self, change) -> None:
        for g, t in self.toggles.items():
            t.disabled = change["new"] or g not in self.model.active_groups
        for b in self.presets.values():
            b.disabled = change["new"]
        self.k.disabled = change["new"]
