"""A fuzz of run records (issue 22): a strategy damages one file of one record in a folder of
real tiny records (a full fine-tune, a LoRA run with its adapter, and a pruned child of the full
run), and every read of the folder either raises a RunRecordError that names the damaged file
or skips the record with a warning that names it; the other records read as before.

Bounded in CI (a fixed seed, a few dozen examples); ``HYPOTHESIS_PROFILE=long`` draws many more
(``pytest -m fuzz tests/test_fuzz_records.py``)."""
from __future__ import annotations

import contextlib
import io
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import tunekit as tk
from tunekit.config import RunRecordError

pytestmark = pytest.mark.fuzz

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"


def fuzz_settings(ci_examples: int, long_examples: int) -> settings:
    """``ci``: derandomized (a fixed seed), a few examples, no example database; ``long``
    (HYPOTHESIS_PROFILE=long): many more, drawn afresh each time."""
    common = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                        HealthCheck.data_too_large])
    if LONG:
        return settings(max_examples=long_examples, **common)
    return settings(max_examples=ci_examples, derandomize=True, database=None, print_blob=False, **common)


# ----- the folder of real records, made once -----------------------------------------------------------------
def make_records(root: Path) -> dict:
    """``root/pristine/`` with three real records: ``full`` (weights + initial tensors), ``lora``
    (an adapter folder) and ``full-prune50`` (its parent is ``full``), made in ``root/runs/``
    (where each example's copy goes, so the paths the records hold point into the copy); and
    the data and model they used."""
    tiny = str(tk.make_tiny_bert(root / "tiny"))
    rt = tk.data.rotten_tomatoes()
    df = rt.train.iloc[:120].assign(label=lambda d: d["label"].map(dict(enumerate(rt.label_names))))
    data = tk.data.from_dataframe(df, label_names=rt.label_names, validation_size=16, test_size=16, name="rt-small")
    fast = dict(runs_dir=str(root / "runs"), train_size=16, batch_size=8, eval_size=8, epochs=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = tk.train(tk.load_model(tiny, label_names=data.label_names), data, tk.Full(), name="full", **fast)
        tk.train(tk.load_model(tiny, label_names=data.label_names), data, tk.LoRA(rank=2), name="lora", **fast)
        tk.prune(full, 0.5, data=data)
    assert sorted(p.name for p in (root / "runs").iterdir()) == ["full", "full-prune50", "lora"]
    (root / "runs").rename(root / "pristine")
    return {"root": root, "pristine": root / "pristine", "runs": root / "runs", "data": data, "tiny": tiny}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_records(tmp_path_factory.mktemp("records"))


def _files(runs: Path) -> list[str]:
    return sorted(str(f.relative_to(runs)) for f in runs.rglob("*") if f.is_file())


def damaged_copy(folder: dict, rel: str, content) -> Path:
    """A fresh copy of the pristine records at ``runs/``, with ``rel`` replaced by ``content``
    (removed for None)."""
    runs = folder["runs"]
    shutil.rmtree(runs, ignore_errors=True)
    shutil.copytree(folder["pristine"], runs)
    if content is None:
        (runs / rel).unlink()
    else:
        (runs / rel).write_bytes(content)
    return runs


PARENTS = {"full-prune50": "full"}  # who depends on whom in the folder (a child reads its parent's files)


# ----- damage ----------------------------------------------------------------------------------------------------
def _json_paths(value, prefix=()) -> list[tuple]:
    """Every place in a JSON value (the root left out): key paths and list indices."""
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out += _json_paths(v, prefix + (k,))
    return out


def _json_type(v) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}.get(type(v), "null")


