import re

import pytest

import tunekit as tk
from tunekit.config import ConfigError, TrainConfig
from tunekit.engine import lr_factor


@pytest.mark.parametrize("field,value,words", [
    ("epochs", 0, "epochs must be a positive integer"),
    ("epochs", -1, "epochs must be a positive integer"),
    ("epochs", 1.5, "epochs must be a positive integer"),
    ("lr", 0, "lr must be a positive number"),
    ("lr", -1e-3, "lr must be a positive number"),
    ("lr", float("nan"), "lr must be a positive number"),
    ("batch_size", 0, "batch_size must be a positive integer"),
    ("schedule", "step", "schedule must be one of"),
    ("warmup", 1.0, "warmup must be in [0, 1)"),
    ("weight_decay", -0.1, "weight_decay must be >= 0"),
    ("grad_clip", 0, "grad_clip must be a positive number"),
    ("seed", -1, "seed must be an integer in 0 .. 2**63 - 1"),
    ("train_size", 0, "train_size must be a positive integer"),
    ("precision", "fp8", "precision must be one of"),
])
def test_bad_config_names_the_field(field, value, words):
    with pytest.raises(ConfigError, match=re.escape(words)) as e:
        TrainConfig(**{field: value})
    assert repr(value) in str(e.value) or str(value) in str(e.value)


def test_replace_validates_and_rejects_unknown_fields():
    c = TrainConfig().replace(epochs=3)
    assert c.epochs == 3
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig().replace(epochs=0)
    with pytest.raises(ConfigError, match="unknown TrainConfig field.*'epoch'"):
        TrainConfig().replace(epoch=3)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_schedules_warm_up_then_follow_their_shape(schedule):
    total, warm = 100, 0.1
    f = [lr_factor(s, total, warm, schedule) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warm-up over 10 steps
    assert all(a < b for a, b in zip(f[:10], f[1:10]))
    if schedule == "constant":
        assert all(x == 1.0 for x in f[10:])
    else:
        assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.05
    if schedule == "cosine":
        assert f[55] == pytest.approx(0.5, abs=0.02)  # half-way through the decay
    if schedule == "linear":
        assert f[55] == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("make,words", [
    (lambda: tk.LoRA(rank=0), "LoRA.rank must be an integer >= 1"),
    (lambda: tk.LoRA(rank=-4), "LoRA.rank must be an integer >= 1"),
    (lambda: tk.LoRA(rank=2.5), "LoRA.rank must be an integer >= 1"),
    (lambda: tk.LoRA(dropout=1.0), r"LoRA.dropout must be in \[0, 1\)"),
    (lambda: tk.LoRA(alpha=-1), "LoRA.alpha must be a finite number > 0"),
    (lambda: tk.Freeze(), "exactly one of train=, frozen=, train_blocks="),
    (lambda: tk.Freeze(train=["head"], frozen=["embeddings"]), "exactly one of"),
    (lambda: tk.Freeze.top(-1), "k must be an integer >= 0"),
    (lambda: tk.Probe(pooling="max"), "Probe.pooling must be one of"),
    (lambda: tk.LPFT(probe_epochs=0), "LPFT.probe_epochs must be a positive integer"),
    (lambda: tk.get_strategy("adapter"), "unknown strategy 'adapter'; known"),
])
def test_bad_strategy_arguments(make, words):
    with pytest.raises(ConfigError, match=words):
        make()


def test_registry_round_trips_describe():
    for s in [tk.Probe(), tk.Freeze(train_blocks=[4, 5]), tk.LoRA(rank=4, target_modules=["query"]),
              tk.Full(), tk.LPFT(probe_epochs=2)]:
        again = tk.get_strategy(s.describe())
        assert again == s and again.label == s.label


@pytest.mark.parametrize("seed", [2**63, 2**64, 10**30])
def test_a_seed_past_what_torch_takes_is_refused_at_every_door(seed, tmp_path, capsys):
    """Found by the fuzz (issue 22): a seed of 2**64 passed TrainConfig and load_model, then
    torch.manual_seed raised 'Overflow when unpacking long long' (inside a run, or as a model
    that 'cannot be loaded'). A run seeds its later phases with seed + 1, so the bound is 2**63 - 1."""
    from tunekit.cli import main
    words = re.escape("seed must be an integer in 0 .. 2**63 - 1")
    with pytest.raises(ConfigError, match=words):
        TrainConfig(seed=seed)
    with pytest.raises(ConfigError, match=words):
        tk.load_model(seed=seed)
    with pytest.raises(ConfigError, match=words):
        tk.data.from_texts(["a", "b", "c", "d"], seed=seed)
    assert TrainConfig(seed=2**63 - 1).seed == 2**63 - 1
    assert main(["compare", "--seed", str(seed), "--runs-dir", str(tmp_path)]) == 2
    assert "argument --seed: must be an integer in 0 .. 2**63 - 1" in capsys.readouterr().err


@pytest.mark.parametrize("runs_dir", ["", "  ", "runs\x00"])
def test_runs_dir_must_be_a_usable_path(runs_dir):
    """Found by the fuzz: runs_dir with a NUL byte raised Python's 'embedded null byte' from the writer."""
    with pytest.raises(ConfigError, match="runs_dir must be a folder's path"):
        TrainConfig(runs_dir=runs_dir)


def test_runs_dir_under_a_home_that_does_not_exist():
    """Found by the fuzz: '~nobody/runs' passed, then the writer raised 'Could not determine home directory'."""
    with pytest.raises(ConfigError, match="'~nobody-here' names no user's home"):
        TrainConfig(runs_dir="~nobody-here/runs")


@pytest.mark.parametrize("make, words", [
    (lambda: tk.compare(0.5, data="rotten_tomatoes"), r"strategies must be a non-empty list of strategies"),
    (lambda: tk.forgetting(0.5), r"strategies must be a non-empty list of strategies"),
])
def test_strategies_that_are_not_a_list(make, words):
    """Found by the fuzz: compare / forgetting with strategies=np.float64(0.5) raised "'numpy.float64'
    object is not iterable". One strategy alone is a list of one."""
    with pytest.raises(ConfigError, match=words):
        make()
    from tunekit.strategies import get_strategies
    assert [s.label for s in get_strategies("probe")] == ["probe"]
