"""The property-based fuzz of tunekit's public surface (issue 22): every entry point, fed the
wrong type or a value at its edge, succeeds or raises a TunekitError naming the parameter or
file; the command line exits 2 with one line and no traceback; and the records folder it wrote
to still lists, none ``running``. See tests/fuzzing.py for the values and the property.

Bounded in CI (the ``ci`` profile: derandomized, a few examples per test); a deeper run:
``HYPOTHESIS_PROFILE=long pytest -m fuzz tests/test_fuzz_api.py``.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

import tunekit as tk
from fuzzing import around, cheap, examples, holds, texts, wild
from tunekit.config import TrainConfig

pytestmark = [pytest.mark.fuzz, pytest.mark.filterwarnings("ignore")]


# ----- what every example shares: one tiny model, one tiny data set, one trained run ------------
@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-api")


@pytest.fixture(scope="module")
def tiny(home) -> str:
    """A 2-block, 32-wide random BERT (one attention head, 512 positions)."""
    return str(tk.make_tiny_bert(home / "tiny-bert", layers=2, hidden=32))


def reviews(n: int = 24) -> pd.DataFrame:
    """n short and long texts, two classes; every third one is longer than the model's 512 positions."""
    words = "good plot bad acting fine score dull pace".split()
    rows = []
    for i in range(n):
        text = f"review {i}: " + " ".join(words[(i + j) % len(words)] for j in range(6 if i % 3 else 600))
        rows.append((text, "pos" if i % 2 else "neg"))
    return pd.DataFrame(rows, columns=["text", "label"])


@pytest.fixture(scope="module")
def data():
    return tk.data.from_dataframe(reviews(), validation_size=4, test_size=4, name="fuzz-reviews")


QUICK = dict(batch_size=16, eval_size=4, evals_per_epoch=1, progress=False, max_length=16)
"""A one-step run on the 16 training texts."""


@pytest.fixture(scope="module")
def run(tiny, data, home):
    """One trained tiny run with weights, for the calls that read a record."""
    model = tk.load_model(tiny, label_names=data.label_names)
    return tk.train(model, data, "full", runs_dir=str(home / "runs"), name="trained", **QUICK)


def fresh_dir(home: Path) -> str:
    return tempfile.mkdtemp(prefix="runs-", dir=home)


# ----- TrainConfig: every field -------------------------------------------------------------------
FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


@examples(80)
@given(field=st.sampled_from(FIELDS), value=wild)
@example(field="seed", value=2**64)
@example(field="epochs", value=True)
@example(field="max_length", value=10**30)
def test_train_config_fields(field, value):
    """Every field, any value: a TrainConfig, or a ConfigError naming the field."""
    cfg = holds(lambda: TrainConfig(**{field: value}), [field])
    if isinstance(cfg, TrainConfig):
        assert cfg.replace() == cfg  # what was accepted validates again


# ----- tk.train: a field set wrong, one step on the tiny model ----------------------------------
TRAIN_VALUES = {
    "epochs": around([1, 2], wild.filter(cheap)),
    "lr": around([1e-3, 1e-1, 1e3, 1e30]),
    "batch_size": around([1, 4, 10**9]),
    "eval_batch_size": around([1, 10**9]),
    "schedule": around(["constant", "cosine", "Linear"]),
    "warmup": around([0.0, 0.99]),
    "weight_decay": around([0.0, 1e6]),
    "grad_clip": around([None, 1e-30]),
    "seed": around([0, 2**32, 2**63, 2**64 - 1]),
    "max_length": around([1, 2, 512, 513, 10**6]),
    "train_size": around([None, 1, 10**9], wild.filter(cheap)),
    "eval_size": around([None, 1, 10**9]),
    "evals_per_epoch": around([1, 10**6]),
    "device": around([None, "cpu", "cuda", "mps", "tpu", "cpu:1", "meta"]),
    "precision": around(["fp32", "bf16", "fp16"]),
    "group_by_length": around([True, False]),
    "log_every": around([None, 1, 10**9]),
    "cache_budget_mb": around([0, 0.001, 1e9]),
    "name": around(["my run", "../escape", "a" * 300, "é/ü", ".hidden", "", " "], texts),
    "save_weights": around([True, False]),
    "compile": st.sampled_from([1, 0, "yes", None, 2.0]),  # True compiles: seconds per example
}


@examples(40)
@given(field=st.sampled_from(sorted(TRAIN_VALUES)), data_=st.data())
@example(field="seed", data_=None)
@example(field="max_length", data_=None)
def test_train_field(tiny, data, home, field, data_):
    """tk.train with one field set wrong: a run (completed, or failed as a TrainingError), or a
    TunekitError naming the field before a record is written."""
    value = {"seed": 2**64 - 1, "max_length": 10**6}[field] if data_ is None else data_.draw(TRAIN_VALUES[field])
    runs_dir = fresh_dir(home)
    model = tk.load_model(tiny, label_names=data.label_names)
    settings = {**QUICK, field: value}
    out = holds(lambda: tk.train(model, data, "full", runs_dir=runs_dir, **settings), [field], runs_dir,
                training=True)
    if isinstance(out, tk.Run):
        assert out.status == "completed"
    elif not isinstance(out, tk.TrainingError):
        assert not list(Path(runs_dir).iterdir()), f"refused ({out}), yet a record was written"


