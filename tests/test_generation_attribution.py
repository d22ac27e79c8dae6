"""Which source tokens an output token came from (issue 25): integrated gradients over the source
of a decoder tuned with task='sft' and an encoder-decoder with task='seq2seq', checked against
what the model computes without captum (the log-probabilities, the completeness identity), the
base against a tuned run, and the errors in words."""
import math

import pandas as pd
import pytest
import torch

import tunekit as tk
from tunekit.config import ConfigError
from tunekit.tiny import make_tiny

ARTICLE = ("Shares in the car maker fell sharply on Monday after it warned that sales in Europe would be lower "
           "than expected this year.")
HEADLINE = "Car maker shares fall on sales warning"


@pytest.fixture(scope="module")
def pairs():
    data = tk.data.bbc_headlines()
    return tk.data.from_pairs(pd.DataFrame({"source": data.train["text"][:40], "target": data.train["target"][:40]}),
                              name="headlines-40", validation_size=8, test_size=4)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return str(make_tiny("llama", tmp_path_factory.mktemp("attr-llama")))


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    return str(make_tiny("t5", tmp_path_factory.mktemp("attr-t5")))


def direct_logprobs(model, prompt_ids, out_ids):
    """log p of each output token, teacher-forced, from the Hugging Face model alone."""
    hf = model.hf.eval()
    with torch.no_grad():
        if model.task.name == "seq2seq":
            logits = hf(input_ids=torch.tensor([prompt_ids]), labels=torch.tensor([out_ids])).logits[0]
            rows = range(len(out_ids))
        else:
            logits = hf(input_ids=torch.tensor([prompt_ids + out_ids])).logits[0]
            rows = range(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(out_ids))
    lp = logits.float().log_softmax(-1)
    return [float(lp[r, t]) for r, t in zip(rows, out_ids)]


@pytest.mark.parametrize("which", ["llama", "t5"])
def test_scores_add_up_and_the_logprobs_are_the_models_own(which, llama, t5):
    task = "sft" if which == "llama" else "seq2seq"
    model = tk.load_model(llama if which == "llama" else t5, task=task, instruction="Headline:")
    a = tk.inspect.attribute_generation(model, ARTICLE, target=HEADLINE, n_steps=64)
    tok = model.tokenizer
    assert not a.generated and a.target.lower() == HEADLINE.lower()
    from tunekit.inspect.generation import shown
    assert a.tokens == [shown(tok, i) for i in tok(ARTICLE, add_special_tokens=False)["input_ids"]], \
        "the source's own tokens, without the instruction around them"
    assert "".join(t.replace("##", "") for t in a.tokens).lower() == ARTICLE.replace(" ", "").lower()
    if task == "sft":
        prompt = model.task.prompt_ids(tok, ARTICLE)
        out = tok(HEADLINE, add_special_tokens=False)["input_ids"]
    else:
        prompt = tok(model.task.source_text(ARTICLE))["input_ids"]
        out = tok(text_target=HEADLINE)["input_ids"][:-1]  # the end token is not explained
    specials = set(tok.all_special_ids)
    assert a.positions == [i for i, t in enumerate(out) if t not in specials]
    assert a.output == [shown(tok, out[p]) for p in a.positions]
    direct = direct_logprobs(model, prompt, out)
    assert a.logprobs == pytest.approx([direct[p] for p in a.positions], abs=1e-4)
    for row, lp, blp, delta in zip(a.scores, a.logprobs, a.baseline_logprobs, a.delta):
        assert len(row) == len(a.tokens)
        # captum's delta is sum(attributions) - (F(x) - F(baseline)); nothing outside the source is attributed
        assert sum(row) - (lp - blp) == pytest.approx(delta, abs=1e-4)
        assert abs(delta) <= 0.05 * max(abs(lp - blp), 1e-3) + 1e-3, "64 steps integrate closely"
    assert a.top_sources(0, k=3)[0][1] == max(a.scores[0])
    frame = a.to_frame()
    assert len(frame) == len(a.output) * len(a.tokens) and set(frame["run"]) == {"base"}


