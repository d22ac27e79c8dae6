"""The PEFT family on the one adapter path (issue 23): DoRA, AdaLoRA, VeRA, LoHa, LoKr, LoRA's PiSSA /
OLoRA / gaussian starts and rsLoRA, LayerNorm tuning. Each trains, counts as peft counts,
reloads to the numbers it recorded, changes weights only where it acts, and is refused in
words where peft cannot apply it."""
import pytest
import torch

import tunekit as tk
from tunekit.tiny import make_tiny

FAMILY = [tk.DoRA(rank=2), tk.AdaLoRA(target_rank=2, init_rank=4), tk.VeRA(rank=16), tk.LoHa(rank=2), tk.LoKr(rank=2),
          tk.LoRA(rank=2, init="pissa"), tk.LoRA(rank=2, init="olora"), tk.LoRA(rank=2, init="gaussian", rslora=True),
          tk.LNTuning()]


@pytest.fixture(scope="module")
def family_runs(tmp_path_factory, tiny_dir, small):
    root = tmp_path_factory.mktemp("family")
    runs = {}
    for s in FAMILY:
        model = tk.load_model(tiny_dir, label_names=small.label_names)
        runs[s.label] = tk.train(model, small, s, lr=5e-3, train_size=64, batch_size=16, evals_per_epoch=1,
                                 runs_dir=str(root / "runs"), progress=False)
    return runs


@pytest.mark.parametrize("strategy", FAMILY, ids=lambda s: s.label)
def test_each_method_trains_counts_as_peft_reloads_and_moves_only_its_targets(family_runs, strategy, small):
    run = family_runs[strategy.label]
    assert run.status == "completed" and run.config["strategy"]["name"] == strategy.name
    trainable = run.config["params"]["trainable"]
    assert trainable == run.model.peft.get_nb_trainable_parameters()[0] > 0  # counted before = what trained
    again = tk.load_run(run.path)
    assert tk.strategies.get_strategy(again.strategy) == strategy  # the record rebuilds it, every field
    got = tk.evaluate(again, small)
    assert got["accuracy"] == run.summary["val_accuracy"]
    assert got["loss"] == pytest.approx(run.summary["val_loss"], rel=1e-4)

    wc = tk.inspect.weight_change(run)
    moved = set(wc[(wc.delta_norm > 0) & wc.block.notna()].module)
    assert set(wc[(wc.delta_norm > 0) & wc.block.isna()].group) >= {"head"}
    if isinstance(strategy, tk.LNTuning):  # the norms only: no weight matrix of a block moved
        assert moved == {"attn_norm", "out_norm"}
    else:  # peft's BERT default: query and value
        assert moved == {"query", "value"}


def test_dora_change_is_its_magnitude_times_the_new_direction_minus_w0(family_runs):
    """DoRA's effective change, computed here from its definition: W' = m * V / ||V|| column-wise with
    V = W0 + scale * B A (norms over each output row of nn.Linear's [out, in] weight)."""
    run = family_runs["dora-r2"]
    deltas = tk.inspect.weight_deltas(run)
    layers = dict(run.model.hf.named_modules())
    path = "bert.encoder.layer.1.attention.self.value"
    layer = layers[path]
    w0 = layer.base_layer.weight.detach().double()
    a = layer.lora_A["default"].weight.detach().double()
    b = layer.lora_B["default"].weight.detach().double()
    m = layer.lora_magnitude_vector["default"].weight.detach().double()
    v = w0 + layer.scaling["default"] * b @ a
    expected = m.reshape(-1, 1) * v / v.norm(dim=1, keepdim=True) - w0
    got_w0, delta = deltas[f"{path}.weight"]
    torch.testing.assert_close(got_w0.double(), w0)
    torch.testing.assert_close(delta.double(), expected, rtol=1e-5, atol=1e-8)
    assert not torch.allclose(m, w0.norm(dim=1))  # the magnitude trained


def test_vera_shares_one_frozen_projection_and_trains_two_vectors_per_layer(family_runs):
    run = family_runs["vera-r16"]
    trainable = {n: p for n, p in run.model.hf.named_parameters() if p.requires_grad and "vera" in n}
    assert trainable and {n.rsplit(".", 2)[-2] for n in trainable} == {"vera_lambda_b", "vera_lambda_d"}
    layers = [m for n, m in run.model.hf.named_modules() if n.endswith("attention.self.query")]
    assert layers[0].vera_A["default"] is layers[1].vera_A["default"]  # one shared matrix, not a copy


