"""The real built-in model (all-MiniLM-L6-v2) on the real built-in data, on small splits."""
import pytest
import torch

import tunekit as tk

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data():
    return tk.data.rotten_tomatoes()


def test_real_minilm_beats_the_majority_class(data, tmp_path):
    majority = max(data.validation["label"].mean(), 1 - data.validation["label"].mean())
    runs = tk.compare([tk.Probe(), tk.Full()], data, train_size=480, eval_size=400, epochs=1,
                      runs_dir=str(tmp_path), progress=False, evals_per_epoch=1)
    for run in runs:
        assert run.status == "completed"
        assert run.summary["val_accuracy"] > majority + 0.05, (run.label, run.summary["val_accuracy"], majority)
    probe, full = runs
    assert probe.config["params"]["trainable"] == 770  # 384 x 2 + 2
    assert full.config["params"]["trainable"] == 22_713_986 - 147_840  # all but the unused pooler


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # plain peft reads it
def test_real_minilm_lora_adapter_in_plain_peft_gives_identical_logits(data, tmp_path):
    """The built-in model mean-pools; plain peft gives the same hidden states, so mean pooling
    plus the saved head gives the same logits."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification
    model = tk.load_model(label_names=data.label_names)
    run = tk.train(model, data, tk.LoRA(rank=8), train_size=64, eval_size=32, runs_dir=str(tmp_path),
                   progress=False)
    assert model.peft.get_nb_trainable_parameters()[0] == run.config["params"]["trainable"] == 74_498
    texts = ["An utterly charming film.", "Two hours I will never get back, and the plot is a mess."]
    model.module.eval()
    enc = model.tokenize(texts)
    with torch.no_grad():
        ours = model.logits(enc["input_ids"], enc["attention_mask"])
        base = AutoModelForSequenceClassification.from_pretrained(model.path, num_labels=2)
        plain = PeftModel.from_pretrained(base, str(run.path / "adapter")).eval()
        h = plain.base_model.model.bert(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        theirs = plain.base_model.model.classifier((h * m).sum(1) / m.sum(1))
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
