"""Forgetting: learn task A, then task B with each strategy, and measure what A lost.

    df = tk.forgetting([tk.Probe(), tk.Freeze(train_blocks=[5]), tk.LoRA(rank=8), tk.Full()],
                       first="rotten_tomatoes", then="bbc_news", train_size=400)

Task A is learned once (``first_strategy``, full fine-tuning by default), so every
strategy starts B from the same model. For classification each task keeps its own head:
B gets a new one, and A is measured after B with A's head on the body that B changed,
on A's held-out ``split``. A probe leaves the body as it was, so it forgets exactly
nothing. For a language model (``task="causal_lm"``) A and B are two text corpora and the
metric is perplexity on A's held-out texts (lower is better: ``forgot`` is then how much
it rose).

Besides the task metrics, what B moved in the model itself: ``drift`` is 1 minus the
linear CKA between the sentence embeddings (mean-pooled last hidden states) of ``n``
held-out texts of A before and after B, ``knn_agreement`` the mean overlap of each
text's ``k`` nearest neighbours under the two; ``drift_from_base`` compares with the
pretrained model instead. For a language model ``drift`` is also reported from the
embeddings, and ``perplexity_change`` is the relative change of perplexity on A's
held-out texts from the pretrained model to after B.

Returns a DataFrame, one row per strategy: ``strategy, a_before, a_after, forgot, b_before,
b_after, learned, drift, knn_agreement, drift_from_base, run`` (``run``: B's record).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import pandas as pd
import torch

from tunekit import adapters
from tunekit.config import ConfigError, positive_int
from tunekit.data import load as load_data
from tunekit.engine import Trainer
from tunekit.evaluation import evaluate
from tunekit.inspect.representations import linear_cka, pooled_hidden_states
from tunekit.metrics import primary
from tunekit.models import load_for
from tunekit.post.base import copy_model
from tunekit.runs import Run, load_run
from tunekit.strategies import Full, get_strategies, get_strategy
from tunekit.structure import apply_steps, new_head

SPLITS = ("validation", "test")


def embeddings(model, texts: Sequence[str], max_length: int = 128, batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled last hidden states [n, hidden] (fp32, eval mode, no gradients)."""
    return pooled_hidden_states(model, list(texts), max_length, batch_size)[-1]


def knn_agreement(X: torch.Tensor, Y: torch.Tensor, k: int = 10) -> float:
    """Mean overlap (0..1) of each row's ``k`` nearest neighbours (cosine) under X and under Y."""
    k = min(k, len(X) - 1)
    if k < 1:
        raise ConfigError("knn_agreement needs at least 2 examples")

    def neighbours(Z):
        Z = torch.nn.functional.normalize(Z.double(), dim=1)
        sim = Z @ Z.T
        sim.fill_diagonal_(-float("inf"))
        return sim.topk(k, dim=1).indices

    a, b = neighbours(X), neighbours(Y)
    return float(sum(len(set(r.tolist()) & set(s.tolist())) for r, s in zip(a, b)) / (k * len(X)))


def _held_out(data, split: str, n: int, seed: int) -> list[str]:
    df = data.split(split)
    if len(df) == 0:
        raise ConfigError(f"the {split} split of {data.name!r} is empty")
    return df.sample(n=min(n, len(df)), random_state=seed)["text"].tolist()


def _swap_head(model, head_state: dict, labels: list[str]):
    """A copy of ``model`` (adapter merged) wearing another task's head."""
    m = copy_model(model)
    if m.peft is not None:
        m.replace_hf(adapters.merge_and_unload(m.peft))
    new_head(m, labels)
    m.replace_hf(m.hf)
    with torch.no_grad():
        for name, p in m.head().named_parameters():
            p.copy_(head_state[name])
    m.module.eval()
    return m


