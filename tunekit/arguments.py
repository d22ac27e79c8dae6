"""What the ``tunekit`` commands share (:mod:`tunekit.cli`, :mod:`tunekit.post.cli`): the
argparse types of their options, the lookup of a run by directory or name, the parsing of
``--strategies``, and :class:`InputError`, the bad input that names its option.

Importing this module stays light (no torch): ``tunekit --help`` builds every parser.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from tunekit.config import MAX_SEED, ConfigError
from tunekit.strategy_registry import LORA_INITS, STRATEGIES


class InputError(Exception):
    """Bad command-line input; ``option`` names the culprit."""

    def __init__(self, option: Optional[str], message: str):
        super().__init__(message)
        self.option = option


# ----- argument types ----------------------------------------------------------------------------
def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {text!r})")
    return value


def size(text: str) -> Optional[int]:
    """A number of examples, or ``all`` (None: the whole split)."""
    if text.strip().lower() == "all":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'all' (got {text!r})") from None


def sizes(text: str) -> list[int]:
    """``"100,300,1000"`` -> ``[100, 300, 1000]``: training-set sizes, positive integers."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        try:
            out.append(positive_int(item))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be positive integers separated by commas, e.g. 100,300,1000 "
                                             f"(got {text!r})") from None
    return out


def seed(text: str) -> int:
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in 0 .. 2**63 - 1 (got {text!r})")
    return value


def lr_or_tune(text: str):
    """A learning rate, or ``tune`` (a search per strategy: :func:`tunekit.experiments.experiment`)."""
    if text.strip().lower() == "tune":
        return "tune"
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a positive number such as 1e-4, or 'tune' (got {text!r})") from None


def _number(text: str, ok, words: str) -> float:
    """``text`` as a float where ``ok(value)``; otherwise argparse's error, ``words`` saying what is allowed."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {words} (got {text!r})")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0, such as a learning rate."""
    return _number(text, lambda v: 0 < v < float("inf"), "a positive number such as 1e-4")


def decay(text: str) -> float:
    """A factor in (0, 1], such as a layer-wise learning-rate decay."""
    return _number(text, lambda v: 0 < v <= 1, "a number in (0, 1] such as 0.8")


def fraction(text: str) -> float:
    """A number in [0, 1), such as the warm-up's share of the steps."""
    return _number(text, lambda v: 0 <= v < 1, "a number in [0, 1) such as 0.1")


def user_path(text: str, option: str) -> Path:
    """``text`` as a path, ``~`` expanded. Raises :class:`InputError` about ``option`` for a
    ``~user`` that names nobody, or a name the system cannot look up (too long)."""
    try:
        path = Path(text).expanduser()
        path.exists()
    except (RuntimeError, OSError) as e:
        raise InputError(option, f"{text[:200]!r} is not a usable path ({e})") from None
    return path


# ----- runs --------------------------------------------------------------------------------------
def open_run(run_ref: str, runs_dir: str):
    """The run ``run_ref`` names: a run directory, else a run of that name in ``runs_dir``.
    Raises :class:`InputError` about ``RUN``."""
    from tunekit.runs import RunRecordError, load_run  # lazy: pandas loads only for the commands that read runs
    path = user_path(run_ref, "RUN")
    if not (path / "config.json").is_file():
        path = user_path(runs_dir, "--runs-dir") / run_ref
    try:
        return load_run(path)
    except RunRecordError as e:
        raise InputError("RUN", f"{run_ref!r} is neither a run directory nor a run in {runs_dir!r} ({e})") from e


# ----- strategies --------------------------------------------------------------------------------
# strategies whose spec takes a number after ':': name -> (its placeholder, what the number is, its least value)
_NUMBERED = {"lora": ("RANK", "a LoRA rank >= 1", 1), "freeze": ("K", "a number of top blocks >= 0", 0),
             **{name: ("RANK", f"{'an' if label[0] in 'AEIOU' else 'a'} {label} rank >= 1", 1)
                for name, label in (("dora", "DoRA"), ("adalora", "AdaLoRA target"), ("vera", "VeRA"),
                                    ("loha", "LoHa"), ("lokr", "LoKr"))},
             "prompt_tuning": ("TOKENS", "a number of virtual tokens >= 1", 1),
             "prefix_tuning": ("TOKENS", "a number of virtual tokens >= 1", 1)}
# the parameter the number sets, where it is not ``rank``
_NUMBER_FIELD = {"adalora": "target_rank", "prompt_tuning": "tokens", "prefix_tuning": "tokens"}
FREEZE_BLOCKS = 2  # ``freeze`` with no number trains the top 2 blocks
# words after LoRA's or DoRA's rank (``lora:8:pissa``, ``dora:4:rslora``): word -> (parameter, value)
_LORA_WORDS = {**{init: ("init", init) for init in LORA_INITS if init != "default"}, "rslora": ("rslora", True)}
_WORDED = ("lora", "dora")


