"""Supervised fine-tuning on (prompt, response) pairs: the data (from_pairs, the BBC headline
pairs), the loss on the response only, the chat template, truncation counted, generation scored
with rouge-score and sacrebleu, every strategy on tiny decoders, records that reload to their
numbers, the CLI, and the errors in words."""
import json
import math
import subprocess
import sys

import pandas as pd
import pytest
import torch

import tunekit as tk
from tunekit.config import ConfigError
from tunekit.data import DataError
from tunekit.tasks.generation import generation_settings, score_texts
from tunekit.tiny import make_tiny

# a simple chat template in the usual shape (role markers, the assistant's turn opened last)
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="session")
def headlines():
    """Real BBC News headline pairs (body -> headline), a small seeded share of them."""
    data = tk.data.bbc_headlines()
    return tk.data.from_pairs(pd.DataFrame({"source": data.train["text"][:60], "target": data.train["target"][:60]}),
                              name="headlines-60", validation_size=12, test_size=8)


@pytest.fixture(scope="session")
def tiny_llama_chat(tmp_path_factory):
    """The tiny Llama with a chat template on its tokenizer."""
    from transformers import AutoTokenizer
    folder = make_tiny("llama", tmp_path_factory.mktemp("tiny-llama-chat"))
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    return str(make_tiny("gpt2", tmp_path_factory.mktemp("tiny-gpt2-sft")))


def fast(tmp_path, **kw):
    return dict(dict(train_size=16, eval_size=6, epochs=1, batch_size=8, max_length=64, runs_dir=str(tmp_path),
                     progress=False), **kw)


# ----- data ------------------------------------------------------------------------------------------
def test_bbc_headlines_are_each_articles_first_line_and_its_body():
    data = tk.data.bbc_headlines()
    assert data.pairs and data.name == "bbc_headlines" and data.label_names == ["pair"]
    sizes = {s: len(data.split(s)) for s in ("train", "validation", "test")}
    assert sum(sizes.values()) == 2225 - data.info["duplicates_dropped"] > 2000
    row = data.train.iloc[0]
    assert 2 <= len(row["target"].split()) <= 15 and "\n" not in row["target"]
    assert len(row["text"].split()) > 50 and not row["text"].startswith(row["target"])
    # no body in two splits
    assert not set(data.train["text"]) & set(data.test["text"])


def test_from_pairs_takes_a_dataframe_a_list_dicts_and_a_csv(tmp_path):
    rows = [(f"source text number {i}", f"target {i}") for i in range(10)]
    a = tk.data.from_pairs(rows, validation_size=2, test_size=2)
    b = tk.data.from_pairs([{"source": s, "target": t} for s, t in rows], validation_size=2, test_size=2)
    df = pd.DataFrame(rows, columns=["article", "headline"])
    c = tk.data.from_pairs(df, source="article", target="headline", validation_size=2, test_size=2)
    df.to_csv(tmp_path / "p.csv", index=False)
    d = tk.data.from_pairs(tmp_path / "p.csv", source="article", target="headline", validation_size=2, test_size=2)
    for x in (a, b, c, d):
        assert x.pairs and (len(x.train), len(x.validation), len(x.test)) == (6, 2, 2)
        assert set(zip(x.train["text"], x.train["target"])) <= set(rows)
    assert d.name == "p"
    again = tk.data.from_pairs(rows + [("source  text number 3", "other")], validation_size=2, test_size=2)
    assert again.info["duplicates_dropped"] == 1


@pytest.mark.parametrize("pairs, words", [
    ([("a b", "x"), ("", "y"), ("c", "z")], "'source' side of pair 1 is empty"),
    ([("a b", "x"), ("c", "  "), ("d", "z")], "'target' side of pair 1 is empty"),
    ([("a b", "x"), ("c", 3), ("d", "z")], "holds int (3), not text"),
    ([("a b", "x"), ("c",)], "item 1 is not a (source, target) pair"),
    ([("a", "x"), ("a", "y")], "at least 3 pairs"),
    ([], "no pairs"),
])
def test_from_pairs_refuses_bad_pairs_naming_the_row(pairs, words):
    with pytest.raises(DataError, match=None) as e:
        tk.data.from_pairs(pairs)
    assert words in str(e.value)