OTHER_VALUES = {
    "null": st.none(), "bool": st.booleans(),
    "int": st.sampled_from([0, -1, 7, 2 ** 70, -(2 ** 64)]) | st.integers(),
    "float": st.sampled_from([0.5, -1e300, math.inf, -math.inf, math.nan]) | st.floats(),
    "str": st.sampled_from(["", "x", "ü" * 3, "../../etc", "1e5"]) | st.text(max_size=20),
    "list": st.sampled_from([[], [1], ["a", None], [{}]]),
    "dict": st.sampled_from([{}, {"name": 3}, {"a": [1]}, {"name": "x", "path": 5}]),
}


def _set(obj, path: tuple, value):
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


@st.composite
def wrong_type(draw, text: str):
    """A JSON document with one value (at any depth) replaced by a value of another JSON type."""
    doc = json.loads(text)
    paths = _json_paths(doc)
    if not paths:
        return json.dumps(draw(st.sampled_from([[], 3, "x", None])))
    top = [p for p in paths if len(p) == 1]
    # half the time a top-level field (most of what a reader reads by type), else any place
    path = draw(st.sampled_from(top if top and draw(st.booleans()) else paths))
    cur = doc
    for k in path:
        cur = cur[k]
    kind = draw(st.sampled_from([t for t in OTHER_VALUES if t != _json_type(cur)]))
    _set(doc, path, draw(OTHER_VALUES[kind]))
    return json.dumps(doc)


def _tensor_damage(draw, f: Path) -> bytes:
    state = load_file(str(f))
    with open(f, "rb") as fh:  # keep the file's metadata
        header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
    meta = header.get("__metadata__")
    name = draw(st.sampled_from(sorted(state)))
    t = state[name]
    how = draw(st.sampled_from(["shape", "dtype", "extra", "drop"]))
    if how == "shape":
        shape = list(t.shape) or [1]
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] += draw(st.sampled_from([1, -1] if shape[i] > 1 else [1, 2]))
        state[name] = torch.zeros(shape, dtype=t.dtype)
    elif how == "dtype":
        state[name] = t.to(draw(st.sampled_from([torch.int64, torch.int8, torch.bool, torch.float16, torch.bfloat16,
                                                 torch.float64])))
    elif how == "extra":
        state[name + ".unknown"] = torch.zeros(3)
    elif len(state) > 1:
        del state[name]
    with tempfile.TemporaryDirectory() as tmp:
        save_file(state, f"{tmp}/t.safetensors", metadata=meta)
        return Path(f"{tmp}/t.safetensors").read_bytes()


@st.composite
def damage(draw, pristine: Path):
    """``(file, kind, content)``: one file of one record (its path in the folder), what was done
    to it, and its damaged bytes (None: the file is removed)."""
    rel = draw(st.sampled_from(_files(pristine)))
    f, record = pristine / rel, rel.split("/")[0]
    data = f.read_bytes()
    kinds = ["truncate", "bytes", "missing"] if data else ["bytes", "missing"]
    if (rel.endswith(".json") or rel.endswith(".jsonl")) and data.strip():
        kinds += ["wrong type"] * 8
    if rel == f"{record}/config.json":
        kinds += ["parent missing", "parent cycle"]
    if rel.endswith(".safetensors"):
        kinds += ["tensor"] * 3
    kind = draw(st.sampled_from(kinds))
    if kind == "missing":
        return rel, kind, None
    if kind == "truncate":
        return rel, kind, data[:draw(st.integers(0, len(data) - 1))]
    if kind == "bytes":
        junk = draw(st.binary(min_size=1, max_size=64))
        if draw(st.booleans()):
            return rel, kind, junk
        i = draw(st.integers(0, len(data)))
        return rel, kind, data[:i] + junk + data[i + len(junk):]
    if kind == "wrong type":
        if rel.endswith(".jsonl"):
            lines = data.decode().splitlines()
            i = draw(st.integers(0, len(lines) - 1))
            lines[i] = draw(wrong_type(lines[i]))
            return rel, kind, ("\n".join(lines) + "\n").encode()
        return rel, kind, draw(wrong_type(data.decode())).encode()
    if kind == "tensor":
        return rel, kind, _tensor_damage(draw, f)
    config = json.loads(data)
    if kind == "parent missing":
        config["parent"] = {"name": "gone", "path": str(pristine.parent / "runs" / "gone")}
    else:  # a cycle: the record is its own parent, or its parent's parent
        other = draw(st.sampled_from(sorted({record} | {c for c, p in PARENTS.items() if p == record})))
        config["parent"] = {"name": other, "path": str(pristine.parent / "runs" / other)}
    return rel, kind, json.dumps(config).encode()