@examples(12)
@given(runs_dir=st.sampled_from(["file", "missing/deeper", "unwritable", "", "nul\x00"]))
def test_train_runs_dir(tiny, data, home, runs_dir):
    """runs_dir a file, a missing folder, an unwritable one, empty, or with a NUL byte."""
    root = Path(fresh_dir(home))
    (root / "file").write_text("not a folder")
    (root / "unwritable").mkdir()
    (root / "unwritable").chmod(0o500)
    path = runs_dir if runs_dir in ("",) else str(root / runs_dir)
    model = tk.load_model(tiny, label_names=data.label_names)
    try:
        holds(lambda: tk.train(model, data, "full", runs_dir=path, **QUICK), ["runs_dir", path or "runs_dir"],
              training=True)
    finally:
        (root / "unwritable").chmod(0o700)


# ----- strategies: each constructor's fields, then planned against the model -------------------
def strategy_fields():
    from tunekit.strategies import REGISTRY
    return [(name, f.name) for name, cls in sorted(REGISTRY.items()) for f in dataclasses.fields(cls)]


STRATEGY_GOOD = {"rank": [1, 4, 32, 33], "alpha": [None, 1, 0.5], "dropout": [0.0, 0.5],
                 "target_modules": [None, ["query"], "value", ["nothing"], ("query", "dense")],
                 "feedforward_modules": [None, ["output.dense"], ["query"]],
                 "train": [["head"], ["block.0", "head"], ["block.9"]], "frozen": [["embeddings"], []],
                 "train_blocks": [[0], [-1], [], [2], [-3]], "pooling": [None, "mean", "last", "model"],
                 "probe_epochs": [1], "probe_lr": [None, 1e-2], "bits": [2, 4, 8]}


@examples(60)
@given(which=st.sampled_from(strategy_fields()), data_=st.data())
def test_strategy_constructors(tiny, data, home, which, data_):
    """Each strategy's parameter, any value: a strategy that plans on the model and trains a
    step, or a ConfigError naming ``Class.field`` (or the field)."""
    from tunekit.strategies import REGISTRY
    name, field = which
    cls = REGISTRY[name]
    value = data_.draw(around(STRATEGY_GOOD.get(field, [None])))
    kwargs = {field: value}
    if cls.__name__ == "Freeze" and field != "train_blocks":
        kwargs.setdefault("train_blocks", None)
    names = [f"{cls.__name__}.{field}", field, cls.__name__]
    strategy = holds(lambda: cls(**kwargs), names)
    if isinstance(strategy, Exception):
        return
    model = tk.load_model(tiny, label_names=data.label_names)
    runs_dir = fresh_dir(home)
    holds(lambda: tk.train(model, data, strategy, runs_dir=runs_dir, **QUICK), names, runs_dir, training=True)


@examples(30)
@given(spec=around(["probe", "lora", {"name": "lora", "rank": 2}, {"name": "freeze", "train_blocks": [0]}],
                   st.one_of(wild, st.dictionaries(st.sampled_from(["name", "rank", "bits", "pooling", "x"]), wild,
                                                   max_size=3))))
def test_get_strategy(spec):
    """tk.get_strategy (what tk.train does with strategy=...): any spec."""
    holds(lambda: tk.get_strategy(spec), ["strategy", "Strategy", "rank", "bits", "pooling", "parameter"])


# ----- tk.load_model -------------------------------------------------------------------------------
LOAD_VALUES = {
    "num_labels": around([None, 2, 3, 100_000, 100_001]),
    "label_names": around([None, ["a", "b"], ["a", "a"], ["a"], ("x", "y", "z"), [1, 2]]),
    "task": around(["classification", "causal_lm", "regression"]),
    "seed": around([0, 2**32, 2**63, 2**64 - 1, 2**64]),
    "pooling": around([None, "mean", "last", "model", "max"]),
    "config_overrides": around([None, {}, {"hidden_dropout_prob": 0.0}, {"num_hidden_layers": -1},
                                {"hidden_size": "x"}, {"nonsense": 1}, {"vocab_size": 0}]),
}


@examples(40)
@given(field=st.sampled_from(sorted(LOAD_VALUES)), data_=st.data())
@example(field="seed", data_=None)
def test_load_model(tiny, field, data_):
    value = 2**64 if data_ is None else data_.draw(LOAD_VALUES[field])
    names = [field] + (["label_names"] if field == "num_labels" else []) + (["model"] if field == "task" else [])
    if field == "config_overrides":
        names.append(tiny)
    holds(lambda: tk.load_model(tiny, **{field: value}), names)


