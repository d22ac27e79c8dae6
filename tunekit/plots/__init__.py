"""Pure functions from run records and instrument results to plotly figures.

No torch is imported here (nor by anything these modules import): figures can be
drawn where only the records are.

* :mod:`tunekit.plots.identity` - a run's name in words and its colour, the same in every view.
* :mod:`tunekit.plots.axes` - accuracy axes from chance to 1, empty figures that say so.
* :mod:`tunekit.plots.runs` - training and validation curves, comparison table, Pareto views.
* :mod:`tunekit.plots.weights` - weight-change heatmaps, update spectra and ranks.
* :mod:`tunekit.plots.representations` - CKA vs layer, PCA of pooled features.
* :mod:`tunekit.plots.attribution` - token attributions of several runs, stacked.
* :mod:`tunekit.plots.post` - post-training: a metric vs sparsity, learned vs forgotten.
* :mod:`tunekit.plots.experiments` - an experiment's learning curves with bands, the cost plane.
"""
from __future__ import annotations

import importlib

from tunekit.plots.axes import say_empty, score_axis  # noqa: F401
from tunekit.plots.identity import (  # noqa: F401
    PALETTE,
    as_runs,
    color_of,
    colors,
    display_names,
    legend_names,
    named,
    next_number,
    run_color,
    run_number,
)
from tunekit.plots.runs import (  # noqa: F401
    comparison_table,
    ema,
    eval_curves,
    pareto,
    pareto_front,
    training_curves,
)

_LAZY = {
    "weight_change_heatmap": "weights", "weight_change_difference": "weights", "head_change_bar": "weights",
    "spectrum": "weights", "rank_by_block": "weights", "magnitude_direction": "weights", "adapter_ranks": "weights",
    "virtual_tokens": "weights", "prefix_layers": "weights",
    "cka_by_layer": "representations", "pca_scatter": "representations",
    "attribution_view": "attribution", "attribution_html": "attribution",
    "generation_attribution_html": "attribution", "generation_attribution_view": "attribution",
    "forgetting_map": "post", "sparsity_curve": "post",
    "learning_curves": "experiments", "cost_curves": "experiments", "learning_rates": "rates", "lr_find": "rates",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"tunekit.plots.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tunekit.plots' has no attribute {name!r}")