# ----- the reads -------------------------------------------------------------------------------------------------
def affected(record: str) -> set[str]:
    """The records whose reads may see a damage to ``record``'s files: it and its descendants."""
    out = {record}
    while True:
        more = {c for c, p in PARENTS.items() if p in out} - out
        if not more:
            return out
        out |= more


def names_damage(message: str, runs: Path, rel: str, kind: str) -> bool:
    """Whether an error's words name the damaged file (a missing file: its record's folder)."""
    record = runs / rel.split("/")[0]
    if kind == "missing":
        return str(record) in message
    return str(runs / rel) in message or (str(record) in message and Path(rel).name in message)


def read_folder(runs: Path, data, tiny: str) -> dict:
    """Every read of a whole folder: list_runs (with its warnings), the table, the HTML report,
    ``tunekit runs`` and the lab's runs panel. Returns what a check needs."""
    from tunekit import cli, report
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs_list = tk.list_runs(runs)
        for r in runs_list:  # what the table and names read
            r.display_name, r.status, r.metrics(), r.history("eval")
        table = tk.runs.table(runs_list)
        report.render_report(runs_list)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["runs", "--runs-dir", str(runs)])
    skipped = [str(w.message) for w in caught if str(w.message).startswith("skipping")]
    return {"names": [r.name for r in runs_list], "table": table, "skipped": skipped, "cli": (code, out.getvalue(),
                                                                                                err.getvalue())}


RECORD_READS = {
    "load_model": lambda run, data, scratch: run.load_model(),
    "load_start": lambda run, data, scratch: run.load_start(),
    "evaluate": lambda run, data, scratch: tk.evaluate(run, data, size=8),
    "weight_change": lambda run, data, scratch: tk.inspect.weight_change([run]),
    "prune": lambda run, data, scratch: tk.prune(run, 0.3, data=data, runs_dir=str(scratch / "post")),
    "export": lambda run, data, scratch: run.export(scratch / f"export-{run.name}"),
}
"""The reads of one record that rebuild its model: each on its own, after opening it."""


def read_record(runs: Path, name: str, read: str, data, scratch: Path) -> tuple[str, BaseException | None]:
    """``(what was read, its error or None)``: the record opened, then ``read`` (a key of
    :data:`RECORD_READS`) done on it."""
    try:
        run = tk.load_run(runs / name)
    except Exception as e:  # noqa: BLE001 - judged by the caller
        return "load_run", e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            RECORD_READS[read](run, data, scratch)
    except Exception as e:  # noqa: BLE001 - judged by the caller
        return read, e
    return read, None


# ----- the properties ----------------------------------------------------------------------------------------------
def _check_folder(res: dict, runs: Path, rel: str, kind: str) -> None:
    record = rel.split("/")[0]
    others = {"full", "lora", "full-prune50"} - {record}
    assert others <= set(res["names"]), f"an undamaged record is not listed: {res['names']} ({res['skipped']})"
    if record not in res["names"]:
        assert any(names_damage(w, runs, rel, kind) for w in res["skipped"]), \
            f"{record} was skipped without a warning that names {rel}: {res['skipped']}"
    assert set(res["table"]["run"]) == set(res["names"])
    code, out, err = res["cli"]
    assert code == 0 and "Traceback" not in out + err, (code, out, err)
    for name in others:
        assert name in out


