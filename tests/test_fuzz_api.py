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
from fuzzing import around, cheap, examples, holds, records_list, texts, wild
from tunekit.config import TrainConfig

pytestmark = [pytest.mark.fuzz, pytest.mark.filterwarnings("ignore")]


# ----- what every example shares: one tiny model, one tiny data set, one trained run ------------
@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-api")


@pytest.fixture(scope="module")
def tiny(home) -> str:
    """A 2-block, 128-wide random BERT (two attention heads, 512 positions)."""
    return str(tk.make_tiny_bert(home / "tiny-bert", layers=2, hidden=128))


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


@examples(20)
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
@given(value=around([["one text", "two texts", "three texts"], ["a", "a", "b"], "file", []],
                    st.one_of(wild, st.lists(texts, max_size=6))),
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


# ----- tk.compare -----------------------------------------------------------------------------------
@examples(10)
@given(field=st.sampled_from(["strategies", "model", "task", "data", "epochs", "seed"]), data_=st.data())
def test_compare(tiny, data, home, field, data_):
    values = {"strategies": around([["probe", "lora"], [], ["nope"], [tk.Full(), "full"]]),
              "model": around([tiny, "nope", ""]), "task": around(["classification", "causal_lm", "regression"]),
              "data": around([data, "nope.csv"], wild.filter(lambda v: not (isinstance(v, str) and v in tk.data.BUILTIN))),
              "epochs": around([1], wild.filter(cheap)), "seed": around([0, 2**63])}
    kwargs = {"strategies": ["probe"], "data": data, "model": tiny, field: data_.draw(values[field])}
    runs_dir = fresh_dir(home)
    names = [field, "strateg", "model"] if field == "strategies" else [field]
    holds(lambda: tk.compare(runs_dir=runs_dir, **QUICK, **kwargs), names, runs_dir, training=True)


# ----- tk.evaluate ----------------------------------------------------------------------------------
EVALUATE_VALUES = {
    "split": around(["train", "validation", "test", "Test"]),
    "size": around([None, 1, 10**9]),
    "seed": around([None, 0, 2**63]),
    "batch_size": around([1, 10**9]),
    "max_length": around([None, 1, 513, 10**6]),
    "device": around([None, "cpu", "cuda", "meta", "cpu:1"]),
    "precision": around([None, "fp32", "bf16", "fp16", "auto"]),
}


@examples(30)
@given(field=st.sampled_from(sorted(EVALUATE_VALUES) + ["data", "run_or_model"]), data_=st.data())
def test_evaluate(run, data, home, field, data_):
    if field == "data":
        value = data_.draw(around([data, "missing.csv", str(home), "bbc_news"]))  # bbc_news: other label names
        kwargs = {"data": value}
    elif field == "run_or_model":
        kwargs = {"run_or_model": data_.draw(around([run, str(run.path), str(home), str(home / "nope")])),
                  "data": data}
    else:
        kwargs = {"data": data, field: data_.draw(EVALUATE_VALUES[field])}
    kwargs.setdefault("run_or_model", run)
    names = [field] + ([str(kwargs[field])[:60], "run", "data"] if field in ("run_or_model", "data") else [])
    holds(lambda: tk.evaluate(**kwargs), names)


# ----- post-training ----------------------------------------------------------------------------------
PRUNE_VALUES = {
    "sparsity": around([0.0, 0.5, 0.99, [0.1, 0.2], []]),
    "method": around(["magnitude", "heads", "neurons", "Heads"]),
    "scope": around(["global", "layer"]),
    "importance": around(["taylor", "magnitude"]),
    "importance_examples": around([1, 10**9]),
    "name": around(["pruned", "../x", "a" * 300], texts),
    "recover": around([None, True, {"epochs": 1}, {"epochs": 0}, {"nope": 1}, {"runs_dir": 3}]),
}


@examples(8)
@given(field=st.sampled_from(sorted(PRUNE_VALUES)), data_=st.data())
def test_prune(run, data, home, field, data_):
    value = data_.draw(PRUNE_VALUES[field])
    runs_dir = fresh_dir(home)
    kwargs = {field: value, **({"method": "heads", "amount": 1} if field == "importance" else {})}
    if isinstance(kwargs.get("recover"), dict):
        kwargs["recover"] = {**QUICK, **kwargs["recover"]}
    holds(lambda: tk.prune(run, data=data, runs_dir=runs_dir, **kwargs), [field, "recover", "epochs", "runs_dir"], runs_dir,
          training=True)


@examples(6)
@given(amount=around([1, 2, 0.5, 0.999]), method=st.sampled_from(["heads", "neurons"]))
def test_prune_structured_amount(run, data, home, amount, method):
    runs_dir = fresh_dir(home)
    holds(lambda: tk.prune(run, data=data, method=method, amount=amount, runs_dir=runs_dir, importance_examples=4),
          ["amount", "heads"], runs_dir)


@examples(4)
@given(field=st.sampled_from(["method", "bits", "name"]), data_=st.data())
def test_quantize(run, data, home, field, data_):
    values = {"method": around([None, "int8-dynamic", "int8-weight", "intx-dynamic", "int4"]),
              "bits": around([None, 2, 8, 9]), "name": around(["q"], texts)}
    runs_dir = fresh_dir(home)
    value = data_.draw(values[field])
    kwargs = {field: value, **({"method": "intx-dynamic"} if field == "bits" else {})}
    holds(lambda: tk.quantize(run, data=data, runs_dir=runs_dir, **kwargs), [field, "bits", "method"], runs_dir)


DISTIL_VALUES = {
    "student": around([[0], [0, 1], (1,), [5], [-1], [], [0, 0]]),
    "loss": around(["response", "feature", "relation", "response+feature", {"response": 0.5}, None,
                    {"response": -1}, ["feature"]],
                   st.one_of(wild, st.just(""))),
    "hard": around([0.0, 1.0, 10.0]),
    "temperature": around([0.5, 2.0, 1e-30, float("inf")]),
    "baseline": around([True, False]),
    "epochs": around([1], wild.filter(cheap)),
}


@examples(8)
@given(field=st.sampled_from(sorted(DISTIL_VALUES)), data_=st.data())
def test_distil(run, data, home, field, data_):
    runs_dir = fresh_dir(home)
    kwargs = {"student": [0], field: data_.draw(DISTIL_VALUES[field])}
    holds(lambda: tk.distil(run, data=data, runs_dir=runs_dir, **{**QUICK, **kwargs}),
          [field, "student", "loss", "nothing to learn"], runs_dir, training=True)


@examples(5)
@given(field=st.sampled_from(["strategies", "split", "n", "k", "size", "task"]), data_=st.data())
def test_forgetting(tiny, data, home, field, data_):
    values = {"strategies": around([["probe"], [], ["lora"], ["nope"]]), "split": around(["test", "validation", "train"]),
              "n": around([2, 10**9]), "k": around([1, 3, 10**9]), "size": around([None, 2]),
              "task": around(["classification", "causal_lm"])}
    runs_dir = fresh_dir(home)
    kwargs = {"strategies": ["probe"], "n": 4, "k": 2, field: data_.draw(values[field])}
    holds(lambda: tk.forgetting(first=data, then=data, model=tiny, runs_dir=runs_dir, **{**QUICK, **kwargs}),
          [field, "strateg"], runs_dir, training=True)


@examples(8)
@given(value=around(["run", "path", "model", "missing"], wild))
@example(value="run")
@example(value="model")
def test_measure(run, tiny, data, home, value):
    target = {"run": run, "path": str(run.path), "model": tk.load_model(tiny, label_names=data.label_names),
              "missing": str(home / "missing")}.get(value, value) if isinstance(value, str) else value
    holds(lambda: tk.measure(target), ["model", "run", str(target)[:60]], run.path.parent)


# ----- the instruments --------------------------------------------------------------------------------
@examples(20)
@given(field=st.sampled_from(["text", "target", "n_steps", "internal_batch_size", "max_length", "model"]),
       data_=st.data())
def test_attribute(run, field, data_):
    values = {"text": around(["a fine film", "", "a" * 3000], texts), "target": around([None, 0, 1, "pos", "nope", 2]),
              "n_steps": around([1, 4]), "internal_batch_size": around([None, 1, 10**9]),
              "max_length": around([2, 512, 10**6]), "model": around([run, str(run.path), "missing"])}
    kwargs = {"model": run, "text": "a fine film", "n_steps": 4, field: data_.draw(values[field])}
    holds(lambda: tk.inspect.attribute(**kwargs), [field, "model", "run", str(kwargs["model"])[:60]])


@examples(16)
@given(field=st.sampled_from(["texts", "n", "seed", "max_length", "batch_size", "data"]), data_=st.data())
def test_representation_drift(run, data, field, data_):
    values = {"texts": around([None, ["a", "b"], [], ["x" * 5000]], st.lists(texts, max_size=3)),
              "n": around([1, 4, 10**9]), "seed": around([0, 2**63]), "max_length": around([2, 10**6]),
              "batch_size": around([1, 10**9]), "data": around([data, None])}
    kwargs = {"data": data, "n": 4, field: data_.draw(values[field])}
    holds(lambda: tk.inspect.representation_drift(run, **kwargs), [field, "data", "texts"])


@examples(12)
@given(field=st.sampled_from(["n", "seed", "max_length", "batch_size", "data"]), data_=st.data())
def test_pca_features(run, data, field, data_):
    values = {"n": around([1, 2, 4, 10**9]), "seed": around([0, 2**63]), "max_length": around([2, 10**6]),
              "batch_size": around([1, 10**9]), "data": around([data, None])}
    kwargs = {"data": data, "n": 4, field: data_.draw(values[field])}
    holds(lambda: tk.inspect.pca_features(run, **kwargs), [field, "data"])


@examples(6)
@given(field=st.sampled_from(["top_k", "eps", "energy", "include_embeddings", "names", "runs"]), data_=st.data())
def test_weight_instruments(run, home, field, data_):
    values = {"top_k": around([1, 10**9]), "eps": around([0.1, 1.0]), "energy": around([0.5, 1.0]),
              "include_embeddings": around([True, False]), "names": around([None, ["classifier.weight"]]),
              "runs": around([[run], [], str(home / "nope")])}
    value = data_.draw(values[field])
    if field == "runs":
        holds(lambda: tk.inspect.weight_change(value), ["run", str(value)[:60]])
        holds(lambda: tk.inspect.update_spectra(value), ["run", str(value)[:60]])
    else:
        holds(lambda: tk.inspect.update_spectra(run, **{field: value}), [field])


# ----- the plots on records ---------------------------------------------------------------------------
_MEASURED: dict = {}


def measured(run, data, instrument: str):
    """An instrument's result on the trained run, measured once for every plot example."""
    if instrument not in _MEASURED:
        _MEASURED[instrument] = {
            "weight_change": lambda: tk.inspect.weight_change([run]),
            "update_spectra": lambda: tk.inspect.update_spectra([run]),
            "representation_drift": lambda: tk.inspect.representation_drift(run, data=data, n=4),
            "pca_features": lambda: tk.inspect.pca_features(run, data, n=4),
            "attribute": lambda: tk.inspect.attribute(run, "a fine film", n_steps=2)}[instrument]()
    return _MEASURED[instrument]


@examples(30)
@given(which=st.sampled_from(["training_curves.smooth", "training_curves.x", "eval_curves.metric", "pareto.x",
                              "pareto.y", "pareto.log_x", "comparison_table.runs", "sparsity_curve.metric",
                              "weight_change_heatmap.value", "weight_change_heatmap.modules",
                              "weight_change_heatmap.zmax", "rank_by_block.metric", "spectrum.name",
                              "cka_by_layer.metric", "pca_scatter.columns", "attribution_view.normalize"]),
       data_=st.data())
def test_plots(run, data, which, data_):
    import tunekit.plots as plots
    function, field = which.split(".")
    good = {"smooth": [0.0, 0.9], "x": ["step", "epoch", "samples", "trainable_params", "size_mb"],
            "metric": [None, "accuracy", "loss", "cka", "effective_rank"], "y": [None, "val_accuracy", "val_loss"],
            "log_x": [None, True], "runs": [[run], [], [str(run.path)], "nope"], "value": ["rel_change", "delta_norm"],
            "modules": [None, ["query"], [], "query"], "zmax": [None, 0.5, 1e-9], "name": ["x"], "columns": [1, 2],
            "normalize": ["row", "none", "all"]}
    value = data_.draw(around(good[field]))
    if function in ("weight_change_heatmap", "rank_by_block", "spectrum"):
        source = measured(run, data, "weight_change" if function == "weight_change_heatmap" else "update_spectra")
        if function == "spectrum":
            call = lambda: plots.spectrum(source, value)  # noqa: E731
        else:
            call = lambda: getattr(plots, function)(source if function != "rank_by_block" else source.table,  # noqa: E731
                                                    **{field: value})
    elif function in ("cka_by_layer", "pca_scatter"):
        frame = measured(run, data, "representation_drift" if function == "cka_by_layer" else "pca_features")
        call = lambda: getattr(plots, function)(frame, **{field: value})  # noqa: E731
    elif function == "attribution_view":
        call = lambda: plots.attribution_view(measured(run, data, "attribute"), normalize=value)  # noqa: E731
    elif field == "runs":
        call = lambda: plots.comparison_table(value)  # noqa: E731
    else:
        call = lambda: getattr(plots, function)([run], **{field: value})  # noqa: E731
    holds(call, [field, function, "run"])


# ----- records: Run / load_run / list_runs -------------------------------------------------------------
@examples(20)
@given(value=around(["run", "file", "folder", "missing", "home"], wild))
def test_records(run, home, value):
    root = Path(fresh_dir(home))
    (root / "file").write_text("{}")
    (root / "folder").mkdir()
    path = {"run": str(run.path), "file": str(root / "file"), "folder": str(root / "folder"),
            "missing": str(root / "missing"), "home": str(home)}.get(value, value) if isinstance(value, str) else value
    names = ["run", "runs_dir", "path", str(path)[:60]]
    holds(lambda: tk.load_run(path), names)
    holds(lambda: tk.Run(path), names)
    holds(lambda: tk.list_runs(path), names)


# ----- the command line ---------------------------------------------------------------------------------
OPTION_TEXT = st.one_of(st.sampled_from(["", " ", "0", "-1", "1", "2", "nan", "inf", "-inf", "1e999", "1e-300",
                                         "99999999999999999999999", "0.5", "all", "probe", "lora:0", "lora:x",
                                         "freeze:99", ",", "é", "a" * 3000, "missing.csv", "/", ".", "0,1,2", "x,y"]),
                        st.text(max_size=12))


@pytest.fixture(scope="module")
def csv(home) -> str:
    path = home / "reviews.csv"
    reviews().to_csv(path, index=False)
    return str(path)


def cli_commands(tiny, csv, run, runs_dir):
    """Each command with cheap settings, and the options the fuzz may set wrong."""
    training = ["--model", tiny, "--data", csv, "--train-size", "16", "--eval-size", "4", "--batch-size", "16",
                "--max-length", "16", "--no-progress", "--runs-dir", runs_dir]
    report = ["--report", str(Path(runs_dir) / "report.html")]
    return {
        "compare": (["compare", "--strategies", "probe", "--no-inspect", *report, *training],
                    ["--strategies", "--task", "--epochs", "--train-size", "--eval-size", "--model", "--data",
                     "--runs-dir", "--report", "--seed", "--lr", "--batch-size", "--max-length", "--device",
                     "--precision", "--log-every", "--title"]),
        "train": (["train", "--strategy", "probe", *training],
                  ["--strategy", "--name", "--seed", "--lr", "--max-length", "--device", "--epochs", "--data"]),
        "runs": (["runs", "--runs-dir", runs_dir], ["--runs-dir", "--report"]),
        "evaluate": (["evaluate", str(run.path), "--data", csv],
                     ["RUN", "--split", "--data", "--size", "--runs-dir", "--device"]),
        "prune": (["prune", str(run.path), "--data", csv, "--name", "p"],
                  ["RUN", "--method", "--sparsity", "--scope", "--amount", "--importance", "--data", "--name"]),
        "quantize": (["quantize", str(run.path), "--data", csv, "--name", "q"], ["RUN", "--method", "--bits"]),
        "distil": (["distil", str(run.path), "--data", csv, "--student", "0", "--name", "d", "--no-progress"],
                   ["--student", "--loss", "--temperature", "--hard", "--epochs", "--lr"]),
        "forgetting": (["forgetting", "--strategies", "probe", "--first", csv, "--then", csv, "--model", tiny,
                        "--train-size", "16", "--eval-size", "4", "--runs-dir", runs_dir, "--no-progress"],
                       ["--strategies", "--first", "--then", "--model", "--train-size", "--eval-size", "--epochs",
                        "--seed"]),
        "export": (["export", str(Path(runs_dir) / "none.ipynb"), "--out", str(Path(runs_dir).with_suffix(".pages"))],
                   ["NOTEBOOK", "--out", "--param", "--timeout"]),
    }


def run_cli(argv: list[str], cwd: str) -> tuple[int, str]:
    """Run the command in ``cwd`` (a relative path it is given lands there, not in the checkout)."""
    import contextlib
    import io

    from tunekit.cli import main
    err, out = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as e:  # --help and argparse's own exits
            code = e.code if isinstance(e.code, int) else 2
    return code, err.getvalue()


def replace_option(argv: list[str], option: str, value: str) -> list[str]:
    """``argv`` with ``option`` set to ``value`` (a positional RUN or NOTEBOOK: the value)."""
    argv = list(argv)
    if option in ("RUN", "NOTEBOOK"):
        argv[1] = value
        return argv
    if option in argv:
        argv[argv.index(option) + 1] = value
        return argv
    return argv + [option, value]


@examples(40)
@given(command=st.sampled_from(["compare", "train", "runs", "evaluate", "prune", "quantize", "distil", "forgetting",
                                "export"]), data_=st.data())
def test_cli_options(tiny, csv, run, home, command, data_):
    """Every command, one option set to odd text: it runs (exit 0, or 1 for a run that failed), or
    exits 2 with one 'error:' line and no traceback; the records folder still lists."""
    runs_dir = fresh_dir(home)
    argv, options = cli_commands(tiny, csv, run, runs_dir)[command]
    option = data_.draw(st.sampled_from(options))
    value = data_.draw(OPTION_TEXT)
    assume(not (option in ("--data", "--first", "--then") and value.strip() in tk.data.BUILTIN))  # seconds to read
    code, err = run_cli(replace_option(argv, option, value), cwd=fresh_dir(home))
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    if code == 2:
        assert len(errors) == 1, err
        assert errors[0].startswith(f"tunekit {command}: error:") or errors[0].startswith("tunekit: error:"), err
    else:
        assert code in (0, 1), (code, err)
        assert not errors, err
    records_list(runs_dir)
    records_list(run.path.parent)
