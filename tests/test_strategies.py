import pytest
import torch

import tunekit as tk
from tunekit.config import ConfigError


def _trainable(model):
    return {n for n, p in model.hf.named_parameters() if p.requires_grad}


def test_counts_before_and_after_adapting_agree(tiny_dir, small):
    for s in [tk.Probe(), tk.Freeze(train_blocks=[1]), tk.Freeze(frozen=["embeddings", "block.0"]),
              tk.LoRA(rank=4), tk.IA3(), tk.Full()]:
        m = tk.load_model(tiny_dir, label_names=small.label_names)
        before = s.count(m)
        m.adapt(s)
        after = m.parameter_counts()
        assert (before["trainable"], before["total"]) == (after["trainable"], after["total"]), s.label
        assert before["percent"] == pytest.approx(100 * after["trainable"] / after["total"])


def test_lora_count_equals_peft(tiny):
    s = tk.LoRA(rank=4)
    expected = s.count(tiny)
    tiny.adapt(s)
    assert tiny.peft.get_nb_trainable_parameters() == (expected["trainable"], expected["total"])
    # rank 4 on query and value of 2 blocks x (128 in + 128 out), plus the head (128*2 + 2)
    assert expected["trainable"] == 2 * 2 * 4 * (128 + 128) + 258


def test_probe_trains_only_the_head(tiny):
    tiny.adapt(tk.Probe())
    assert _trainable(tiny) == {"classifier.weight", "classifier.bias"}


def test_freeze_middle_blocks_and_top_k(tiny_dir, small):
    m = tk.load_model(tiny_dir, label_names=small.label_names, pooling="model")
    m.adapt(tk.Freeze(frozen=["block.0"]))
    groups = {m.group_of(n) for n in _trainable(m)}
    assert groups == {"embeddings", "block.1", "pooler", "head"}
    m.adapt(tk.Freeze.top(1))
    assert {m.group_of(n) for n in _trainable(m)} == {"block.1", "pooler", "head"}
    m.adapt(tk.Freeze(train_blocks=[-2]))
    assert {m.group_of(n) for n in _trainable(m)} == {"block.0", "pooler", "head"}


def test_mean_pooling_never_trains_the_unused_pooler(tiny_dir, small):
    m = tk.load_model(tiny_dir, label_names=small.label_names, pooling="mean")
    m.adapt(tk.Full())
    assert not any(m.group_of(n) == "pooler" for n in _trainable(m))


@pytest.mark.parametrize("strategy,words", [
    (tk.Freeze(train=["block.9"]), r"Freeze.train: unknown layer group\(s\) \['block.9'\]; the model's groups are"),
    (tk.Freeze(frozen=["encoder"]), r"Freeze.frozen: unknown layer group\(s\) \['encoder'\]"),
    (tk.Freeze(train_blocks=[2]), "block index.*out of range; the model has blocks 0..1"),
    (tk.Freeze(frozen=["embeddings", "block.0", "block.1", "pooler", "head"]), "nothing left to train"),
    (tk.LoRA(rank=129), "LoRA.rank must be at most 128"),
    (tk.LoRA(target_modules=["q_proj"]), r"LoRA.target_modules: \['q_proj'\] match no layer that peft can adapt.*attention.self.query \(query\)"),
])
def test_strategy_errors_that_need_the_model(tiny, strategy, words):
    with pytest.raises(ConfigError, match=words):
        strategy.count(tiny)


def test_second_adapter_on_the_same_model_is_refused(tiny):
    tiny.adapt(tk.LoRA(rank=2))
    with pytest.raises(ConfigError, match="already carries an adapter"):
        tiny.adapt(tk.IA3())


def test_lora_starts_exactly_at_the_pretrained_function(tiny):
    enc = tiny.tokenize(["a fine film", "not good"])
    tiny.module.eval()
    with torch.no_grad():
        before = tiny.logits(enc["input_ids"], enc["attention_mask"])
        tiny.adapt(tk.LoRA(rank=4))
        tiny.module.eval()
        after = tiny.logits(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(before, after)


def test_lpft_is_two_phases():
    p = tk.LPFT(probe_epochs=2).phases()
    assert [type(x.strategy).__name__ for x in p] == ["Probe", "Full"]
    assert p[0].epochs == 2 and p[1].epochs is None and p[0].lr == tk.Probe.default_lr


def _snapshot(model):
    return ([(n, p.requires_grad, p.data_ptr()) for n, p in model.hf.named_parameters()],
            [type(m).__name__ for m in model.hf.modules()], model.pooling, model.peft)


@pytest.mark.parametrize("strategy", [tk.Probe(pooling="mean"), tk.Freeze.top(1), tk.LoRA(rank=2), tk.IA3(),
                                      tk.Full(), tk.LPFT()], ids=lambda s: s.label)
def test_strategies_declare_and_never_change_the_model(tiny, strategy):
    before = _snapshot(tiny)
    plan = strategy.plan(tiny)
    strategy.count(tiny)
    for phase in strategy.phases():
        phase.strategy.plan(tiny)
    assert _snapshot(tiny) == before
    assert isinstance(plan, tk.strategies.Plan)
    assert (plan.adapter is not None) == (strategy.name in ("lora", "ia3"))


def test_ia3_count_equals_peft_and_trains_only_its_vectors_and_the_head(tiny):
    s = tk.IA3()
    expected = s.count(tiny)
    tiny.adapt(s)
    assert tiny.peft.get_nb_trainable_parameters() == (expected["trainable"], expected["total"])
    # peft's BERT default: key, value (128 outputs each) and output.dense (feed-forward: 512 inputs, and
    # the attention's output.dense, 128 inputs) in 2 blocks, plus the head (128*2 + 2)
    assert expected["trainable"] == 2 * (128 + 128 + 512 + 128) + 258
    roles = {tiny.backbone.layout.role(n) for n in _trainable(tiny)}
    assert roles == {"adapter", "trained_copy"}


def test_ia3_feedforward_modules_must_be_targets(tiny):
    with pytest.raises(ConfigError, match="IA3.feedforward_modules must be among target_modules"):
        tk.IA3(target_modules=["query"], feedforward_modules=["intermediate.dense"]).count(tiny)
    with pytest.raises(ConfigError, match=r"IA3.target_modules: \['nope'\] match no layer"):
        tk.IA3(target_modules=["nope"]).count(tiny)


def test_prepare_of_tunekit_0_1_still_works_with_a_deprecation_warning(tiny):
    with pytest.warns(DeprecationWarning, match=r"use model.adapt\(strategy\)"):
        tk.Freeze.top(1).prepare(tiny)
    assert {tiny.group_of(n) for n in _trainable(tiny)} == {"block.1", "pooler", "head"}


@pytest.mark.parametrize("kw", [dict(train=0.0), dict(frozen=None, train_blocks=1.5), dict(train={"head": 1})])
def test_freeze_arguments_that_are_not_lists(kw):
    """Found by the fuzz (issue 22): Freeze(train=0.0) raised "'float' object is not iterable"."""
    with pytest.raises(ConfigError, match=r"Freeze\.(train|train_blocks) must be"):
        tk.Freeze(**kw)