def test_without_a_target_it_explains_what_the_model_writes(llama):
    model = tk.load_model(llama, task="sft", generation={"max_new_tokens": 5})
    with torch.no_grad():  # this random model's first word is its end token: its logit 0 makes it lose to others
        model.hf.get_output_embeddings().weight[model.task.eos_id] = 0.0
    a = tk.inspect.attribute_generation(model, ARTICLE, max_new_tokens=5, n_steps=8)
    x = torch.tensor([model.task.prompt_ids(model.tokenizer, ARTICLE)])
    model.module.eval()
    written = model.module.generate_ids(x, torch.ones_like(x))[0].tolist()
    eos = [i for i, t in enumerate(written) if t == model.task.eos_id]
    written = written[:eos[0]] if eos else written
    from tunekit.inspect.generation import shown
    assert written and a.generated and a.output == [shown(model.tokenizer, i) for i in written]
    assert all(lp > math.log(1e-6) for lp in a.logprobs), "greedy tokens are likely under the model"


def test_base_and_tuned_explain_the_same_tokens(llama, pairs, tmp_path):
    runs = tk.compare([tk.LoRA(rank=2), tk.PromptTuning(tokens=4)], pairs, model=llama, task="sft",
                      task_options={"generation": {"examples": 2, "max_new_tokens": 4}}, train_size=16,
                      eval_size=4, epochs=1, batch_size=8, max_length=96, runs_dir=str(tmp_path), progress=False)
    rows = tk.inspect.attribute_generation_runs(runs, ARTICLE, target=HEADLINE, n_steps=8, tokens=[0, 2])
    assert [r.label for r in rows] == ["base", "lora-r2", "prompt-4"]
    assert all(r.output == rows[0].output and r.positions == [0, 2] and r.tokens == rows[0].tokens for r in rows)
    assert rows[1].scores != rows[0].scores, "the tuned model's attributions are its own"
    for r in rows:  # prompt tuning's virtual tokens sit before the source and are not attributed
        assert sum(r.scores[0]) - (r.logprobs[0] - r.baseline_logprobs[0]) == pytest.approx(r.delta[0], abs=1e-4)
    page = tk.plots.generation_attribution_html(rows, token=1)
    assert page.count("<tr>") == 3 and "lora-r2" in page and "outline:2px solid" in page
    fig = tk.plots.generation_attribution_view(rows[1])
    assert len(fig.data[0].z) == 2 and len(fig.data[0].z[0]) == len(rows[1].tokens)


def test_bad_input_is_refused_in_words(llama, tiny_dir):
    model = tk.load_model(llama, task="sft")
    with pytest.raises(ConfigError, match="source must be a non-empty string"):
        tk.inspect.attribute_generation(model, "  ")
    with pytest.raises(ConfigError, match="target must be None"):
        tk.inspect.attribute_generation(model, ARTICLE, target="")
    with pytest.raises(ConfigError, match=r"tokens must name output positions in 0 \.\. "):
        tk.inspect.attribute_generation(model, ARTICLE, target=HEADLINE, tokens=[99])
    with pytest.raises(ConfigError, match=r"n_steps must be an integer in 1 \.\. "):
        tk.inspect.attribute_generation(model, ARTICLE, target=HEADLINE, n_steps=0)
    with pytest.raises(ConfigError, match="task 'sft' or 'seq2seq'"):
        tk.inspect.attribute_generation(tk.load_model(tiny_dir, label_names=["a", "b"]), ARTICLE)
    a = tk.inspect.attribute_generation(model, ARTICLE, target=HEADLINE, n_steps=4, tokens=[0])
    with pytest.raises(ConfigError, match="token must be an index"):
        tk.plots.generation_attribution_html([a], token=5)


def test_the_html_escapes_every_token():
    rec = {"source": "<b>x</b>", "tokens": ["<script>", "a"], "output": ["<i>"], "positions": [0],
           "scores": [[0.5, -0.25]], "logprobs": [-1.0], "baseline_logprobs": [-2.0], "delta": [0.25],
           "target": "<i>", "generated": False, "run": "r<1>", "label": "lora<"}
    page = tk.plots.generation_attribution_html(rec)
    assert "<script>" not in page and "&lt;script&gt;" in page and "lora&lt;" in page and "&lt;b&gt;x" in page