def test_pissa_change_is_measured_against_the_original_checkpoint(family_runs, tiny_dir):
    """PiSSA moves the top singular directions of W0 into B0 A0 and trains them; against the
    original weights the change is scale * (B A - B0 A0), computed here without peft."""
    run = family_runs["lora-r2-pissa"]
    original = dict(tk.load_model(tiny_dir, label_names=run.model.label_names).hf.named_parameters())
    path = "bert.encoder.layer.0.attention.self.query"
    w_orig = original[f"{path}.weight"].detach().double()
    u, s, vh = torch.linalg.svd(w_orig, full_matrices=False)
    layer = dict(run.model.hf.named_modules())[path]
    scale = layer.scaling["default"]
    b0a0 = (u[:, :2] * s[:2]) @ vh[:2] / scale  # PiSSA: B0 = U sqrt(S) / sqrt(scale), A0 = sqrt(S) Vh / sqrt(scale)
    b = layer.lora_B["default"].weight.detach().double()
    a = layer.lora_A["default"].weight.detach().double()
    w0, delta = tk.inspect.weight_deltas(run)[f"{path}.weight"]
    torch.testing.assert_close(w0.double(), w_orig, rtol=1e-5, atol=1e-6)  # the start is the checkpoint
    torch.testing.assert_close(delta.double(), scale * (b @ a - b0a0), rtol=1e-3, atol=1e-5)
    assert tk.LoRA(init="pissa").changes_base and not tk.LoRA().changes_base
    from tunekit.inspect.views import rebased_words
    said = rebased_words([run, family_runs["dora-r2"]], {run.name: "#1 PiSSA"})
    assert said.startswith("#1 PiSSA starts its adapter on part of each weight") and "original checkpoint" in said
    assert rebased_words([family_runs["dora-r2"]], {}) == ""  # no other run is said to be


@pytest.mark.parametrize("strategy", [tk.DoRA(rank=2), tk.VeRA(rank=16), tk.LoHa(rank=2), tk.LoKr(rank=2),
                                      tk.LNTuning(), tk.LoRA(rank=2, init="pissa"),
                                      tk.AdaLoRA(target_rank=2, init_rank=4)], ids=lambda s: s.label)