def _check_read(what: str, e: BaseException | None, runs: Path, rel: str, kind: str, name: str) -> None:
    """A read works, or raises a RunRecordError that names the damaged file. A weights file
    (or adapter) that is gone, or a summary whose ``steps`` is null (as a crashed run's may be),
    leaves a record that holds no weights: a post-training op or an instrument says so of the
    record, by its name."""
    if e is None:
        return
    record = rel.split("/")[0]
    if kind in ("missing", "wrong type") and isinstance(e, tk.ConfigError) and "weights" in str(e) \
            and record in str(e):
        return
    assert isinstance(e, RunRecordError), f"{name}: {what} raised {type(e).__name__}: {e}"
    assert names_damage(str(e), runs, rel, kind), f"{name}: {what}'s error does not name {rel}: {e}"


def _digests(runs: Path, records) -> dict:
    return {rel: (runs / rel).read_bytes() for rel in _files(runs) if rel.split("/")[0] in records}


@fuzz_settings(ci_examples=60, long_examples=600)
@given(data=st.data())
def test_every_read_of_a_folder_with_one_damaged_file_lists_the_others_and_names_the_file(folder, data):
    """list_runs, the runs table, the HTML report and `tunekit runs`: never a raw error; the
    damaged record is listed or skipped with a warning that names its file; the others are all
    listed, and every file of theirs is as it was."""
    rel, kind, content = data.draw(damage(folder["pristine"]), label="damage")
    event(f"{kind} of {Path(rel).name}")
    runs = damaged_copy(folder, rel, content)
    others = {"full", "lora", "full-prune50"} - {rel.split("/")[0]}
    before = _digests(runs, others)
    _check_folder(read_folder(runs, folder["data"], folder["tiny"]), runs, rel, kind)
    assert _digests(runs, others) == before


@fuzz_settings(ci_examples=40, long_examples=400)
@given(data=st.data())
def test_every_read_of_a_damaged_record_works_or_names_the_file(folder, data):
    """Opening the damaged record (or a record that reads it: a descendant), then loading its
    model or its start, evaluating it, an instrument, pruning it or exporting it: each works or
    raises a RunRecordError that names the damaged file."""
    rel, kind, content = data.draw(damage(folder["pristine"]), label="damage")
    name = data.draw(st.sampled_from(sorted(affected(rel.split("/")[0]))), label="record")
    read = data.draw(st.sampled_from(sorted(RECORD_READS)), label="read")
    event(f"{kind} of {Path(rel).name}")  # what was drawn (pytest --hypothesis-show-statistics)
    event(f"read: {read}")
    runs = damaged_copy(folder, rel, content)
    with tempfile.TemporaryDirectory() as scratch:
        what, e = read_record(runs, name, read, folder["data"], Path(scratch))
    _check_read(what, e, runs, rel, kind, name)


# ----- explicit regressions: what the fuzz found -------------------------------------------------------------------
def _edit(path: Path, **fields) -> None:
    config = json.loads(path.read_text())
    config.update(fields)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("field, value", [
    ("parent", 3), ("parent", {"name": 5}), ("parent", []), ("strategy", "lora"), ("task", ["classification"]),
    ("format", ["peft"]), ("model", "tiny"), ("phases", None), ("train", None), ("params", [1]), ("versions", "x"),
    ("kind", []), ("strategy_label", []), ("data", 3),
])
def test_a_config_field_of_the_wrong_json_type_skips_that_record_only(folder, field, value):
    """The red team's case: such a config.json made the table, the report and `tunekit runs`
    raise for every record in the folder. Now the record is skipped with a warning that names
    its file and the field; the others list, and its own open is a RunRecordError."""
    runs = damaged_copy(folder, "lora/config.json", (folder["pristine"] / "lora/config.json").read_bytes())
    _edit(runs / "lora/config.json", **{field: value})
    res = read_folder(runs, folder["data"], folder["tiny"])
    assert sorted(res["names"]) == ["full", "full-prune50"]
    [said] = set(res["skipped"])  # the same from list_runs and from `tunekit runs`
    assert str(runs / "lora/config.json") in said and f"damaged: '{field}" in said, said
    with pytest.raises(RunRecordError, match=f"config.json is damaged: '{field}"):
        tk.load_run(runs / "lora")


