"""The one adapter path: peft's structure names the parameters, peft's merge measures the change."""
import torch

import tunekit as tk
from tunekit import adapters


def test_layout_reads_peft_structure_not_names(tiny):
    tiny.adapt(tk.LoRA(rank=2))
    layout = tiny.backbone.layout
    q = "bert.encoder.layer.0.attention.self.query"
    assert layout.roles[f"{q}.base_layer.weight"] == (f"{q}.weight", "base")
    assert layout.roles[f"{q}.lora_A.default.weight"] == (f"{q}.weight", "adapter")
    assert layout.roles["classifier.modules_to_save.default.weight"] == ("classifier.weight", "trained_copy")
    assert layout.roles["classifier.original_module.weight"] == ("classifier.weight", "original")
    trainable = {layout.role(n) for n, p in tiny.hf.named_parameters() if p.requires_grad}
    assert trainable == {"adapter", "trained_copy"}
    # every canonical name of the plain model is there exactly once among base + trained copies
    plain = {n for n, _ in tk.load_model(tiny.path, label_names=tiny.label_names).hf.named_parameters()}
    assert {layout.canonical(n) for n in layout.names("base", "trained_copy")} == plain


def test_ia3_changes_exactly_where_it_acts_by_w_times_l_minus_1(tiny, small, fast):
    run = tk.train(tiny, small, tk.IA3(), lr=0.05, **fast)
    wc = tk.inspect.weight_change(run)
    moved = wc[(wc.delta_norm > 0) & wc.block.notna()]
    # peft's BERT default: key, value, output.dense (which also names attention.output.dense)
    assert set(moved.module) == {"key", "value", "attn_out", "output"}
    assert set(wc[(wc.delta_norm > 0) & wc.block.isna()].group) == {"head"}
    assert (wc[wc.block.notna() & ~wc.module.isin(["key", "value", "attn_out", "output"])].delta_norm == 0).all()
    # by hand: IA3 rescales a layer's outputs (rows of W, and the bias) or, feed-forward, its inputs (columns)
    deltas = tk.inspect.weight_deltas(run)
    layers = dict(tiny.hf.named_modules())
    for path, ff in (("bert.encoder.layer.1.attention.self.value", False), ("bert.encoder.layer.1.output.dense", True)):
        w0, delta = deltas[f"{path}.weight"]
        lvec = layers[path].ia3_l["default"].detach().double()
        expected = w0.double() * (lvec - 1) if ff else w0.double() * (lvec.reshape(-1, 1) - 1)
        torch.testing.assert_close(delta.double(), expected, rtol=1e-5, atol=1e-9)
        assert lvec.ne(1).any()


def test_measuring_the_change_leaves_the_model_as_it_was(tiny, small, fast):
    run = tk.train(tiny, small, tk.LoRA(rank=2), **fast)
    before = {n: p.detach().clone() for n, p in tiny.hf.named_parameters()}
    deltas = adapters.effective_deltas(tiny.hf)
    assert deltas and all(d.dtype == torch.float64 for d in deltas.values())
    assert all(torch.equal(before[n], p) for n, p in tiny.hf.named_parameters())
    from peft.tuners.tuners_utils import BaseTunerLayer
    assert all(not m.merged for m in tiny.hf.modules() if isinstance(m, BaseTunerLayer))
    # LoRA's effective delta is peft's scale * B @ A
    q = dict(tiny.hf.named_modules())["bert.encoder.layer.0.attention.self.query"]
    torch.testing.assert_close(deltas["bert.encoder.layer.0.attention.self.query.weight"],
                               q.get_delta_weight("default").double(), rtol=1e-5, atol=1e-10)
    assert run.format == "peft"


def test_count_builds_nothing_and_matches_peft(tiny):
    before = sum(p.numel() for p in tiny.hf.parameters())
    for s in (tk.LoRA(rank=3, target_modules=["query", "key", "value"]), tk.IA3(target_modules=["query"])):
        c = s.count(tiny)
        assert sum(p.numel() for p in tiny.hf.parameters()) == before and tiny.peft is None
        m = tk.load_model(tiny.path, label_names=tiny.label_names)
        m.adapt(s)
        assert m.peft.get_nb_trainable_parameters() == (c["trainable"], c["total"])


def test_counting_does_not_move_the_seeded_random_stream(tiny):
    """A run's adapter is initialised from the seeded generator after the strategy was counted:
    counting (which builds a skeleton) must leave that stream where it was."""
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    tk.LoRA(rank=2).count(tiny)
    tk.IA3().count(tiny)
    torch.testing.assert_close(torch.rand(4), expected)


def test_peft_save_alarm_is_quiet_only_for_the_zero_sized_matrices_adalora_cuts():
    """peft's save warns of unsharded DeepSpeed / FSDP tensors at any zero-sized or 1-D LoRA tensor;
    AdaLoRA's matrices cut to rank 0 are zero-sized, so that exact text is quiet, listed in full or
    with peft's "(+N more)"; a 1-D tensor still warns."""
    import warnings

    from tunekit.adapters import checkpointing_notice_quiet
    tail = (". A 1-D or zero-sized lora_A / lora_B tensor indicates that DeepSpeed ZeRO-3 / FSDP shards were not "
            "gathered before save_pretrained() and are therefore incomplete.")
    quiet = ["Adapter 'default': 2 LoRA tensor(s) have invalid shape: a.lora_A:(0, 384), a.lora_B:(384, 0)" + tail,
             "Adapter 'default': 6 LoRA tensor(s) have invalid shape: a.lora_A:(0, 384), a.lora_B:(384, 0), "
             "b.lora_A:(0, 384) (+3 more)" + tail]
    loud = "Adapter 'default': 1 LoRA tensor(s) have invalid shape: a.lora_A:(384,)" + tail
    for text, shown in [(t, 0) for t in quiet] + [(loud, 1)]:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with checkpointing_notice_quiet():
                warnings.warn(text, UserWarning, stacklevel=1)
        assert len(seen) == shown, text
