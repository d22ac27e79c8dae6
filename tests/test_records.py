"""Typed records: kind, parent, task, format; loaders looked up by format; a record's start is
its parent's result; records written by tunekit 0.1 still list, load, evaluate and draw."""
import json
import shutil
from pathlib import Path

import pytest
import torch

import tunekit as tk
from tunekit import restore

OLD = Path(__file__).parent / "data" / "records-v0.1"
# written by main on 2026-12-03 (56055fe), before the core was rearranged into layers (issue 19):
# a probe, a LoRA r1, and a LoRA r1 on BBC News that started from the probe with a new head
# (a parent found beside it, a structural step replayed, an adapter loaded on top)
MAIN_20261203 = Path(__file__).parent / "data" / "records-main-2026-12-03"


def test_a_record_says_what_it_is(tiny, small, fast):
    run = tk.train(tiny, small, tk.LoRA(rank=2), **fast)
    cfg = json.loads((run.path / "config.json").read_text())
    assert (cfg["kind"], cfg["parent"], cfg["task"], cfg["format"]) == ("train", None, "classification", "peft")
    assert (run.kind, run.parent, run.task, run.format) == ("train", None, "classification", "peft")
    full = tk.train(tk.load_model(tiny.path, label_names=small.label_names), small, tk.Full(), **fast)
    assert full.format == "safetensors" and full.row()["accuracy"] == full.summary["val_accuracy"]


