"""A strategy is one file plus one line of the registry (:mod:`tunekit.strategy_registry`):
get_strategy, the command line, ``tk.<ClassName>`` and the lab all read it."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import tunekit as tk
from tunekit.arguments import InputError, parse_strategies, strategy_specs
from tunekit.strategies import REGISTRY, get_strategy, register
from tunekit.strategy_registry import STRATEGIES


@dataclasses.dataclass
class Everything(tk.Full):
    """Test only: full fine-tuning under a name of its own."""

    name = "everything"


@pytest.fixture
def everything():
    register(Everything)  # the one line that adds a strategy
    yield Everything
    del REGISTRY[Everything.name]


def test_a_registered_strategy_is_known_to_get_strategy_and_the_command_line(everything):
    assert get_strategy("everything") == Everything()
    assert get_strategy({"name": "everything"}).label == "everything"
    probe, every = parse_strategies("probe, everything")
    assert isinstance(probe, tk.Probe) and type(every) is Everything
    assert strategy_specs().endswith("lpft, gradual, discriminative, qat, everything")
    assert tk.Everything is Everything and "Everything" in dir(tk)


def test_every_registered_strategy_is_exported(everything):
    for cls in REGISTRY.values():
        assert getattr(tk, cls.__name__) is cls
    for name, class_name in STRATEGIES.items():
        assert REGISTRY[name].__name__ == class_name and REGISTRY[name].name == name
        assert class_name in tk.__all__ and class_name in dir(tk) and class_name in tk.strategies.__all__


def test_the_table_is_the_registry_and_the_command_lines_names():
    assert list(REGISTRY) == list(STRATEGIES) == ["probe", "freeze", "lora", "ia3", "dora", "adalora", "vera", "loha",
                                                  "lokr", "ln_tuning", "prompt_tuning", "prefix_tuning", "full", "lpft",
                                                  "gradual", "discriminative", "qat"]
    worded = "[:RANK[:pissa|olora|gaussian][:rslora]]"
    assert strategy_specs() == (f"probe, freeze[:K], lora{worded}, ia3, dora{worded}, adalora[:RANK], vera[:RANK], "
                                "loha[:RANK], lokr[:RANK], ln_tuning, prompt_tuning[:TOKENS], prefix_tuning[:TOKENS], "
                                "full, lpft, gradual, discriminative, qat")
    with pytest.raises(InputError, match=r"known: probe, freeze, lora, ia3, dora, .* \(lora:RANK, freeze:K, "
                                         r"dora:RANK, adalora:RANK, vera:RANK, loha:RANK, lokr:RANK, "
                                         r"prompt_tuning:TOKENS, prefix_tuning:TOKENS take a number\)"):
        parse_strategies("probe,bogus")
    assert parse_strategies("freeze")[0] == tk.Freeze.top(2)
    assert parse_strategies("lora:4")[0] == tk.LoRA(rank=4)
    assert parse_strategies("dora:4,vera:16,loha:2,lokr:2,ln_tuning") == [
        tk.DoRA(rank=4), tk.VeRA(rank=16), tk.LoHa(rank=2), tk.LoKr(rank=2), tk.LNTuning()]
    with pytest.raises(InputError, match=r"'ln_tuning' takes no ':' argument"):
        parse_strategies("ln_tuning:2")


def test_the_lab_offers_the_strategies_with_a_label_of_their_own(everything):
    from tunekit.widgets.controls import lab_strategies
    assert lab_strategies() == [("Freeze layers", "freeze"), ("LoRA", "lora"), ("IA3", "ia3"),
                                ("Full fine-tune", "full"), ("Probe (head only)", "probe"),  # as since 0.1
                                ("DoRA", "dora"), ("AdaLoRA", "adalora"), ("VeRA", "vera"), ("LoHa", "loha"),
                                ("LoKr", "lokr"), ("LayerNorm tuning", "ln_tuning"), ("Prompt tuning", "prompt_tuning"),
                                ("Prefix tuning", "prefix_tuning"), ("Gradual unfreezing", "gradual")]
    # Everything inherits Full's label, not its place in the picker


def test_the_names_are_read_without_torch():
    code = ("import sys, tunekit, tunekit.arguments as a; specs = a.strategy_specs(); "
            "assert 'torch' not in sys.modules and 'tunekit.strategies' not in sys.modules; "
            "assert specs.startswith('probe, freeze[:K]') and 'LoRA' in dir(tunekit) and 'QAT' in tunekit.__all__")
    subprocess.run([sys.executable, "-c", code], check=True)
