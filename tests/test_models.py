import sys

import pandas as pd
import pytest
import torch

import tunekit as tk
from tunekit.config import ConfigError
from tunekit.models import ModelNotFoundError
from tunekit.restore import canonical_name

# names looked up and connections tried while a test listens (an audit hook cannot be removed)
_NETWORK: list | None = None


def _audit_network(event, args):
    if _NETWORK is not None and event in ("socket.getaddrinfo", "socket.connect"):
        _NETWORK.append((event, args))


sys.addaudithook(_audit_network)


def test_tiny_model_groups_are_ordered_and_cover_every_parameter(tiny):
    assert tiny.group_names == ["embeddings", "block.0", "block.1", "pooler", "head"]
    by = tiny.parameters_by_group()
    assert sum(len(v) for v in by.values()) == len(list(tiny.hf.named_parameters()))
    assert {n for n, _ in by["head"]} == {"classifier.weight", "classifier.bias"}
    assert all(n.startswith("bert.encoder.layer.1.") for n, _ in by["block.1"])
    assert tiny.head_name == "classifier"


def test_canonical_name_strips_peft_wrappers():
    assert canonical_name("base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.default.weight") \
        == "bert.encoder.layer.0.attention.self.query.weight"
    assert canonical_name("base_model.model.bert.encoder.layer.0.attention.self.query.base_layer.weight") \
        == "bert.encoder.layer.0.attention.self.query.weight"
    assert canonical_name("base_model.model.classifier.modules_to_save.default.bias") == "classifier.bias"
    assert canonical_name("base_model.model.classifier.original_module.bias") == "classifier.bias"


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_pooling_ignores_padding(tiny, pooling):
    tiny.hf.eval()
    tiny.pooling = pooling
    enc = tiny.tokenize(["a good film", "a good film that goes on and on and on"])
    alone = tiny.tokenize(["a good film"])
    with torch.no_grad():
        both = tiny.features(enc["input_ids"], enc["attention_mask"])
        one = tiny.features(alone["input_ids"], alone["attention_mask"])
    torch.testing.assert_close(both[0], one[0], atol=1e-5, rtol=1e-4)


def test_features_need_a_pooling_of_tunekits_own(tiny):
    tiny.pooling = "model"
    enc = tiny.tokenize(["a good film"])
    with pytest.raises(ConfigError, match="features\\(\\) needs pooling 'mean' or 'last'"):
        tiny.features(enc["input_ids"], enc["attention_mask"])