def forgetting(strategies: Sequence[Any], first: Any = "rotten_tomatoes", then: Any = "bbc_news",
               model: str = "minilm", *, task: str = "classification", first_strategy: Any = None,
               first_run: Any = None, split: str = "test", n: int = 256, k: int = 10,
               size: Optional[int] = None, **train_overrides) -> pd.DataFrame:
    """Learn ``first`` (task A), then ``then`` (task B) with each of ``strategies``; measure
    A before and after B (see the module docstring).

    Args:
        strategies: what learns B (Strategy objects, names or dicts).
        first, then: the two data sets (TextDatasets or built-in names).
        model: the pretrained model (a name or path).
        task: ``"classification"`` or ``"causal_lm"``.
        first_strategy: how A is learned (default full fine-tuning).
        first_run: a run that has already learned A on ``first`` (a Run or its directory):
            it is used as A's result instead of training one; ``model`` is then its model.
        split: A's and B's held-out split, ``"test"`` or ``"validation"``.
        n, k: held-out texts of A for the embedding drift, neighbours for the agreement.
        size: evaluate on a seeded subset of ``size`` held-out examples (None: all).
        train_overrides: :class:`~tunekit.config.TrainConfig` fields for both stages.
    """

    if not strategies:
        raise ConfigError("forgetting needs at least one strategy to learn the second task with")
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS} (got {split!r})")
    positive_int("n", n)
    positive_int("k", k)
    strategies = get_strategies(strategies)
    first_strategy = get_strategy(first_strategy) if first_strategy is not None else Full()
    data_a, data_b = load_data(first), load_data(then)
    seed = int(train_overrides.get("seed", 0))
    metric = primary(task)

    def score(m, data, key: str = metric.key) -> float:
        return evaluate(m, data, split=split, size=size, seed=seed, precision="fp32", device="cpu")[key]

    if first_run is not None:
        first_run = first_run if isinstance(first_run, Run) else load_run(first_run)
        if first_run.task != task:
            raise ConfigError(f"first_run: it is a {first_run.task!r} run, not {task!r}")
        if task == "classification" and first_run.config["model"].get("label_names") != data_a.label_names:
            raise ConfigError(f"first_run: its labels {first_run.config['model'].get('label_names')} are not "
                              f"those of first ({data_a.label_names}); it must have learned task A")
        model = first_run.model_source
    pretrained = load_for(model, data_a, task, seed)
    for s in strategies:  # every strategy checked before anything trains
        for phase in s.phases():
            phase.strategy.plan(pretrained)
    texts = _held_out(data_a, split, n, seed)
    base_emb = embeddings(pretrained, texts)
    base_a = score(pretrained, data_a, "perplexity") if task != "classification" else None

    run_a = first_run or Trainer(copy_model(pretrained), data_a, first_strategy, **train_overrides).run()
    model_a = run_a.load_model(merged=True)
    a_before = score(model_a, data_a)
    a_emb = embeddings(model_a, texts)
    head_a = {k_: v.detach().clone() for k_, v in model_a.head().state_dict().items()} \
        if task == "classification" else None

    rows = []
    for strategy in strategies:
        model_b = copy_model(model_a)
        if task == "classification":
            apply_steps(model_b, [{"labels": data_b.label_names, "seed": seed}])
        b_before = score(model_b, data_b)
        run_b = Trainer(model_b, data_b, strategy, **train_overrides).run()
        b_after = score(run_b.model, data_b)
        if task == "classification":
            after = _swap_head(run_b.model, head_a, data_a.label_names)
        else:
            after = copy_model(run_b.model)
            if after.peft is not None:
                after.replace_hf(adapters.merge_and_unload(after.peft))
        a_after = score(after, data_a)
        b_emb = embeddings(after, texts)
        sign = 1 if metric.higher_is_better else -1
        row = {"strategy": strategy.label, "a_before": a_before, "a_after": a_after,
               "forgot": sign * (a_before - a_after), "b_before": b_before, "b_after": b_after,
               "learned": sign * (b_after - b_before), "drift": 1 - linear_cka(a_emb, b_emb),
               "knn_agreement": knn_agreement(a_emb, b_emb, k), "drift_from_base": 1 - linear_cka(base_emb, b_emb),
               "run": run_b.name, "first_run": run_a.name}
        if base_a is not None:  # a language model: how much likelier or less likely A's texts became
            a_ppl = a_after if metric.key == "perplexity" else score(after, data_a, "perplexity")
            row["perplexity_change"] = (a_ppl - base_a) / base_a
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update({"metric": metric.key, "higher_is_better": metric.higher_is_better, "split": split,
                      "first": data_a.name, "then": data_b.name, "first_run": run_a.name, "n": len(texts)})
    return out
