"""Weights during training, not only at the end (issue 23): ``snapshots=k`` keeps the trained
tensors at k evenly spaced points of a run (the start and the end are the record's own), each
point rebuilds to exactly the model the run had then, and the instruments read them."""
from pathlib import Path

import pytest
import torch

import tunekit as tk
from tunekit.run_state import snapshot_steps


def test_the_points_are_evenly_spaced_and_count_both_ends():
    assert snapshot_steps(5, 100) == (25, 50, 75)
    assert snapshot_steps(4, 8) == (3, 5)  # 8/3 and 16/3, rounded
    assert snapshot_steps(10, 3) == (1, 2)  # points that round onto one step are one
    assert snapshot_steps(2, 100) == () and snapshot_steps(0, 100) == () and snapshot_steps(5, 1) == ()


@pytest.fixture(scope="module")
def kept(tiny_dir, small, tmp_path_factory):
    """A LoRA run of 8 steps kept at 4 points, and the trained tensors seen live after each step."""
    seen = {}

    def after(ev):
        seen[ev.payload["step"]] = {n: p.detach().clone() for n, p in ev.trainer.model.hf.named_parameters()
                                    if p.requires_grad}

    model = tk.load_model(tiny_dir, label_names=small.label_names)
    run = tk.train(model, small, tk.LoRA(rank=2), lr=5e-3, train_size=64, batch_size=8, evals_per_epoch=1,
                   snapshots=4, log_every=1, callbacks={"step": after},
                   runs_dir=str(tmp_path_factory.mktemp("snap") / "runs"), progress=False)
    return run, seen


def test_each_point_rebuilds_the_model_the_run_had_then(kept):
    run, seen = kept
    again = tk.load_run(run.path)
    assert again.snapshot_steps == [0, 3, 5, 8]
    assert [s["file"] for s in again.summary["snapshots"]] == ["snapshots/step-000003.safetensors",
                                                              "snapshots/step-000005.safetensors"]
    on_disk = sum((run.path / s["file"]).stat().st_size for s in again.summary["snapshots"])
    assert again.summary["snapshots_mb"] == pytest.approx(on_disk / 2**20, abs=1e-3)  # stated, as measured
    assert again.summary["snapshots_s"] >= 0
    for step in (3, 5, 8):
        params = dict(again.load_model(step=step).hf.named_parameters())
        for name, value in seen[step].items():
            torch.testing.assert_close(params[name].detach(), value, rtol=0, atol=0)
    assert not torch.equal(dict(again.load_model(step=3).hf.named_parameters())[name], seen[8][name])
    start = tk.inspect.weight_change(tk.inspect.Pair(again, step=0))
    assert (start.delta_norm == 0).all()  # the start: nothing changed yet


def test_the_instruments_read_every_point(kept):
    run, _ = kept
    pairs = tk.inspect.snapshot_pairs(run)
    assert [p.step for p in pairs] == [0, 3, 5, 8]
    assert len({id(p.start) for p in pairs}) == 1  # one start for every point
    sizes = [tk.inspect.weight_change(p).delta_norm.sum() for p in pairs]
    assert sizes[0] == 0 and all(s > 0 for s in sizes[1:])
    table = tk.inspect.magnitude_direction(run, steps=True)
    assert table.groupby("step").size().to_dict() == {3: 4, 5: 4, 8: 4}  # 2 blocks x query, value, per point
    end = tk.inspect.magnitude_direction(run)
    assert set(end.step) == {8} and end.delta_m.tolist() == pytest.approx(table[table.step == 8].delta_m.tolist())
    fig = tk.plots.magnitude_direction(table)
    assert fig.data[0].marker.coloraxis == "coloraxis" and list(fig.data[0].marker.color) == list(table.step)
    assert "at the end" in fig.layout.annotations[0].text