def test_unknown_path_names_the_builtins(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist; built-in models: 'minilm'"):
        tk.load_model(str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        tk.load_model(str(tmp_path / "empty"))


def test_hub_id_offline_fails_fast_and_clearly():
    """Offline, the hub is not asked at all (no name looked up, no connection tried), so there
    is no minute of retries; benchmarks/bench_lookups.py times it."""
    global _NETWORK
    _NETWORK = []
    try:
        with pytest.raises(ModelNotFoundError, match=r"nor in the Hugging Face cache.*offline.*'minilm'"):
            tk.load_model("someone/not-a-cached-model")
    finally:
        network, _NETWORK = _NETWORK, None
    assert network == []


def test_hub_id_without_the_offline_flag_still_fails_clearly():
    """Without HF_HUB_OFFLINE the hub is probed once (no network here: refused at once;
    with network: the download of a non-existent id fails) - a clear error either way. The
    child counts the names it looks up: an unreachable hub is looked up once, not retried."""
    import os
    import subprocess
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    code = ("import sys\nlookups = []\n"
            "sys.addaudithook(lambda ev, args: ev == 'socket.getaddrinfo' and lookups.append(args[0]))\n"
            "import tunekit as tk\n"
            "try:\n    tk.load_model('someone/not-a-cached-model-xyz')\n"
            "except tk.ModelNotFoundError as e:\n    print('CLEAR', e)\n"
            "print('LOOKUPS', len(lookups))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "CLEAR model 'someone/not-a-cached-model-xyz'" in out.stdout, out.stderr[-2000:]
    assert "'minilm'" in out.stdout
    lookups = int(out.stdout.rsplit("LOOKUPS", 1)[1])
    if "cannot be reached (offline)" in out.stdout:
        assert lookups == 1, out.stdout  # the one probe, no retries
    else:  # the hub answered: the download itself said no
        assert "could not download" in out.stdout and lookups >= 1, out.stdout


def test_num_labels_checks():
    with pytest.raises(ConfigError, match=r"num_labels must be an integer in 2 \.\. 100000"):
        tk.load_model(num_labels=1)
    with pytest.raises(ConfigError, match="does not match"):
        tk.load_model(num_labels=3, label_names=["a", "b"])


@pytest.mark.slow
def test_builtin_minilm_loads_offline_with_only_the_head_new():
    m = tk.load_model(label_names=["rotten", "fresh"])
    assert m.new_parameters == ["classifier.bias", "classifier.weight"]
    assert m.pooling == "mean"  # sentence-transformers checkpoint: mean pooling
    assert m.num_blocks == 6 and m.hidden_size == 384
    assert m.parameter_counts()["total"] == 22_713_986
    p = m.predict_proba(["a wonderful film", "a dreadful mess"])
    assert p.shape == (2, 2) and torch.allclose(p.sum(-1), torch.ones(2))



def test_a_model_directory_never_runs_its_own_code(tmp_path, small):
    """An auto_map in config.json: transformers' own class loads where it has one (the code is never
    imported), and an unknown architecture is refused in words rather than asked about on stdin."""
    import json
    d = tk.make_tiny_bert(tmp_path / "remote")
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "evil.py").write_text("raise SystemExit('a model directory ran its own code')\n")
    model = tk.load_model(str(d), label_names=small.label_names)
    assert type(model.hf).__name__ == "BertForSequenceClassification"
    cfg["model_type"] = "evil-arch"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(tk.ConfigError, match="never runs code from a model directory"):
        tk.load_model(str(d), label_names=small.label_names)


def test_the_names_moved_by_the_layers_are_still_found_where_they_were():
    """tunekit 0.1's places for names that moved to lower layers (issue 19) still give them."""
    from tunekit import models, restore, runs, strategies, tiny
    from tunekit.config import RunRecordError
    assert models.make_tiny is tiny.make_tiny is tk.make_tiny and models.TINY_FAMILIES is tiny.TINY_FAMILIES
    assert runs.RunRecordError is RunRecordError is tk.RunRecordError
    assert strategies.Plan is models.Plan
    assert callable(restore.canonical_name)


def test_loads_from_several_threads_leave_later_loads_whole(tmp_path):
    """The lab loads models in threads (its views, Post-training) while the kernel may load too.
    transformers swaps PreTrainedModel.tie_weights for a no-op while it loads; two loads at once
    left the no-op behind (seen: every causal-LM load after it refused its decoder as "each token
    sees the tokens after it"). tunekit loads one at a time (models.LOAD_LOCK)."""
    import threading
    bert, llama = tk.make_tiny("bert", tmp_path / "bert"), tk.make_tiny("llama", tmp_path / "llama")
    errors = []

    def load(i):
        try:
            tk.load_model(str(llama), task="causal_lm", seed=i) if i % 2 else tk.load_model(str(bert), seed=i)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(f"{type(e).__name__}: {e}")
    for _ in range(2):
        threads = [threading.Thread(target=load, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert tk.load_model(str(llama), task="causal_lm").task.name == "causal_lm"  # a decoder still loads
    heads = [tk.load_model(str(bert), seed=3).head().weight for _ in range(2)]
    assert torch.equal(*heads)  # and a seed still fixes a new head's start


def test_load_model_refuses_odd_tasks_and_label_lists(tiny_dir):
    """Found by the fuzz (issue 22): task=[] raised 'unhashable type', num_labels=10**30 filled the
    memory with label names, and num_labels beside a label_names that is no list raised TypeError."""
    with pytest.raises(ConfigError, match=r"task must be one of \['causal_lm', 'classification', 'seq2seq', 'sft'\] \(got \[\]\)"):
        tk.load_model(tiny_dir, task=[])
    with pytest.raises(ConfigError, match=r"num_labels must be an integer in 2 \.\. 100000 \(got 10{30}\)"):
        tk.load_model(tiny_dir, num_labels=10**30)
    with pytest.raises(ConfigError, match="label_names must be a list of class names"):
        tk.load_model(tiny_dir, num_labels=2, label_names=5)


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "gpt2", "llama"])
def test_max_length_past_the_models_positions_is_clamped_with_a_warning(family, tmp_path):
    """Found by the fuzz (issue 22): max_length=10**6 on texts longer than the model's 512
    positions failed the run inside its first step with torch's 'expanded size of the tensor
    (605) must match the existing size (512)' (GPT-2: IndexError). Now the run takes the model's
    limit, says so, and records it; a model with rotary positions has none."""
    from tunekit.tiny import make_tiny
    path = make_tiny(family, tmp_path / family, layers=1, hidden=32)
    causal = family in ("gpt2", "llama")
    data = tk.data.from_texts(["word " * 700 + str(i) for i in range(8)], validation_size=2, test_size=2)
    model = tk.load_model(str(path), task="causal_lm") if causal else tk.load_model(str(path), label_names=["text", "x"])
    limit = {"bert": 512, "roberta": 511, "distilbert": 512, "gpt2": 512, "llama": None}[family]
    assert model.backbone.max_tokens == limit
    if not causal:  # a classifier needs two classes: give half the texts the other one
        df = pd.DataFrame({"text": data.train["text"].tolist() + data.test["text"].tolist(), "label": ["text", "x"] * 3})
        data = tk.data.from_dataframe(df, validation_size=2, test_size=0, label_names=["text", "x"])
    long = 600 if limit is None else limit + 1
    args = dict(runs_dir=str(tmp_path / "runs"), max_length=long, batch_size=4, progress=False, evals_per_epoch=1)
    if limit is None:
        run = tk.train(model, data, "full", **args)
        assert run.config["train"]["max_length"] == long
        return
    with pytest.warns(UserWarning, match=f"max_length={long} is more than the {limit} tokens this model takes"):
        run = tk.train(model, data, "full", **args)
    assert run.status == "completed" and run.config["train"]["max_length"] == limit
    with pytest.warns(UserWarning, match=f"using max_length={limit}"):
        assert tk.evaluate(model, data, max_length=10**6)["examples"] == len(data.validation)


@pytest.mark.parametrize("name", ["a" * 5000, "~nobody-here/model"])
def test_model_paths_the_system_cannot_look_up(name):
    """Found by the fuzz (issue 22): load_model('a' * 5000) raised OSError 'File name too long';
    '~nobody/model' RuntimeError 'Could not determine home directory'."""
    with pytest.raises(ModelNotFoundError, match="cannot be looked up"):
        tk.load_model(name)
