"""Every instrument for a set of runs, as report sections: ``[(heading, figure or HTML)]``.

    sections = instrument_sections(runs, data, sentence="A charming, funny film.")
    tk.report.write_report(runs, "report.html", extra=sections)

This is what ``tunekit compare`` adds to its report (unless ``--no-inspect``).
"""
from __future__ import annotations

import dataclasses
import html
from typing import Any, Iterable, Optional

from tunekit import plots
from tunekit.data import load as load_data
from tunekit.inspect.attribution import attribute_runs
from tunekit.inspect.decomposition import magnitude_direction
from tunekit.inspect.models import RunLike, as_run, kept_points, load_pairs
from tunekit.inspect.ranks import adapter_ranks, prefix_layers, ranks_moved, virtual_tokens
from tunekit.inspect.representations import pca_features, representation_drift
from tunekit.inspect.weights import moved_blocks, update_spectra, weight_change
from tunekit.plots.captions import param_label
from tunekit.strategies.lora import CHANGES_BASE

DEFAULT_SENTENCE = "A gorgeous, witty film, though the last act drags badly."


def rebased_words(runs: list, names: dict) -> str:
    """A sentence naming the runs whose adapter started on part of each weight (PiSSA, OLoRA): their
    change is measured against the original checkpoint, not their own start; "" when none did."""
    rebased = [r for r in runs if (r.strategy or {}).get("init") in CHANGES_BASE]
    if not rebased:
        return ""
    return (", ".join(names.get(r.name, r.label) for r in rebased) + (" starts" if len(rebased) == 1 else " start")
            + " its adapter on part of each weight (PiSSA / OLoRA), which takes that part out of the weight: its "
              "change is measured against the original checkpoint, not against the run's own start.")


def instrument_sections(runs: Iterable[RunLike], data: Any = None, sentence: str = DEFAULT_SENTENCE,
                        n: int = 256, seed: int = 0, progress: Optional[callable] = None) -> list[tuple[str, Any]]:
    """Weight change, update spectra, representation drift, PCA and token attributions of
    ``runs`` (runs that stopped before any step or failed are left out), as
    ``(heading, plotly figure or HTML)`` pairs. ``data`` defaults to the runs' built-in data
    set; drift and PCA use ``n`` seeded validation examples. Each run's pair of models
    (start, result) is loaded once and shared by every instrument. Token attributions
    and the PCA of head inputs are for classification runs."""
    runs = [as_run(r) for r in runs]
    runs = [r for r in runs if r.status in ("completed", "stopped")
            and ((r.summary.get("steps") or 0) > 0 or r.kind == "import")]  # an import's steps: its Trainer's, if said
    if not runs:
        return []
    say = progress or (lambda msg: None)
    if data is None:
        data = load_data(runs[0].config["data"]["name"])
    pairs = load_pairs(runs)
    names, colours = plots.display_names(runs), plots.colors(runs)  # as in every other view
    say("weight change and spectra")
    wc = plots.named(weight_change(pairs), runs)
    spectra = update_spectra(pairs)
    plots.named(spectra.table, runs)
    moved = spectra.table[spectra.table["delta_norm"] > 0]
    sections = [("Weight change per module", plots.weight_change_heatmap(wc)),
                ("Weight change outside the blocks", plots.head_change_bar(wc, colors=colours))]
    rebased = rebased_words(runs, names)
    if rebased:
        sections.insert(1, ("Measured against the original checkpoint", f"<p>{html.escape(rebased)}</p>"))
    tokens = virtual_tokens(pairs)
    if len(tokens):  # prompt tuning changes no weight: what it learned is in the input
        sections.append(("Learned virtual tokens", plots.virtual_tokens(plots.named(tokens, runs), colors=colours)))
    prefix = prefix_layers(pairs)
    if len(prefix):  # nor does prefix tuning: its keys and values in every layer
        sections.append(("Learned prefix", plots.prefix_layers(plots.named(prefix, runs), colors=colours)))
    changed = moved_blocks(wc)  # a difference against a run that changed no block repeats the other's map
    if len(changed) >= 2:
        sections.append((f"Weight change: {names[changed[-1]]} minus {names[changed[-2]]}",
                         plots.weight_change_difference(wc, changed[-1], changed[-2])))
    blocks = moved[moved["block"].notna()]
    kept = kept_points(pairs)  # snapshots=k: several points, as the paper plots
    if not blocks.empty:
        top = int(blocks["block"].max())
        name = blocks[(blocks["block"] == top) & (blocks["module"] == "query")]["name"]
        name = name.iloc[0] if len(name) else blocks["name"].iloc[-1]
        sections += [("Effective rank of the updates", plots.rank_by_block(spectra.table, colors=colours)),
                     (f"Spectrum of one update ({param_label(name)})", plots.spectrum(spectra, name, colors=colours)),
                     ("Magnitude and direction of each update" + (" at each point kept" if kept else ""),
                      plots.magnitude_direction(plots.named(magnitude_direction(pairs, steps=kept), runs),
                                                colors=colours))]
    ranks = adapter_ranks(pairs)
    if ranks_moved(ranks):  # beside LoRA's uniform ranks, where AdaLoRA moved its own
        sections.append(("Where each adapter put its rank", plots.adapter_ranks(plots.named(ranks, runs))))
    say("representation drift")
    drift = plots.named(representation_drift(pairs, data=data, n=n, seed=seed), runs)
    sections.append(("Representation drift (linear CKA, base vs tuned)", plots.cka_by_layer(drift, colors=colours)))
    classifiers = [p for p in pairs if p.run.task == "classification"]
    if not classifiers:
        return sections
    pca = plots.named(pca_features(classifiers, data, n=n, seed=seed), runs)
    sections.append(("Pooled features before and after (PCA on the base's axes)",
                     plots.pca_scatter(pca)))
    say("token attributions")
    attributions = [a if a.run not in names else dataclasses.replace(a, label=names[a.run])
                    for a in attribute_runs(classifiers, sentence)]
    sections += [("Token attributions (integrated gradients)", plots.attribution_html(attributions)),
                 ("Token attributions, each run minus the base", plots.attribution_view(attributions, difference=True))]
    return sections