def test_bad_steps_and_runs_without_snapshots_are_said_in_words(kept, tiny, small, tmp_path):
    run, _ = kept
    with pytest.raises(tk.ConfigError, match=r"snapshots.*0 \(none\) or an integer in 2 \.\. 1000"):
        tk.TrainConfig(snapshots=1)
    with pytest.raises(tk.ConfigError, match=r"step must be one of .*\[0, 3, 5, 8\] \(got 4\)"):
        run.load_model(step=4)
    plain = tk.train(tiny, small, tk.LoRA(rank=2), train_size=32, batch_size=16, evals_per_epoch=1,
                     runs_dir=str(tmp_path / "runs"), progress=False)
    assert plain.snapshot_steps == [] and "snapshots" not in plain.summary
    with pytest.raises(tk.ConfigError, match="kept no snapshots"):
        plain.load_model(step=0)
    assert [p.step for p in tk.inspect.snapshot_pairs(plain)] == [None]  # its end alone


def test_a_missing_snapshot_file_is_named(kept, tmp_path):
    import shutil
    run, _ = kept
    copy = tmp_path / run.name
    shutil.copytree(run.path, copy)
    (copy / "snapshots" / "step-000005.safetensors").unlink()
    again = tk.load_run(copy)
    assert again.load_model(step=3) is not None  # the other points still load
    with pytest.raises(tk.RunRecordError, match=r"step-000005\.safetensors is missing"):
        again.load_model(step=5)


def test_the_labs_weights_view_slides_over_the_points(kept, small, tmp_path):
    """With a run kept at 4 points, the Weights view's map is a slider from the start (nothing
    changed) to the end (the run's map), on the end's colour scale."""
    import shutil
    pytest.importorskip("ipywidgets")
    from tunekit.widgets.views import RunsPanel, StepSlider
    run, _ = kept
    shutil.copytree(run.path, tmp_path / "runs" / run.name)
    panel = RunsPanel(str(tmp_path / "runs"), small)
    panel.wait()
    panel.select.value = (run.name,)
    panel.show("Weights", wait=True)
    assert panel.state["Weights"] == "drawn", panel.status["Weights"].value
    slider = next(w for w in panel.panes["Weights"].children if isinstance(w, StepSlider))
    assert [label for label, _ in slider.slider.options] == ["the start (step 0)", "33 % (step 3)",
                                                             "67 % (step 5)", "the end (step 8)"]
    end = [z for row in slider.children[1].data[0].z for z in row]
    top = slider.children[1].layout.coloraxis.cmax
    assert max(v for v in end if v is not None) == pytest.approx(top)  # the end fills the scale
    slider.slider.value = 0
    start = slider.children[1]
    assert all(v in (0, None) for row in start.data[0].z for v in row)
    assert start.layout.coloraxis.cmax == top and "at the start" in start.layout.title.text
    assert "brighter = moved more" in slider.children[2].value  # the map's caption, under the map
    assert "No spectrum at the start" in slider.children[3].value  # nothing has moved yet
    slider.slider.value = 1
    middle = [v for row in slider.children[1].data[0].z for v in row if v is not None]
    assert 0 < max(middle) < top
    # the spectrum of the update that moved most, at each point on the end's axes
    spectrum_middle = slider.children[3]
    assert "at 33 %" in spectrum_middle.layout.title.text and "singular value" in spectrum_middle.layout.yaxis.title.text
    slider.slider.value = 3
    spectrum_end = slider.children[3]
    assert list(spectrum_end.layout.yaxis.range) == list(spectrum_middle.layout.yaxis.range)
    assert max(spectrum_middle.data[0].y) < max(spectrum_end.data[0].y)
    assert "at the end" in spectrum_end.layout.title.text and "Singular values" in slider.children[4].value
    name = tk.inspect.update_spectra(tk.inspect.snapshot_pairs(run)[-1]).table.sort_values("delta_norm").name.iloc[-1]
    assert max(spectrum_end.data[0].y) == pytest.approx(
        tk.inspect.update_spectra(run).singular_values[(run.name, name)][0], rel=1e-5)
    figures = [w for w in panel.panes["Weights"].children if type(w).__name__ == "FigureWidget"]
    md = next(f for f in figures if (f.layout.title.text or "").startswith("Magnitude and direction"))
    assert sorted(set(md.data[0].marker.color)) == [3, 5, 8], "every point after the start, coloured by step"
    assert not any("Spectrum of the update" in (f.layout.title.text or "") for f in figures), "the slider draws it"