def strategy_names() -> list[str]:
    """The names ``--strategies`` accepts, in the registry's order: its table's, read without
    importing torch, and once the strategies are loaded, also those registered at run time."""
    loaded = sys.modules.get("tunekit.strategies")
    registry = getattr(loaded, "REGISTRY", None)
    return list(registry) if registry else list(STRATEGIES)


def strategy_specs(explain: bool = False) -> str:
    """The accepted specs for a help text: ``probe, freeze[:K], lora[:RANK], ...``; with
    ``explain``, what the number of ``freeze`` means."""
    def spec(name: str) -> str:
        if name not in _NUMBERED:
            return name
        text = f"{name}[:{_NUMBERED[name][0]}" + ("[:pissa|olora|gaussian][:rslora]]" if name in _WORDED else "]")
        return text + f" (top K blocks, default {FREEZE_BLOCKS})" if explain and name == "freeze" else text
    return ", ".join(spec(name) for name in strategy_names())


def _strategy_spec(item: str, option: str = "--strategies"):
    """One item of ``--strategies`` -> a spec for ``get_strategy``, or ``("freeze", K)`` for
    ``Freeze.top(K)``. Raises :class:`InputError`."""
    name, _, arg = item.partition(":")
    name = name.strip().lower()
    known = strategy_names()
    if name not in known:
        numbered = ", ".join(f"{n}:{placeholder}" for n, (placeholder, _, _) in _NUMBERED.items())
        raise InputError(option, f"unknown strategy {name!r}; known: {', '.join(known)} "
                         f"({numbered} take a number)")
    if not arg:
        return ("freeze", FREEZE_BLOCKS) if name == "freeze" else {"name": name}
    if name not in _NUMBERED:
        raise InputError(option, f"{name!r} takes no ':' argument (got {item!r})")
    _, what, least = _NUMBERED[name]
    arg, *words = arg.split(":")
    try:
        n = int(arg)
    except ValueError:
        n = -1
    if n < least:
        raise InputError(option, f"{item!r}: after ':' comes {what} (got {arg!r})")
    if words and name not in _WORDED:
        raise InputError(option, f"{item!r}: {name} takes one ':' argument, {what}")
    if name == "freeze":
        return ("freeze", n)
    spec = {"name": name, _NUMBER_FIELD.get(name, "rank"): n}
    for word in (w.strip().lower() for w in words):
        if word not in _LORA_WORDS:
            raise InputError(option, f"{item!r}: after the rank come {', '.join(_LORA_WORDS)} (got {word!r})")
        field, value = _LORA_WORDS[word]
        if field in spec:
            raise InputError(option, f"{item!r}: one start at most (pissa, olora or gaussian)")
        spec[field] = value
    return spec


def strategy_text(spec: dict) -> Optional[str]:
    """The ``--strategies`` item that :func:`parse_strategies` turns back into the strategy
    described by ``spec`` (a strategy's ``describe()``): ``"freeze:2"``, ``"lora:8"``, ``"full"``;
    None when no item says it (a LoRA alpha other than twice its rank, ...)."""
    from tunekit.strategies import Freeze, get_strategy  # lazy: torch loads only for the commands that train

    name = spec.get("name")
    if name == "freeze":
        blocks = spec.get("train_blocks") or []
        k = len(blocks)
        candidate, strategy = f"freeze:{k}", Freeze.top(k)
    elif name in _NUMBERED:
        try:
            field = _NUMBER_FIELD.get(name, "rank")
            given = {"name": name, field: spec.get(field)}
            candidate = f"{name}:{spec.get(field)}"
            if name in _WORDED:
                for word, (key, value) in _LORA_WORDS.items():
                    if spec.get(key) == value:
                        candidate, given[key] = f"{candidate}:{word}", value
            strategy = get_strategy(given)
        except ConfigError:
            return None
    elif name in strategy_names():
        candidate, strategy = str(name), get_strategy({"name": name})
    else:
        return None
    try:  # a record written before a parameter existed describes it without: the default it ran with
        described = get_strategy(spec).describe()
    except ConfigError:
        return None
    return candidate if strategy.describe() == described else None


def parse_strategies(text: str, option: str = "--strategies") -> list:
    """``"probe,lora:4,freeze"`` -> a list of strategies (``freeze`` is ``Freeze.top(2)``,
    ``freeze:K`` is ``Freeze.top(K)``, ``lora:R`` is ``LoRA(rank=R)``, ``lora:R:pissa`` starts it
    from the weights' principal components and ``lora:R:rslora`` scales it by alpha / sqrt(R), as
    ``dora:R:...`` does for DoRA). Raises :class:`InputError`
    naming ``option`` (``train`` takes ``--strategy``)."""
    from tunekit.strategies import Freeze, get_strategy  # lazy: torch loads only for the commands that train

    specs = [_strategy_spec(item, option) for item in (s.strip() for s in text.split(",")) if item]
    if not specs:
        raise InputError(option, f"no strategies given (got {text!r})")
    try:
        return [Freeze.top(s[1]) if isinstance(s, tuple) else get_strategy(s) for s in specs]
    except ConfigError as e:
        raise InputError(option, str(e)) from e