def test_from_pairs_names_a_missing_column(tmp_path):
    with pytest.raises(DataError, match="no target column 'headline'.*columns are \\['source', 'x'\\]"):
        tk.data.from_pairs(pd.DataFrame({"source": ["a"], "x": ["b"]}), target="headline")
    with pytest.raises(DataError, match="does not exist"):
        tk.data.from_pairs(tmp_path / "none.csv")


# ----- the task --------------------------------------------------------------------------------------
def test_the_loss_is_on_the_response_only(tiny_llama, headlines):
    m = tk.load_model(tiny_llama, task="sft", instruction="Write a headline.")
    enc = m.task.encode_frame(m.tokenizer, headlines.train.iloc[:4], 64)
    batch = enc.collate(range(4))
    out = m.module(batch)
    # by hand: next-token cross-entropy over the response tokens (and the end token) only
    logits = m.hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    total, n = 0.0, 0
    for j in range(4):
        start = enc.extras[j]["prompt_len"]
        length = len(enc.input_ids[j])
        target = batch["input_ids"][j, start:length]
        pred = logits[j, start - 1:length - 1]
        total += torch.nn.functional.cross_entropy(pred.float(), target, reduction="sum").item()
        n += len(target)
        response = m.tokenizer.decode(enc.input_ids[j][start:], skip_special_tokens=True)
        assert response.lower() == m.tokenizer.decode(m.tokenizer(headlines.train["target"].iloc[j],
                                                                  add_special_tokens=False)["input_ids"]).lower()
        assert enc.input_ids[j][-1] == m.task.eos_id
    assert int(out.count) == n
    assert out.loss.item() == pytest.approx(total / n, rel=1e-5)


def test_a_long_source_is_cut_and_counted_a_long_response_too(tiny_llama):
    m = tk.load_model(tiny_llama, task="sft")
    long = " ".join(["word"] * 300)
    df = pd.DataFrame({"text": [long, "short source", "another"], "target": ["a headline", " ".join(["x"] * 200), "t"],
                       "label": 0})
    enc = m.task.encode_frame(m.tokenizer, df, 48)
    assert all(len(ids) <= 48 for ids in enc.input_ids)
    assert enc.truncated == {"sources_truncated": 1, "targets_truncated": 1}
    assert m.tokenizer.decode(enc.input_ids[0][enc.extras[0]["prompt_len"]:], skip_special_tokens=True) == "a headline"
    with pytest.raises(ConfigError, match="max_length=6 leaves no room"):
        m.task.encode_frame(m.tokenizer, df, 6)