def test_the_loader_is_looked_up_by_format(tiny, small, fast, monkeypatch):
    run = tk.train(tiny, small, tk.Full(), **fast)
    seen = []
    original = restore.LOADERS["safetensors"]
    monkeypatch.setitem(restore.LOADERS, "safetensors", lambda r, m: seen.append(r.name) or original(r, m))
    tk.load_run(run.path).load_model()
    assert seen == [run.name]
    cfg = json.loads((run.path / "config.json").read_text())
    cfg["format"] = "peft"  # a record that says peft but holds no adapter folder has no weights
    (run.path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(tk.runs.RunRecordError, match="holds no weights"):
        tk.load_run(run.path).load_model()


def test_a_second_run_starts_from_its_parent(tiny, small, fast):
    first = tk.train(tiny, small, tk.Full(), **fast)
    second = tk.train(tiny, small, tk.Freeze.top(1), **fast)  # the same model, trained again
    assert second.parent == {"name": first.name, "path": str(first.path.resolve())}
    reloaded = tk.load_run(second.path)
    start = reloaded.load_start()
    first_result = tk.load_run(first.path).load_model()
    for (n, a), (_, b) in zip(start.hf.named_parameters(), first_result.hf.named_parameters()):
        assert torch.equal(a, b), n  # the second run's start is the first run's result
    # so its weight change is what the second run did: nothing below the top block
    wc = tk.inspect.weight_change([reloaded])
    assert set(wc[wc.delta_norm > 0].group) <= {"block.1", "pooler", "head"}
    assert wc[wc.group == "block.1"].delta_norm.sum() > 0
    # and its result reloads through the parent
    m = reloaded.load_model()
    torch.testing.assert_close(m.hf.bert.encoder.layer[1].output.dense.weight, tiny.hf.bert.encoder.layer[1].output.dense.weight)
    assert m.trained_by == [first.name, second.name]


def _copy(records: Path, tmp_path: Path) -> Path:
    """A copy of shipped records in a runs folder of their own, so that no test changes the shipped files."""
    return Path(shutil.copytree(records, tmp_path / "runs"))


@pytest.fixture
def old_records(tmp_path):
    return _copy(OLD, tmp_path)


def test_records_of_tunekit_0_1_list_and_draw(old_records):
    runs = tk.list_runs(old_records)
    assert [r.name for r in runs] == ["v01-probe", "v01-lora-r1"]
    assert [(r.kind, r.task, r.format, r.parent) for r in runs] == [("train", "classification", "safetensors", None),
                                                                   ("train", "classification", "peft", None)]
    table = tk.runs.table(runs)
    assert table["accuracy"].notna().all() and set(table["task"]) == {"classification"}
    assert len(tk.plots.eval_curves(runs).data) == 2 and len(tk.plots.pareto(runs).data) >= 2
    tk.report.render_report(runs)
    # records made before numbers were kept: numbered by their place in the folder, each its own colour,
    # and a new record is numbered after them
    names = tk.plots.display_names(runs)
    assert sorted(n.split(" ")[0] for n in names.values()) == ["#1", "#2"]
    assert len({tk.plots.run_color(r) for r in runs}) == 2 and tk.plots.next_number(old_records) == 3


@pytest.mark.slow
def test_records_of_tunekit_0_1_load_evaluate_and_inspect(old_records):
    probe, lora = tk.list_runs(old_records)
    for run in (probe, lora):
        got = tk.evaluate(run)
        assert got["accuracy"] == run.summary["val_accuracy"]
        assert got["loss"] == pytest.approx(run.summary["val_loss"], rel=1e-4)
    wc = tk.inspect.weight_change([probe, lora])
    lora_rows = wc[(wc.run == lora.name) & wc.block.notna()]
    assert set(lora_rows[lora_rows.delta_norm > 0].module) == {"query", "value"}
    assert set(wc[(wc.run == probe.name) & (wc.delta_norm > 0)].group) == {"head"}
    start = lora.load_start()  # the old initial.safetensors named the head as peft did
    torch.testing.assert_close(start.hf.classifier.weight, probe.load_start().hf.classifier.weight)


def test_a_parent_is_found_beside_the_record_after_the_runs_folder_moved(tiny, small, fast, tmp_path):
    first = tk.train(tiny, small, tk.Full(), **fast)
    second = tk.train(tiny, small, tk.Full(), **fast)
    moved = tmp_path / "moved"
    shutil.move(fast["runs_dir"], moved)
    child = tk.load_run(moved / second.name)
    assert child.parent_run().path == moved / first.name
    shutil.rmtree(moved / first.name)
    with pytest.raises(tk.runs.RunRecordError, match=f"started from '{first.name}', whose record is not"):
        child.load_model()


@pytest.fixture
def main_records(tmp_path):
    return _copy(MAIN_20261203, tmp_path)


def test_records_of_main_before_the_layers_list_and_draw(main_records):
    runs = tk.list_runs(main_records)
    assert [r.name for r in runs] == ["v02-probe", "v02-lora-r1", "v02-bbc-after-probe"]
    assert [(r.kind, r.format, (r.parent or {}).get("name")) for r in runs] == [
        ("train", "safetensors", None), ("train", "peft", None), ("train", "peft", "v02-probe")]
    assert runs[2].structure == [{"labels": ["business", "entertainment", "politics", "sports", "tech"], "seed": 0}]
    table = tk.runs.table(runs)
    assert table["accuracy"].notna().all()
    assert len(tk.plots.eval_curves(runs).data) == 3 and len(tk.plots.pareto(runs).data) >= 3
    tk.report.render_report(runs)
    assert [tk.plots.display_names(runs)[r.name].split(" ")[0] for r in runs] == ["#1", "#2", "#3"]


@pytest.mark.slow
def test_records_of_main_before_the_layers_load_evaluate_and_inspect(main_records):
    probe, lora, second = tk.list_runs(main_records)
    for run in (probe, lora, second):
        got = tk.evaluate(run)
        assert got["accuracy"] == run.summary["val_accuracy"], run.name
        assert got["loss"] == pytest.approx(run.summary["val_loss"], rel=1e-4), run.name
    model = second.load_model()  # the probe's model, a new head for BBC News' five labels, the adapter on top
    assert model.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert model.trained_by == ["v02-probe", "v02-bbc-after-probe"]
    wc = tk.inspect.weight_change([lora, second])
    assert set(wc[(wc.run == lora.name) & wc.block.notna() & (wc.delta_norm > 0)].module) == {"query", "value"}
    start = second.load_start()  # the probe's result with the new head's starting values
    torch.testing.assert_close(start.hf.classifier.weight, second.initial_tensors()["classifier.weight"])