def test_the_adapter_cards_snippet_gives_tunekits_logits_without_tunekit(family_runs, tiny_dir, strategy):
    """The record's adapter/ folder is plain peft: its card's code, run where tunekit cannot be
    imported, reloads it (PiSSA repeats its start on the original weights) to tunekit's logits."""
    from test_cards import _snippet_logits, _tunekit_logits
    run = family_runs[strategy.label]
    model = tk.load_run(run.path).load_model()
    torch.testing.assert_close(_snippet_logits(run.path / "adapter", tiny_dir), _tunekit_logits(model),
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_the_family_on_decoders_or_refused_in_words(family, tmp_path, small):
    path = make_tiny(family, tmp_path / "model")
    counted = {}
    for s in (tk.DoRA(rank=2), tk.VeRA(rank=16), tk.LoHa(rank=2), tk.LoKr(rank=2), tk.LoRA(rank=2, init="pissa"),
              tk.LoRA(rank=2, init="olora"), tk.LNTuning(), tk.AdaLoRA(target_rank=2, init_rank=4)):
        model = tk.load_model(str(path), label_names=small.label_names)
        if family == "gpt2" and (isinstance(s, (tk.LoHa, tk.LoKr)) or s.label.endswith("olora")):
            with pytest.raises(tk.ConfigError, match=r"(Conv1D|olora).*gpt2|gpt2.*(Conv1D|olora)") as err:
                s.count(model)
            assert type(s).__name__ in str(err.value)
            continue
        counted[s.label] = s.count(model)["trainable"]
        model.adapt(s)
        assert model.peft.get_nb_trainable_parameters()[0] == counted[s.label]
    assert len(counted) == (5 if family == "gpt2" else 8)


def test_bad_parameters_are_refused_naming_them(tiny):
    with pytest.raises(tk.ConfigError, match=r"LoRA\.init.*pissa"):
        tk.LoRA(init="svd")
    with pytest.raises(tk.ConfigError, match=r"LoRA\.rslora"):
        tk.LoRA(rslora="yes")
    with pytest.raises(tk.ConfigError, match=r"DoRA\.rank"):
        tk.DoRA(rank=0)
    with pytest.raises(tk.ConfigError, match=r"VeRA\.d_initial"):
        tk.VeRA(d_initial=0)
    with pytest.raises(tk.ConfigError, match=r"LoKr\.rank"):
        tk.LoKr(rank=1.5)
    with pytest.raises(tk.ConfigError, match=r"DoRA has no parameter 'tokens'; its parameters are \['rank', "):
        tk.DoRA(tokens=4)  # a parameter DoRA does not have
    with pytest.raises(tk.ConfigError, match=r"LoRA has no parameter 'tokens'"):
        tk.get_strategy({"name": "lora", "rank": 4, "tokens": 4})  # a record's or the CLI's dict: the same words
    with pytest.raises(tk.ConfigError, match=r"strategy 'lora': parameter names are words \(got \[5\]\)"):
        tk.get_strategy({"name": "lora", 5: 4})
    assert tk.DoRA(rank=4, targets=["query"]) == tk.DoRA(rank=4, target_modules=["query"])  # the word
    with pytest.raises(tk.ConfigError, match=r"LoHa: give targets or target_modules .*not both"):
        tk.LoHa(targets=["query"], target_modules=["value"])
    with pytest.raises(tk.ConfigError, match=r"PromptTuning has no parameter 'targets'"):
        tk.PromptTuning(targets=["query"])  # no modules to target
    with pytest.raises(tk.ConfigError, match=r"PromptTuning takes at most .* got 9"):
        tk.PromptTuning(*range(9))
    with pytest.raises(tk.ConfigError, match=r"LoRA: 'rank' given both"):
        tk.LoRA(4, rank=8)
    with pytest.raises(tk.ConfigError, match=r"VeRA\.rank.*at most 128"):
        tk.VeRA(rank=512).count(tiny)
    with pytest.raises(tk.ConfigError, match=r"LoHa\.rank.*at most 128"):
        tk.LoHa(rank=129).count(tiny)
    with pytest.raises(tk.ConfigError, match=r"LNTuning\.target_modules.*\['nope'\].*LayerNorm"):
        tk.LNTuning(target_modules=["nope"]).count(tiny)
    with pytest.raises(tk.ConfigError, match=r"DoRA\.target_modules"):
        tk.DoRA(target_modules=["nope"]).count(tiny)
    with pytest.raises(tk.ConfigError, match=r"AdaLoRA\.target_rank.*below init_rank=4"):
        tk.AdaLoRA(target_rank=4, init_rank=4)
    with pytest.raises(tk.ConfigError, match=r"AdaLoRA\.init_rank.*at most 128"):
        tk.AdaLoRA(target_rank=8, init_rank=200).count(tiny)
    with pytest.raises(tk.ConfigError, match=r"AdaLoRA\.warmup \+ AdaLoRA\.final.*below 1"):
        tk.AdaLoRA(warmup=0.5, final=0.5)
    with pytest.raises(tk.ConfigError, match=r"AdaLoRA\.orth_reg"):
        tk.AdaLoRA(orth_reg=-1)


def test_the_cli_and_the_labels_name_each_method():
    from tunekit.arguments import parse_strategies, strategy_text
    from tunekit.run_names import strategy_words
    parsed = parse_strategies("dora:4,vera:64,loha:3,lokr:2,ln_tuning,adalora:8")
    assert parsed == [tk.DoRA(rank=4), tk.VeRA(rank=64), tk.LoHa(rank=3), tk.LoKr(rank=2), tk.LNTuning(),
                      tk.AdaLoRA(target_rank=8)]
    assert [strategy_text(s.describe()) for s in parsed] == ["dora:4", "vera:64", "loha:3", "lokr:2", "ln_tuning",
                                                             "adalora:8"]
    # LoRA's and DoRA's start and scaling are words after the rank, read back the same way
    worded = parse_strategies("lora:8:pissa,dora:4:rslora,lora:16:olora:rslora,lora:2:GAUSSIAN")
    assert worded == [tk.LoRA(rank=8, init="pissa"), tk.DoRA(rank=4, rslora=True),
                      tk.LoRA(rank=16, init="olora", rslora=True), tk.LoRA(rank=2, init="gaussian")]
    assert [strategy_text(s.describe()) for s in worded] == ["lora:8:pissa", "dora:4:rslora",
                                                             "lora:16:olora:rslora", "lora:2:gaussian"]
    assert strategy_text(tk.LoRA(rank=8, alpha=4, init="pissa").describe()) is None  # no item says alpha 4
    from tunekit.arguments import InputError
    for bad, said in [("lora:8:pissa:olora", "one start at most"), ("vera:8:pissa", "vera takes one ':' argument"),
                      ("lora:8:svd", "after the rank come gaussian, pissa, olora, rslora"),
                      ("lora:pissa", "after ':' comes a LoRA rank")]:
        with pytest.raises(InputError, match=said):
            parse_strategies(bad)

    def words(s):
        return strategy_words({"strategy": s.describe(), "strategy_label": s.label})
    assert words(tk.DoRA(rank=4, alpha=8)) == "DoRA r4 α8"
    assert words(tk.LoRA(rank=8, init="pissa", rslora=True)) == "LoRA r8 α16 PiSSA rs"
    assert words(tk.LNTuning()) == "LayerNorm tuning"
    assert words(tk.AdaLoRA(target_rank=8)) == "AdaLoRA r8 of 12"


@pytest.mark.parametrize("strategy", [tk.DoRA(rank=2), tk.VeRA(rank=16), tk.LoKr(rank=2), tk.LNTuning(),
                                      tk.LoRA(rank=2, init="olora"), tk.AdaLoRA(target_rank=2, init_rank=4)],
                         ids=lambda s: s.label)
def test_export_merges_the_method_into_a_plain_transformers_model(family_runs, tmp_path, strategy):
    from transformers import AutoModelForSequenceClassification

    from test_cards import TEXTS, _tunekit_logits
    run = family_runs[strategy.label]
    folder = run.export(tmp_path / "merged")
    plain = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    model = tk.load_run(run.path).load_model()
    enc = model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(plain(**enc).logits, _tunekit_logits(model), atol=1e-5, rtol=1e-4)


def test_a_start_that_rewrites_the_base_is_refused_on_quantized_weights(family_runs, tmp_path, small):
    q = tk.quantize(family_runs["dora-r2"], "int8-weight", data=small, runs_dir=str(tmp_path / "runs"))
    model = q.load_model()
    for init in ("pissa", "olora"):
        with pytest.raises(tk.ConfigError, match=rf"LoRA\.init='{init}'.*quantized"):
            tk.LoRA(rank=2, init=init).count(model)
    assert tk.LoRA(rank=2, init="gaussian").count(model)["trainable"] > 0


def test_magnitude_and_direction_follow_their_definition_on_a_small_matrix():
    """DoRA's section 2 by hand: per output feature (a row of nn.Linear's [out, in] weight, a column of
    Conv1D's [in, out]) the norm and the cosine to the start."""
    from tunekit.inspect.decomposition import decompose
    w0 = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    w = torch.tensor([[6.0, 8.0], [0.0, 1.0], [0.0, 1.0]])  # row 0: same direction, twice the length
    # |m - m0|: 5, 0, 1 -> 2; 1 - cos: 0, 1, 0 -> 1/3
    dm, dd = decompose(w, w0)
    assert dm == pytest.approx(2.0) and dd == pytest.approx(1 / 3)
    assert decompose(w.T, w0.T, columns=True) == pytest.approx((dm, dd))
    assert decompose(w0, w0) == (0.0, pytest.approx(0.0, abs=1e-12))


def test_magnitude_direction_reads_every_changed_block_matrix_and_draws_a_panel_per_run(family_runs, tiny_dir,
                                                                                      small, tmp_path):
    from tunekit.inspect.decomposition import decompose
    full = tk.train(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.Full(), train_size=64,
                    batch_size=16, evals_per_epoch=1, runs_dir=str(tmp_path / "runs"), progress=False)
    runs = [full, family_runs["dora-r2"], family_runs["ln-tuning"]]
    table = tk.inspect.magnitude_direction(runs)
    assert set(table.run) == {full.name, runs[1].name}  # LN tuning changed no block matrix: no rows
    assert len(table[table.run == full.name]) == 2 * 6  # 2 blocks x query key value attn_out intermediate output
    assert set(table[table.run == runs[1].name].module) == {"query", "value"}
    row = table[(table.run == runs[1].name) & (table.name == "bert.encoder.layer.1.attention.self.value.weight")]
    w0, delta = tk.inspect.weight_deltas(runs[1])["bert.encoder.layer.1.attention.self.value.weight"]
    assert (row.delta_m.item(), row.delta_d.item()) == pytest.approx(decompose(w0 + delta, w0))
    assert (table.delta_m > 0).all() and (table.delta_d > 0).all()
    fig = tk.plots.magnitude_direction(table)
    from tunekit.plots.captions import caption, kind_of
    assert len(fig.data) == 2 and kind_of(fig) == "magnitude_direction" and caption(kind_of(fig))
    assert all(("r = " in a.text) or ("too few" in a.text) for a in fig.layout.annotations[:2])
    with pytest.raises(tk.ConfigError, match="changed no weight matrix"):
        tk.plots.magnitude_direction(table.iloc[:0])


def test_the_labs_weights_view_says_where_a_norm_only_run_changed_and_draws_magnitude_direction(
        family_runs, small, tmp_path):
    """LayerNorm tuning changes no weight matrix: the Weights view says so in words, under the map;
    the runs that changed block matrices get the magnitude / direction panels, with their caption;
    with an AdaLoRA run among them, where each adapter put its rank."""
    import re
    import shutil
    pytest.importorskip("ipywidgets")
    from tunekit.widgets.views import RunsPanel
    folder = tmp_path / "runs"
    for label in ("ln-tuning", "dora-r2", "adalora-r2-of4"):
        shutil.copytree(family_runs[label].path, folder / family_runs[label].name)
    panel = RunsPanel(str(folder), small)
    panel.wait()
    panel.select.value = tuple(r.name for r in panel.runs())
    panel.show("Weights", wait=True)
    assert panel.state["Weights"] == "drawn", panel.status["Weights"].value
    kids = list(panel.panes["Weights"].children)
    words = re.sub("<[^>]+>", "", " ".join(getattr(w, "value", "") for w in kids))
    said = re.search(r"(#\d+ [^#]*?) changes no weight matrix: only the normalization layers", words)
    assert said and "LayerNorm tuning" in said.group(1) and "DoRA" not in said.group(1), words
    titles = [w.layout.title.text or "" for w in kids if type(w).__name__ == "FigureWidget"]
    assert any(t.startswith("Magnitude and direction") for t in titles), titles
    assert "how far its rows turned" in words  # the figure's caption line
    assert any(t.startswith("Where each adapter put its rank") for t in titles), titles
    assert "AdaLoRA moves rank to the matrices" in words


# ----- AdaLoRA: the engine's hooks, its schedule and where its rank went ---------------------------
def test_adalora_ranks_are_peft_rank_pattern_and_the_rank_of_each_update(family_runs):
    """The table's rank of each matrix is peft's own rank_pattern (kept triplets), read from the
    live run and from the record on disk alike; the budget ends at target_rank on average, and
    the merged update of each matrix has exactly that rank."""
    run = family_runs["adalora-r2-of4"]
    pattern = run.model.peft.peft_config["default"].rank_pattern
    expected = {key.split(".lora_E")[0] + ".weight": sum(bool(k) for k in kept) for key, kept in pattern.items()}
    assert len(expected) == 4  # 2 blocks x query, value
    for source in (run, tk.load_run(run.path)):
        table = tk.inspect.adapter_ranks(source)
        assert dict(zip(table.name, table["rank"])) == expected
        assert set(table.init_rank) == {4} and set(table.method) == {"ADALORA"}
    assert sum(expected.values()) == 2 * 4  # peft's final budget: target_rank x matrices
    deltas = tk.inspect.weight_deltas(run)
    for name, rank in expected.items():  # float32 rounding of the delta leaves singular values ~1e-7 of the top
        assert torch.linalg.matrix_rank(deltas[name][1].double(), rtol=1e-4).item() == rank
    assert tk.inspect.ranks_moved(table)
    config = (run.path / "adapter" / "adapter_config.json").read_text()
    assert '"total_step": 4' in config and '"tfinal": 1' in config  # 64 examples / 16 a batch, 1 epoch


def test_lora_ranks_are_uniform_and_the_figure_draws_a_panel_per_run(family_runs):
    from tunekit.plots.captions import caption, kind_of
    lora = family_runs["lora-r2-gaussian-rs"]
    table = tk.inspect.adapter_ranks([lora, family_runs["adalora-r2-of4"], family_runs["ln-tuning"]])
    assert set(table.run) == {lora.name, family_runs["adalora-r2-of4"].name}  # LN tuning has no rank
    assert set(table[table.run == lora.name]["rank"]) == {2}
    assert not tk.inspect.ranks_moved(table[table.run == lora.name])
    fig = tk.plots.adapter_ranks(table)
    assert len(fig.data) == 2 and kind_of(fig) == "adapter_ranks" and caption(kind_of(fig))
    assert fig.layout.coloraxis.cmax == 4 and "mean rank 2 of 4" in fig.layout.annotations[1].text
    assert sorted(v for row in fig.data[1].text for v in row if v) == sorted(
        str(r) for r in table[table.run == family_runs["adalora-r2-of4"].name]["rank"])
    with pytest.raises(tk.ConfigError, match="no LoRA-like adapter"):
        tk.plots.adapter_ranks(table.iloc[:0])


def test_the_orthogonality_penalty_follows_its_definition(family_runs):
    """mean over layers of ||A A^T - I||_F and ||B^T B - I||_F, times orth_reg: what AdaLoRA adds."""
    from tunekit.strategies.adalora import orthogonality
    model = family_runs["adalora-r2-of4"].model
    terms = []
    for name, module in model.hf.named_modules():
        if name.endswith(("attention.self.query", "attention.self.value")):
            a, b = module.lora_A["default"].detach(), module.lora_B["default"].detach()
            terms += [torch.linalg.norm(a @ a.T - torch.eye(4)), torch.linalg.norm(b.T @ b - torch.eye(4))]
    assert len(terms) == 8
    with torch.no_grad():
        assert orthogonality(model).item() == pytest.approx(0.5 * torch.stack(terms).mean().item(), rel=1e-6)


class _Counted(tk.LoRA):
    """LoRA whose plan carries a penalty and a step hook that record what the engine gives them."""

    calls: list = []

    def scheduled(self, model, plan, steps):
        import dataclasses

        def penalty(m):
            self.calls.append(("penalty", steps))
            return 1e3 * sum(p.sum() for n, p in m.hf.named_parameters() if "lora_B" in n)

        return dataclasses.replace(plan, penalty=penalty, after_step=lambda m, step: self.calls.append(("step", step)))


def test_the_engine_adds_the_plans_penalty_and_calls_after_each_step(tiny_dir, small, tmp_path):
    strategy = _Counted(rank=2)
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    run = tk.train(model, small, strategy, train_size=64, batch_size=16, epochs=2, evals_per_epoch=1,
                   runs_dir=str(tmp_path / "runs"), progress=False)
    assert [c for c in strategy.calls if c[0] == "step"] == [("step", i) for i in range(8)]
    assert [c for c in strategy.calls if c[0] == "penalty"] == [("penalty", 8)] * 8  # told the phase's length
    b = [p for n, p in run.model.hf.named_parameters() if "lora_B" in n]
    assert all((p < 0).all() for p in b)  # the penalty pushed every B entry down: it was in the gradient
    logged = list(run.history("step")["loss"])
    assert max(logged) < 10  # the curves are the task's loss, not the penalty (which is ~1e3 x sum B)


def test_adalora_too_short_a_phase_is_refused_before_a_record_is_written(tiny_dir, small, tmp_path):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    with pytest.raises(tk.ConfigError, match=r"AdaLoRA needs a phase long enough.*1 step"):
        tk.train(model, small, tk.AdaLoRA(target_rank=1, init_rank=2), train_size=16, batch_size=16,
                 runs_dir=str(tmp_path / "runs"), progress=False)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