def test_the_chat_template_is_used_when_there_is_one_and_refused_when_missing(tiny_llama, tmp_path):
    plain = tk.load_model(tiny_llama, task="sft")
    assert plain.task.chat_template is False  # the MiniLM tokenizer has none
    with pytest.raises(ConfigError, match="chat_template=True, but the tokenizer of .* has no chat template"):
        tk.load_model(tiny_llama, task="sft", chat_template=True)
    from transformers import AutoTokenizer
    folder = tmp_path / "with-template"
    import shutil
    shutil.copytree(tiny_llama, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(folder)
    m = tk.load_model(str(folder), task="sft", instruction="Headline:")
    assert m.task.chat_template is True
    text = m.task.prompt_text(m.tokenizer, "the story")
    assert text == "<user>Headline:\n\nthe story</user><assistant>"
    df = pd.DataFrame({"text": ["the story"], "target": ["the title"], "label": 0})
    enc = m.task.encode_frame(m.tokenizer, df, 64)
    assert enc.input_ids[0][:enc.extras[0]["prompt_len"]] == m.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_sft_refuses_texts_classification_refuses_pairs_probe_refused(tiny_llama, headlines, tmp_path, tiny_dir):
    m = tk.load_model(tiny_llama, task="sft")
    texts = tk.data.from_texts([f"text {i}" for i in range(10)])
    with pytest.raises(ConfigError, match="task 'sft' trains on \\(source, target\\) pairs; data 'texts' holds texts"):
        tk.train(m, texts, "full", **fast(tmp_path))
    with pytest.raises(ConfigError, match="holds \\(source, target\\) pairs, not classes"):
        tk.compare(["full"], headlines, model=tiny_dir, **fast(tmp_path))
    with pytest.raises(ConfigError, match="Probe trains a classification head"):
        tk.train(m, headlines, "probe", **fast(tmp_path))
    with pytest.raises(ConfigError, match="they are for task='sft'"):
        tk.load_model(tiny_llama, task="causal_lm", instruction="x")
    with pytest.raises(ConfigError, match="generation\\['num_beams'\\] must be an integer in \\[1, 16\\]"):
        tk.load_model(tiny_llama, task="sft", generation={"num_beams": 0})
    with pytest.raises(ConfigError, match="unknown"):
        generation_settings({"temperature": 1.0})


def test_sft_needs_a_decoder(tiny_dir):
    with pytest.raises(ConfigError, match="task 'sft' needs"):
        tk.load_model(tiny_dir, task="sft")


# ----- generation and its scores ---------------------------------------------------------------------
def test_scores_are_rouge_score_and_sacrebleu():
    refs = ["uk coal plunges into deeper loss", "peugeot deal boosts mitsubishi"]
    same = score_texts(refs, refs)
    assert same["rouge1"] == same["rouge2"] == same["rougeL"] == 1.0
    assert same["bleu"] == pytest.approx(100.0) and same["chrf"] == pytest.approx(100.0)
    gen = ["coal firm loss deepens", "mitsubishi gets peugeot deal"]
    s = score_texts(gen, refs)
    from rouge_score import rouge_scorer
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert s["rougeL"] == pytest.approx(sum(scorer.score(r, g)["rougeL"].fmeasure for g, r in zip(gen, refs)) / 2)
    assert 0 < s["chrf"] < 100 and 0 <= s["bleu"] < 100
    assert score_texts([], []) == {}


def test_generation_through_transformers_equals_the_step_by_step_loop(tiny_llama, headlines):
    """Greedy decoding by transformers' generate (with its cache) and by the loop prefix tuning
    uses (the whole sequence each step) write the same tokens."""
    m = tk.load_model(tiny_llama, task="sft", generation={"max_new_tokens": 6})
    m.module.eval()
    batch = m.task.encode_frame(m.tokenizer, headlines.validation.iloc[:3], 64).collate(range(3))
    ids, mask = batch["gen_input_ids"], batch["gen_attention_mask"]
    fast_ = m.module.generate_ids(ids, mask)
    slow = m.module._greedy(ids, mask, 6)
    assert ids.shape[0] == 3 and (mask[:, 0] == 0).any()  # left padding is exercised
    n = min(fast_.shape[1], slow.shape[1])
    assert torch.equal(fast_[:, :n], slow[:, :n])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_every_strategy_trains_and_its_record_reloads_to_its_numbers(family, tiny_llama, tiny_gpt2, headlines,
                                                                     tmp_path):
    path = tiny_llama if family == "llama" else tiny_gpt2
    strategies = [tk.LoRA(rank=4), tk.IA3(), tk.Freeze(train_blocks=[1]), "full", tk.PromptTuning(tokens=3),
                  tk.PrefixTuning(tokens=3), tk.DoRA(rank=2), tk.LNTuning()]
    if family == "gpt2":
        strategies = strategies[:4] + strategies[5:6]
    runs = tk.compare(strategies, headlines, model=path, task="sft",
                      task_options={"instruction": "Headline:", "generation": {"examples": 3, "max_new_tokens": 4}},
                      **fast(tmp_path, lr=1e-3))
    assert [r.status for r in runs] == ["completed"] * len(strategies)
    for run in runs:
        s = run.summary
        assert run.task == "sft" and math.isfinite(s["val_perplexity"]) and s["val_generated"] == 3
        for key in ("rouge1", "rouge2", "rougeL", "bleu", "chrf"):
            assert f"val_{key}" in s
        gens = run.generations()
        assert len(gens) == 3 and set(gens[0]) == {"source", "reference", "generated", "rougeL"}
        assert tk.generations(run, headlines).drop(columns="source").to_dict("records")[:3] == [
            {k: g[k] for k in ("reference", "generated", "rougeL")} for g in gens]  # the same pairs, reloaded
        assert gens[0]["reference"].lower() in set(headlines.validation["target"].str.lower())
        assert run.config["model"]["task_options"]["instruction"] == "Headline:"
        again = tk.evaluate(tk.load_run(run.path), headlines)
        for key in ("perplexity", "rougeL", "chrf"):
            assert again[key] == pytest.approx(s[f"val_{key}"], rel=1e-4, abs=1e-6), (run.label, key)


def test_training_lowers_the_response_loss(tiny_llama, headlines, tmp_path):
    m = tk.load_model(tiny_llama, task="sft", generation={"examples": 2, "max_new_tokens": 4})
    before = tk.evaluate(m, headlines, max_length=64)["loss"]
    run = tk.train(m, headlines, "full", **fast(tmp_path, train_size=None, epochs=3, lr=2e-3))
    assert run.summary["val_loss"] < before - 0.5


# ----- the command line -------------------------------------------------------------------------------
def test_the_cli_trains_sft_on_a_pairs_csv(tiny_llama, headlines, tmp_path):
    csv = tmp_path / "pairs.csv"
    pd.DataFrame({"source": headlines.train["text"][:30], "target": headlines.train["target"][:30]}).to_csv(
        csv, index=False)
    cmd = [sys.executable, "-m", "tunekit", "train", "--task", "sft", "--model", tiny_llama, "--data", str(csv),
           "--strategy", "lora:4", "--train-size", "8", "--eval-size", "4", "--batch-size", "4", "--max-length", "48",
           "--instruction", "Headline:", "--generate", "2", "--max-new-tokens", "3", "--runs-dir", str(tmp_path / "r"),
           "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ROUGE-L" in out.stdout and "perplexity" in out.stdout
    config = json.loads(next((tmp_path / "r").glob("*/config.json")).read_text())
    assert config["task"] == "sft" and config["model"]["task_options"]["generation"]["examples"] == 2
    bad = subprocess.run(cmd[:4] + ["--instruction", "x"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--instruction" in bad.stderr and "is for --task sft or seq2seq" in bad.stderr


# ----- model cards and export ------------------------------------------------------------------------
def _snippet_generations(folder, base) -> list:
    """Run the card's code in a fresh process in which ``import tunekit`` fails."""
    import os
    import re
    readme = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    (folder / "use.py").write_text(code)
    runner = ("import sys, json, runpy; sys.modules['tunekit'] = None; "
              f"g = runpy.run_path({str(folder / 'use.py')!r}, run_name='__main__'); "
              "print('GEN', json.dumps([g['sources'], g['generated']]))")
    out = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "BASE_MODEL": str(base), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("GEN "))
    return json.loads(line[4:])[:2]


def _snippet_ids(folder, base) -> list:
    """The tokens the card's code generated (its ``out``), run as :func:`_snippet_generations` runs it."""
    import os
    out = subprocess.run([sys.executable, "-c", "import sys, json, runpy; sys.modules['tunekit'] = None; "
                          f"g = runpy.run_path({str(folder / 'use.py')!r}, run_name='__main__'); "
                          "print('IDS', json.dumps(g['out'].tolist()))"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "BASE_MODEL": str(base), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(next(x for x in out.stdout.splitlines() if x.startswith("IDS "))[4:])


def _tunekit_generations(model, sources) -> list:
    df = pd.DataFrame({"text": sources, "target": ["x"] * len(sources), "label": 0})
    batch = model.task.encode_frame(model.tokenizer, df, 128).collate(range(len(sources)))
    model.module.eval()
    return [s["generated"] for s in model.module.generate_samples(batch, len(sources))]


@pytest.mark.parametrize("strategy", [tk.LoRA(rank=2), tk.PromptTuning(tokens=3), "full"],
                         ids=["lora", "prompt", "full"])
def test_the_card_snippet_writes_what_tunekit_writes(strategy, tiny_llama_chat, headlines, tmp_path):
    """The adapter folder's (or the exported model's) card, run without tunekit, generates the
    same text as tunekit for the same sources (chat template and instruction included)."""
    tiny_llama = tiny_llama_chat
    m = tk.load_model(tiny_llama, task="sft", instruction="Headline:", generation={"max_new_tokens": 6, "examples": 2})
    assert m.task.chat_template is True
    run = tk.train(m, headlines, strategy, **fast(tmp_path, lr=1e-5 if strategy == "full" else 1e-3))
    if run.format == "peft":
        folder = run.path / "adapter"
    else:
        folder = tk.load_run(run.path).export(tmp_path / "exported")
    readme = (folder / "README.md").read_text()
    assert "pipeline_tag: text-generation" in readme and "rougeL" in readme
    sources, theirs = _snippet_generations(folder, tiny_llama)
    ours = _tunekit_generations(tk.load_run(run.path).load_model(), sources)
    assert theirs == ours and any(ours), (theirs, ours)


# ----- after adaptation ------------------------------------------------------------------------------
def test_pruning_quantization_distillation_and_forgetting_read_an_sft_record(tiny_llama, headlines, tmp_path):
    m = tk.load_model(tiny_llama, task="sft", generation={"examples": 2, "max_new_tokens": 3})
    run = tk.train(m, headlines, "full", **fast(tmp_path))
    pruned = tk.prune(run, sparsity=0.5, data=headlines)
    assert pruned.task == "sft" and pruned.summary["val_generated"] == 2
    assert pruned.summary["before"]["val_perplexity"] == pytest.approx(run.summary["val_perplexity"], rel=1e-3)
    heads = tk.prune(run, method="heads", amount=1, data=headlines)
    assert math.isfinite(heads.summary["val_perplexity"])
    quantized = tk.quantize(run, data=headlines)
    assert "val_rougeL" in quantized.summary and quantized.summary["quantized_layers"] > 0
    student = tk.distil(run, student=[0], data=headlines, **fast(tmp_path))
    assert student.kind == "distil" and student.task == "sft" and "val_rougeL" in student.summary
    table = tk.forgetting(["full"], first=headlines, then=headlines, model=tiny_llama, task="sft",
                          **fast(tmp_path))
    assert table.attrs["metric"] == "rougeL" and math.isfinite(table["perplexity_change"][0])


def test_sft_response_distillation_reads_only_the_response_positions(tiny_llama, headlines):
    from tunekit.post.distillation import DistillationModule
    teacher = tk.load_model(tiny_llama, task="sft")
    student = tk.load_model(tiny_llama, task="sft", seed=1)
    with torch.no_grad():  # make the two differ only by a prompt-position shift of the student's logits
        for p in student.hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    batch = teacher.task.encode_frame(teacher.tokenizer, headlines.train.iloc[:3], 64).collate(range(3))
    both = DistillationModule(student.module, teacher.module, {"response": 1.0}, 0.0, 2.0, [], [], causal=True,
                              response_only=True)
    everywhere = DistillationModule(student.module, teacher.module, {"response": 1.0}, 0.0, 2.0, [], [],
                                    causal=True, response_only=False)
    with torch.no_grad():
        only, every = both(batch).loss.item(), everywhere(batch).loss.item()
        from tunekit.post.distillation import response_loss
        s, t = student.module(batch).logits, teacher.module(batch).logits
        where = torch.zeros_like(batch["attention_mask"])
        where[:, :-1] = (batch["labels"][:, 1:] != -100).long()
    assert only == pytest.approx(response_loss(s, t, 2.0, where).item(), rel=1e-5)
    assert only != pytest.approx(every, rel=1e-3)


def test_generations_pair_example_by_example_with_an_interval(tiny_llama, headlines, tmp_path):
    m = tk.load_model(tiny_llama, task="sft", generation={"examples": 6, "max_new_tokens": 4})
    before = tk.generations(m, headlines, size=6, seed=1, max_length=64)
    assert list(before.columns) == ["source", "reference", "generated", "rougeL"] and len(before) == 6
    assert before.attrs["metrics"]["rougeL"] == pytest.approx(before["rougeL"].mean())
    run = tk.train(m, headlines, "full", **fast(tmp_path, lr=1e-3))
    after = tk.generations(run, headlines)  # the run's own validation subset: the same six pairs
    assert list(after["reference"]) == list(before["reference"])
    said = tk.metrics.paired_difference(after["rougeL"], before["rougeL"], "full", "before", "ROUGE-L")
    assert said["low"] <= said["difference"] <= said["high"] and "over 6 examples" in said["said"]
    from tunekit.metrics import paired_difference
    clear = paired_difference([1.0] * 20, [0.0] * 20, "a", "b")
    assert clear["said"].endswith("a better") and not clear["inside_noise"]
    noisy = paired_difference([1, 0] * 10, [0, 1] * 10, "a", "b")
    assert noisy["inside_noise"] and noisy["said"].endswith("inside the noise")
    with pytest.raises(ConfigError, match="generations\\(\\) is for text-to-text models"):
        tk.generations(tk.load_model(tiny_llama, task="causal_lm"), headlines)