@pytest.mark.parametrize("field, value", [("status", []), ("status", {}), ("memory_kind", [1]), ("val_accuracy", None),
                                          ("val_loss", "0.5"), ("steps", "2")])
def test_a_summary_field_of_the_wrong_json_type_skips_that_record_only(folder, field, value):
    runs = damaged_copy(folder, "full/summary.json", (folder["pristine"] / "full/summary.json").read_bytes())
    _edit(runs / "full/summary.json", **{field: value})
    res = read_folder(runs, folder["data"], folder["tiny"])
    assert sorted(res["names"]) == ["full-prune50", "lora"]
    [said] = set(res["skipped"])
    assert str(runs / "full/summary.json") in said and f"damaged: '{field}" in said, said


def test_a_metrics_line_of_the_wrong_types_is_skipped_as_a_torn_one(folder):
    runs = damaged_copy(folder, "full/metrics.jsonl", (folder["pristine"] / "full/metrics.jsonl").read_bytes())
    good = tk.load_run(runs / "full").history("eval")
    with open(runs / "full/metrics.jsonl", "a") as f:
        f.write(json.dumps({"event": "eval", "step": "9", "val_loss": [1]}) + "\n")
        f.write(json.dumps({"event": "eval", "step": 9, "val_loss": {"a": 1}}) + "\n")
    assert tk.load_run(runs / "full").history("eval").equals(good)
    read_folder(runs, folder["data"], folder["tiny"])  # the curves draw


@pytest.mark.parametrize("loop", [["full"], ["full", "full-prune50"]])
def test_a_parent_cycle_is_named_not_a_recursion_error(folder, loop):
    """The red team's case: a parent cycle was reported as a corrupt file ("maximum recursion
    depth"). Now it says the records' parents make a cycle and names their config.json files."""
    runs = damaged_copy(folder, "full/config.json", (folder["pristine"] / "full/config.json").read_bytes())
    _edit(runs / "full/config.json", parent={"name": loop[-1], "path": str(runs / loop[-1])})
    for name in loop:
        run = tk.load_run(runs / name)
        with pytest.raises(RunRecordError, match="parents make a cycle") as e:
            run.load_model()
        for other in loop:
            assert str(runs / other / "config.json") in str(e.value)
    assert sorted(r.name for r in tk.list_runs(runs)) == ["full", "full-prune50", "lora"]  # listing walks no parents


def test_a_parent_that_is_gone_names_the_config_that_names_it(folder):
    runs = damaged_copy(folder, "full/config.json", (folder["pristine"] / "full/config.json").read_bytes())
    shutil.rmtree(runs / "full")
    with pytest.raises(RunRecordError, match="full-prune50/config.json: full-prune50 started from 'full', whose record is not at"):
        tk.load_run(runs / "full-prune50").load_model()


@pytest.mark.parametrize("rel", ["full/weights.safetensors", "full/initial.safetensors",
                                 "lora/adapter/adapter_model.safetensors"])
@pytest.mark.parametrize("how", ["truncated", "int64", "shape"])
def test_a_damaged_tensor_file_is_named(folder, rel, how):
    f = folder["pristine"] / rel
    if how == "truncated":
        content = f.read_bytes()[:100]
    else:
        state = load_file(str(f))
        name = sorted(state)[0]
        state[name] = state[name].to(torch.int64) if how == "int64" else torch.zeros(*state[name].shape, 2)
        with tempfile.TemporaryDirectory() as tmp:
            save_file(state, f"{tmp}/t.safetensors")
            content = Path(f"{tmp}/t.safetensors").read_bytes()
    runs = damaged_copy(folder, rel, content)
    run = tk.load_run(runs / rel.split("/")[0])
    load = run.load_start if "initial" in rel else run.load_model
    with pytest.raises(RunRecordError) as e:
        load()
    assert str(runs / rel) in str(e.value)
    assert {"truncated": "cannot be read as safetensors", "int64": "torch.int64 values, not floating point",
            "shape": "does not fit the model"}[how] in str(e.value)