@pytest.mark.parametrize("strategy", [tk.AdaLoRA(target_rank=1, init_rank=2), tk.PromptTuning(tokens=3)],
                         ids=lambda s: s.label)
def test_adapters_that_reload_in_another_shape_or_beside_the_model_rebuild_each_point(tiny_dir, small, tmp_path,
                                                                                    strategy):
    """AdaLoRA reloads at its final ranks but trained at its first: a point rebuilds its adapter as it
    trained. Prompt tuning's virtual tokens are kept with the point (they live beside the model)."""
    seen = {}

    def after(ev):
        if ev.payload["step"] == 4:
            seen.update({n: p.detach().clone() for n, p in ev.trainer.model.snapshot_parameters().items()
                         if p.requires_grad})

    model = tk.load_model(tiny_dir, label_names=small.label_names)
    run = tk.train(model, small, strategy, lr=1e-2, train_size=64, batch_size=8, evals_per_epoch=1, snapshots=3,
                   log_every=1, callbacks={"step": after}, runs_dir=str(tmp_path / "runs"), progress=False)
    again = tk.load_run(run.path)
    assert again.snapshot_steps == [0, 4, 8]
    params = again.load_model(step=4).snapshot_parameters()
    assert any(n.startswith("prompt.") for n in seen) == isinstance(strategy, tk.PromptTuning)
    for name, value in seen.items():
        torch.testing.assert_close(params[name].detach(), value, rtol=0, atol=0)


def test_the_snapshot_benchmark_measures_what_it_says(tmp_path):
    """benchmarks/bench_snapshots.py at a tiny size: each cell in its own process, the kept points'
    files as large as the trained tensors in float32, one write's tensors as large as one file."""
    import json
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_snapshots.py"
    out = tmp_path / "snap.json"
    subprocess.run([sys.executable, str(script), "--size", "24", "--snapshots", "3", "--json", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    rows = {(r["strategy"], r["snapshots"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {("full", 0), ("full", 3), ("lora", 0), ("lora", 3)}
    for strategy in ("full", "lora"):
        none, kept = rows[(strategy, 0)], rows[(strategy, 3)]
        assert none["snapshots_kept"] == 0 and none["snapshot_tensor_mb"] == 0
        assert kept["snapshots_kept"] == 1 and kept["steps"] == 3  # 24 reviews in batches of 8; the ends are the record's
        assert kept["snapshots_mb"] == pytest.approx(kept["snapshot_tensor_mb"], rel=0.001, abs=0.01)  # one file, rounded
        assert 0 <= kept["write_extra_mb"] < 64 and kept["peak_rss_mb"] > 100
    full_mb, lora_mb = rows[("full", 3)]["snapshot_tensor_mb"], rows[("lora", 3)]["snapshot_tensor_mb"]
    assert full_mb == pytest.approx(22_566_146 * 4 / 2 ** 20, rel=0.01) and lora_mb < full_mb / 50  # fp32


def test_the_reports_magnitude_direction_uses_every_point_kept(kept, small):
    """The HTML report's instruments: with snapshots, the magnitude / direction section has a marker set
    per point after the start (the DoRA paper's several points of training), and says so."""
    from tunekit.inspect.views import instrument_sections
    run, _ = kept
    sections = dict(instrument_sections([run], data=small, n=16))
    fig = sections["Magnitude and direction of each update at each point kept"]
    assert sorted(set(fig.data[0].marker.color)) == [3, 5, 8]
