"""Instruments: what adaptation changed, as plain data.

* :mod:`tunekit.inspect.weights` - per-layer weight change and the spectra of the updates.
* :mod:`tunekit.inspect.decomposition` - magnitude and direction of each update (DoRA's analysis).
* :mod:`tunekit.inspect.ranks` - the rank of each adapted matrix (where AdaLoRA put its rank), and
  the virtual tokens of prompt tuning.
* :mod:`tunekit.inspect.representations` - CKA between base and tuned hidden states, PCA.
* :mod:`tunekit.inspect.attribution` - token attributions with captum's integrated gradients.
* :mod:`tunekit.inspect.generation` - which source tokens each output token of a text-to-text
  model came from (the same method, over the source).

Every function takes runs (live, or reloaded from disk after a kernel restart) or
their pairs of models (:func:`load_pairs`: each run's start and result, loaded once),
and returns dataclasses or DataFrames; :mod:`tunekit.plots` draws them.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "weight_change": "weights", "moved_blocks": "weights", "update_spectra": "weights", "weight_deltas": "weights",
    "effective_rank": "weights", "stable_rank": "weights", "energy_rank": "weights",
    "intruder_dimensions": "weights", "norms_only": "weights",
    "magnitude_direction": "decomposition", "decompose": "decomposition", "correlations": "decomposition",
    "adapter_ranks": "ranks", "ranks_moved": "ranks", "virtual_tokens": "ranks", "prompted": "ranks",
    "prefix_layers": "ranks",
    "linear_cka": "representations", "linear_cka_gram": "representations", "debiased_cka": "representations",
    "representation_drift": "representations", "pooled_hidden_states": "representations",
    "pca_features": "representations",
    "attribute": "attribution", "attribute_runs": "attribution", "Attribution": "attribution",
    "attribute_generation": "generation", "attribute_generation_runs": "generation",
    "GenerationAttribution": "generation",
    "base_model": "models", "tuned_model": "models", "instrument_sections": "views",
    "Pair": "models", "load_pairs": "models", "snapshot_pairs": "models", "kept_points": "models",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"tunekit.inspect.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tunekit.inspect' has no attribute {name!r}")


def __dir__():
    return sorted(_LAZY)