def test_a_missing_weights_file_is_named_when_the_summary_says_it_was_saved(folder):
    runs = damaged_copy(folder, "full/weights.safetensors", None)
    with pytest.raises(RunRecordError, match=r"full/weights.safetensors is missing: summary.json says"):
        tk.load_run(runs / "full").load_model()


# ----- numbers: two records started at once ------------------------------------------------------------------------
def _start_record(runs_dir: str, barrier, out, window_s: float) -> None:
    """A child: wait for the others, then start a record named "same" and say which number it
    got, and when it entered and left RunWriter. ``window_s`` widens the time between choosing
    the number and writing it (a slow folder), so that a race, if there is one, is lost."""
    import time

    from tunekit import writer
    choose = writer.next_number

    def slow_next_number(root):
        n = choose(root)
        time.sleep(window_s)
        return n
    writer.next_number = slow_next_number
    barrier.wait()
    entered = time.monotonic()
    w = writer.RunWriter(runs_dir, "same", {"who": os.getpid()})
    left = time.monotonic()
    w.finish("completed")
    out.put((w.name, json.loads((w.path / "config.json").read_text())["number"], entered, left))


def test_records_started_at_once_by_several_processes_get_distinct_numbers(tmp_path):
    """Four processes released together by one barrier each start a record in one folder, three
    rounds. Each entered RunWriter before another had left it (they raced), and the numbers are
    distinct and the folder's next ones: the number is taken under the folder's lock."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(3):
        runs_dir = tmp_path / f"runs{round_}"
        runs_dir.mkdir()
        barrier, out = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_start_record, args=(str(runs_dir), barrier, out, 0.2)) for _ in range(4)]
        for p in procs:
            p.start()
        got = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        first_left = min(left for *_, left in got)
        assert sum(entered < first_left for _, _, entered, _ in got) >= 2, "the processes did not race"
        assert sorted(n for _, n, _, _ in got) == [1, 2, 3, 4], got
        assert len({name for name, *_ in got}) == 4
        assert sorted(r.config["number"] for r in tk.list_runs(runs_dir)) == [1, 2, 3, 4]
        assert sorted(p.name for p in runs_dir.iterdir()) == ["same", "same-2", "same-3", "same-4"]  # no lock file


@fuzz_settings(ci_examples=12, long_examples=120)
@given(data=st.data())
def test_the_labs_runs_panel_on_a_folder_with_one_damaged_file(folder, data):
    """The lab's runs panel (the runs table, the picker and the Compare view it draws for the
    runs it selects) opens on the damaged folder: the others are offered, and a view that cannot
    draw the damaged record says so naming it, never a raw Python error."""
    import time

    from tunekit.widgets.views import RunsPanel
    rel, kind, content = data.draw(damage(folder["pristine"]), label="damage")
    runs = damaged_copy(folder, rel, content)
    record = rel.split("/")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipping a record warns; list_runs' own test checks the words
        panel = RunsPanel(str(runs), folder["data"], model=folder["tiny"])
        panel.refresh()
        panel.show("Compare")
        for _ in range(1200):  # the view computes in a thread
            if panel.state["Compare"] != "computing":
                break
            time.sleep(0.05)
    event(f"Compare {panel.state['Compare']}")
    offered = {value for _, value in panel.select.options}
    assert {"full", "lora", "full-prune50"} - {record} <= offered
    assert panel.state["Compare"] in ("drawn", "error", "empty"), panel.state
    if panel.state["Compare"] == "error":
        said = panel.status["Compare"].value
        assert record in said or Path(rel).name in said, said
