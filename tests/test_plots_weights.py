import subprocess
import sys

import pandas as pd
import pytest

from tunekit.config import ConfigError
from tunekit.plots import weights as P


def _wc():
    rows = []
    for run, label, scale in [("r1", "full", 1.0), ("r2", "lora-r8", 0.1), ("r3", "probe", 0.0)]:
        for b in range(2):
            for m in ["query", "key", "value", "attn_out", "intermediate", "output"]:
                v = scale * (b + 1) * (0.5 if m in ("query", "value") else 0.2)
                if label == "lora-r8" and m not in ("query", "value"):
                    v = 0.0
                rows.append(dict(run=run, label=label, group=f"block.{b}", block=b, module=m,
                                 rel_change=v, delta_norm=10 * v, w0_norm=10.0, numel=100))
        for g, v in [("embeddings", 0.01 * scale), ("pooler", 0.0), ("head", 0.9)]:
            rows.append(dict(run=run, label=label, group=g, block=None, module=g, rel_change=v,
                             delta_norm=v, w0_norm=1.0, numel=10))
    return pd.DataFrame(rows)


def test_heatmap_panels_share_one_scale_and_axes():
    fig = P.weight_change_heatmap(_wc())
    assert len(fig.data) == 3
    assert all(list(t.x) == ["query", "key", "value", "attention out", "MLP in", "MLP out"] for t in fig.data)
    assert all(t.coloraxis == "coloraxis" for t in fig.data)
    assert fig.layout.coloraxis.cmax == pytest.approx(1.0)
    lora = fig.data[1]
    assert lora.z[1][0] == pytest.approx(0.1) and lora.z[1][1] == 0.0  # block 1 query vs key
    assert all(v == 0 for row in fig.data[2].z for v in row)  # the probe's blocks did not move


def test_difference_and_head_apart():
    fig = P.weight_change_difference(_wc(), "r1", "r2")
    assert fig.data[0].z[0][0] == pytest.approx(0.5 - 0.05) and fig.data[0].zmid == 0
    with pytest.raises(ConfigError, match="run 'nope' is not in the data"):
        P.weight_change_difference(_wc(), "r1", "nope")
    bar = P.head_change_bar(_wc())
    assert len(bar.data) == 3 and list(bar.data[0].x) == ["embeddings", "pooler", "head"]


def test_spectrum_and_rank_by_block():
    class Spectra:  # duck-typed like tunekit.inspect.weights.Spectra
        table = pd.DataFrame([dict(run="r1", label="full", name="w", group="block.0", block=0, module="query",
                                   effective_rank=3.0, stable_rank=2.0, energy90=2, intruders=0),
                              dict(run="r2", label="lora", name="w", group="block.0", block=0, module="query",
                                   effective_rank=1.0, stable_rank=1.0, energy90=1, intruders=1)])
        singular_values = {("r1", "w"): [3.0, 2.0, 1.0], ("r2", "w"): [2.0, 0.0, 0.0]}
        noise = {("r1", "w"): [2.2, 2.0, 1.8]}
    fig = P.spectrum(Spectra, "w")
    assert [t.name for t in fig.data] == ["full", "random noise of the same size (full)", "lora"]
    assert list(fig.data[2].y) == [2.0]  # zeros are not drawn on the log axis
    with pytest.raises(ConfigError, match="no spectrum for 'x'"):
        P.spectrum(Spectra, "x")
    r = P.rank_by_block(Spectra.table)
    assert len(r.data) == 2 and list(r.data[0].y) == [3.0]
    with pytest.raises(ConfigError, match="metric must be"):
        P.rank_by_block(Spectra.table, "rank")


def test_labels_are_escaped():
    wc = _wc().replace({"label": {"full": "<b>full</b>"}})
    fig = P.weight_change_heatmap(wc)
    assert "<b>" not in fig.layout.annotations[0].text


def test_no_torch_import():
    code = "import sys, tunekit.plots.weights; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_heatmap_modules_and_zmax_are_checked():
    """Found by the fuzz (issue 22): modules=True raised "'bool' object is not iterable" and
    zmax=nan plotly's bare ValueError."""
    import pandas as pd

    from tunekit.config import ConfigError
    from tunekit.plots.weights import weight_change_heatmap
    wc = pd.DataFrame({"run": ["r"], "label": ["r"], "block": [0], "module": ["query"], "rel_change": [0.1],
                       "delta_norm": [0.2]})
    with pytest.raises(ConfigError, match="modules must be None or a list of module names"):
        weight_change_heatmap(wc, modules=True)
    for zmax in (float("nan"), 0, -1, True):
        with pytest.raises(ConfigError, match="zmax must be None or a finite number > 0"):
            weight_change_heatmap(wc, zmax=zmax)
    assert weight_change_heatmap(wc, modules="query", zmax=0.5) is not None
