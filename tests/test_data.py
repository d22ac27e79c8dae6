import pandas as pd
import pytest

import tunekit as tk
from tunekit.data import DataError


def test_rotten_tomatoes_is_real_deduplicated_and_split_without_overlap(rt):
    assert rt.label_names == ["rotten", "fresh"]
    sizes = {s: len(rt.split(s)) for s in ("train", "validation", "test")}
    assert sizes == {"train": 9752, "validation": 1000, "test": 2000}
    texts = [set(rt.split(s)["text"]) for s in ("train", "validation", "test")]
    assert sum(map(len, texts)) == 12752  # 7,368 fresh + 5,384 rotten after de-duplication
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    # stratified: every split has the overall share of "fresh" (57.8 %) within a point
    for s in ("train", "validation", "test"):
        assert rt.split(s)["label"].mean() == pytest.approx(7368 / 12752, abs=0.01)
    assert "Achieves a sort of filmic epiphany" in " ".join(rt.train["text"].tolist() + rt.test["text"].tolist()
                                                            + rt.validation["text"].tolist())


def test_splits_are_seeded(rt):
    again = tk.data.rotten_tomatoes(seed=0)
    assert again.train["text"].tolist() == rt.train["text"].tolist()
    other = tk.data.rotten_tomatoes(seed=1)
    assert other.train["text"].tolist() != rt.train["text"].tolist()


def test_bbc_news_has_five_sorted_topics_and_no_duplicates():
    d = tk.data.bbc_news()
    assert d.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    total = len(d.train) + len(d.validation) + len(d.test)
    assert total == 2225 - d.info["duplicates_dropped"] and d.info["duplicates_dropped"] > 90
    assert set(d.train["label"]) == set(range(5))


def test_dataframe_csv_and_hf_inputs_agree(tmp_path, rt):
    df = pd.DataFrame({"review": rt.train["text"].iloc[:100],
                       "y": rt.train["label"].map({0: "neg", 1: "pos"}).iloc[:100]})
    a = tk.data.from_dataframe(df, text="review", label="y")
    df.to_csv(tmp_path / "r.csv", index=False)
    b = tk.data.load(tmp_path / "r.csv", text="review", label="y")
    datasets = pytest.importorskip("datasets")
    c = tk.data.load(datasets.Dataset.from_pandas(df, preserve_index=False), text="review", label="y")
    assert a.label_names == b.label_names == c.label_names == ["neg", "pos"]
    assert a.train.equals(b.train) and a.train.equals(c.train)


def test_hf_classlabel_names_are_kept():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"text": [f"review number {i}" for i in range(40)], "label": [i % 2 for i in range(40)]},
        features=datasets.Features({"text": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["bad", "good"])}))
    d = tk.data.from_hf(ds)
    assert d.label_names == ["bad", "good"]


@pytest.mark.parametrize("df,kw,words", [
    (pd.DataFrame({"text": [], "label": []}), {}, "the dataset is empty"),
    (pd.DataFrame({"text": ["a", "b", "c"], "label": [1, 1, 1]}), {}, "at least 2 classes"),
    (pd.DataFrame({"sentence": ["a", "b"], "label": [0, 1]}), {}, "no text column 'text'"),
    (pd.DataFrame({"text": ["a", "b"], "y": [0, 1]}), {}, "no label column 'label'"),
    (pd.DataFrame({"text": ["a", 3, None], "label": [0, 1, 0]}), {}, "must hold strings"),
    (pd.DataFrame({"text": ["a", "b"], "label": [0, None]}), {}, "missing label"),
    (pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [0, 1, 0, 1]}), {"validation_size": 2, "test_size": 2},
     "nothing to train on"),
])
def test_bad_data_gets_a_clear_error(df, kw, words):
    with pytest.raises(DataError, match=words):
        tk.data.from_dataframe(df, **kw)


def test_unknown_input_type_and_missing_csv(tmp_path):
    with pytest.raises(DataError, match="data must be a TextDataset"):
        tk.data.load(42)
    with pytest.raises(DataError, match="does not exist"):
        tk.data.load(tmp_path / "nope.csv")


def test_column_arguments_and_mixed_labels_get_tunekit_errors():
    """Found by the fuzz (issue 22): text=[] raised 'unhashable type', text == label made one
    column of two, and a label column mixing text and numbers raised Python's "'<' not supported"."""
    from tunekit.config import ConfigError
    df = pd.DataFrame({"text": ["a", "b", "c", "d", "e", "f"], "label": ["x", 1, "x", 1, "x", 1]})
    with pytest.raises(ConfigError, match=r"text must be the name of a column of the data \(got \[\]\)"):
        tk.data.from_dataframe(df, text=[])
    with pytest.raises(ConfigError, match="text and label must name two different columns"):
        tk.data.from_dataframe(df, text="label")
    with pytest.raises(DataError, match="column 'label' mixes text and numbers as labels"):
        tk.data.from_dataframe(df, validation_size=1, test_size=1)
    named = tk.data.from_dataframe(df, validation_size=1, test_size=1, label_names=["x", "1"])
    assert named.label_names == ["x", "1"]  # label_names says the order: then mixed kinds are fine


@pytest.mark.parametrize("name", ["a" * 5000, "~nobody-here/data.csv", "", "   "])
def test_data_names_the_system_cannot_look_up_are_data_errors(name):
    """Found by the fuzz (issue 22): tk.data.load('a' * 5000) raised OSError 'File name too long',
    '~nobody' RuntimeError 'Could not determine home directory', and '' read the folder '.'."""
    with pytest.raises(DataError, match="is neither a built-in data set nor an existing CSV file|does not exist"):
        tk.data.load(name)
    with pytest.raises(DataError, match="does not exist"):
        tk.data.from_csv(name if name.strip() else "a" * 5000)