@examples(20)
@given(model=around(["file", "folder", "missing", "config-only", "bad-config"], wild))
def test_load_model_paths(home, model):
    """The model a file, an empty folder, a missing path, a folder with only a config.json, a
    config.json that is not JSON, or anything else."""
    root = Path(fresh_dir(home))
    (root / "file").write_text("weights?")
    (root / "folder").mkdir()
    (root / "config-only").mkdir()
    (root / "config-only" / "config.json").write_text('{"model_type": "bert"}')
    (root / "bad-config").mkdir()
    (root / "bad-config" / "config.json").write_text("{not json")
    path = str(root / model) if model in ("file", "folder", "missing", "config-only", "bad-config") else model
    holds(lambda: tk.load_model(path), ["model", str(path), repr(path)])


# ----- the data loaders ----------------------------------------------------------------------------
FRAME_VALUES = {
    "validation_size": around([0, 1, 0.25, 4, 0.0, 23]),
    "test_size": around([0, 1, 0.25, 4]),
    "seed": around([0, 2**64]),
    "conflicts": around(["drop", "first", "error"]),
    "label_names": around([None, ["neg", "pos"], ["pos", "neg"], ["neg"], ["neg", "pos", "other"], "neg"]),
    "name": around(["x", ""], texts),
    "text": around(["text", "label", "missing"]),
    "label": around(["label", "text", "missing"]),
}


@examples(40)
@given(field=st.sampled_from(sorted(FRAME_VALUES)), data_=st.data())
def test_from_dataframe_arguments(field, data_):
    value = data_.draw(FRAME_VALUES[field])
    names = [field, "label", "text", "column", "classes", "train", "label_names"]
    holds(lambda: tk.data.from_dataframe(reviews(), **{field: value}), names)


label_cells = st.one_of(st.sampled_from(["neg", "pos", 0, 1, 0.0, 1.0, 0.5, True, None, float("nan"),
                                         "", " ", 2**70, -1, [1], {"a": 1}]), st.text(max_size=3), st.integers(-2, 3))
text_cells = st.one_of(texts, st.sampled_from([None, 1, 2.5, float("nan"), ["a"], b"bytes"]))


@examples(40)
@given(labels=st.lists(label_cells, min_size=0, max_size=30), cells=st.lists(text_cells, min_size=0, max_size=30))
def test_from_dataframe_columns(labels, cells):
    """Label columns of mixed, float, missing or odd types; text columns that are not all text."""
    n = min(len(labels), len(cells)) if cells else len(labels)
    base = reviews(n)["text"].tolist()
    column = (cells[:n] + base[len(cells[:n]):]) if cells else base
    df = pd.DataFrame({"text": pd.Series(column, dtype=object), "label": pd.Series(labels[:n], dtype=object)})
    holds(lambda: tk.data.from_dataframe(df, validation_size=1, test_size=1, name="frame"),
          ["label", "text", "frame", "validation_size", "test_size"])


@examples(30)
@given(content=st.one_of(st.sampled_from([b"", b"\x00\x00", b"text,label\n", b"text,label\na,1\n", b"\xff\xfe\x00",
                                          b"text;label\na;b\n", b'text,label\n"unclosed,1\n', b"label\n1\n2\n"]),
                         st.binary(max_size=200)),
       kind=st.sampled_from(["file", "folder", "missing", "unreadable"]))
def test_from_csv(home, content, kind):
    root = Path(fresh_dir(home))
    path = root / "data.csv"
    if kind == "folder":
        path.mkdir()
    elif kind != "missing":
        path.write_bytes(content)
        if kind == "unreadable":
            path.chmod(0)
    try:
        holds(lambda: tk.data.from_csv(path), [str(path), "data"])
        holds(lambda: tk.data.load(str(path)), [str(path), "data"])
    finally:
        if path.is_file():
            path.chmod(0o600)


@examples(40)
@given(value=around([["one text", "two texts", "three texts"], ["a", "a", "b"], "file"],  # lead: from_texts([])
                    st.one_of(wild, st.lists(texts, max_size=6)).filter(lambda v: not isinstance(v, list) or v)),
       field=st.sampled_from(["texts", "validation_size", "test_size", "seed", "name"]))
def test_from_texts(home, value, field):
    good = [f"text number {i}" for i in range(12)]
    if value == "file":
        path = Path(fresh_dir(home)) / "texts.txt"
        path.write_text("\n".join(good))
        value = str(path)
    kwargs = {"texts": good, field: value}
    holds(lambda: tk.data.from_texts(**kwargs), [field, "text"])


@examples(30)
@given(value=wild, extra=st.dictionaries(st.sampled_from(["seed", "name", "validation_size", "bogus"]), wild,
                                        max_size=2))
def test_data_load(value, extra):
    """tk.data.load (what tk.train, evaluate, compare do with data=...): anything."""
    assume(not (isinstance(value, str) and value in tk.data.BUILTIN))  # a built-in set takes seconds to read
    holds(lambda: tk.data.load(value, **extra), ["data", *extra, str(value)[:40]])
