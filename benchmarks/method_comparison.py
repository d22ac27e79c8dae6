"""Every adaptation method at comparable trainable budgets, side by side (issue 23).

One ``tk.experiment`` over the methods (the built-in MiniLM on Rotten Tomatoes, or BBC News), so
every number is a test accuracy with its 95 % interval over seeds and test examples, and every
method is compared with LoRA on the same seeds and examples (a paired difference). Per method:

- **trainable parameters** (``strategy.count(model)``) and the budget each was given: ``--rank``
  sets LoRA's rank, its count is the budget, and every method with a rank (DoRA, PiSSA, LoHa,
  LoKr, VeRA) takes the rank whose count is closest to it; AdaLoRA gets ``target_rank=--rank``
  (it starts at 1.5 x that and ends, on average, at LoRA's budget). IA3 and LayerNorm tuning have
  no size to set, VeRA and LoKr reach a ceiling on these layers; probe, the top block and full
  fine-tuning are references, not at the budget. The budget table says how far each is from it.
- **cost**: the measured peak training memory and the training time per optimizer step, from
  the run records' summaries (``peak_memory_mb``, ``train_time_s / steps``; a probe's includes
  its one feature pass);
- **forgetting**: the representation drift of held-out (validation) texts, the linear CKA of the
  base and tuned hidden states (``tk.inspect.representation_drift``), its mean over layers and
  at the last layer (1: nothing moved);
- **magnitude and direction** (DoRA paper, section 2) for full fine-tuning, LoRA and DoRA: the
  Pearson r of ΔD and ΔM over the changed block matrices of each run, with its 95 % interval
  (Fisher z, as the figure's titles), over all of them and over query / value alone (the
  matrices all three change). The paper saw full fine-tuning and DoRA negative, LoRA positive;
  the script prints what these runs show, whichever way it falls.

- **the figures side by side** (``--figures PAGE.html``, by default beside ``--json``): for seed 0
  of every method, tunekit's report with the weight change per module, the magnitude and direction
  of each update and the representation drift, a panel per run.

``--causal-lm`` also trains the methods (not the probe; prefix tuning, which peft has for a language
model only, joins here) on SmolLM2-135M as a language model on BBC News and reports the test
perplexity per method with a 95 % interval over seeds and test articles (each text's own loss,
``tk.text_losses``; a two-level bootstrap of the token-weighted loss, as the classification
intervals are over seeds and test examples), each method paired with LoRA on the same seeds and
texts (its perplexity over LoRA's, with an interval: inside the noise when it holds 1), and
forgetting as the perplexity on Rotten Tomatoes reviews, text it was not tuned on, against the
base model's. ``--causal-lm-only`` runs that part alone.

    .venv/bin/python benchmarks/method_comparison.py                    # the reduced CPU grid (6.6 min, 2 cores)
    .venv/bin/python benchmarks/method_comparison.py --sizes 2000 --seeds 3 --epochs 3 --data bbc_news
    .venv/bin/python benchmarks/method_comparison.py --methods lora,dora,full --causal-lm
    .venv/bin/python benchmarks/method_comparison.py --smoke            # a tiny random model, seconds
    .venv/bin/python benchmarks/method_comparison.py --json methods.json   # -> benchmarks/results/methods.json

Its defaults are the reduced CPU grid: every method, 1,000 training reviews, 2 seeds, 1 epoch,
batch 8, reported on 400 test reviews (``benchmarks/RESULTS.md`` has what it measured). Run it
alone: on 2 cores two heavy processes slow each other down several-fold (beside a test suite the
same grid took 29 min instead of 6.6, and the time per step is then no measure of the method).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import tunekit as tk  # noqa: E402
from tunekit.config import ConfigError  # noqa: E402
from tunekit.metrics import correlation_interval  # noqa: E402  (the interval the magnitude/direction figure gives)
from tunekit.post.base import machine as cpu  # noqa: E402  (the CPU, as the post-training records say it)
from tunekit.runs import Run  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("probe", "freeze", "full", "lora", "dora", "pissa", "adalora", "loha", "lokr", "vera", "ia3", "ln_tuning",
           "prompt_tuning", "prefix_tuning", "prefix_text")
CAUSAL_ONLY = ("prefix_tuning", "prefix_text")
"""Methods peft has for a language model only: the classification grid leaves them out, in words."""
RANKED = {"lora": lambda r: tk.LoRA(rank=r), "dora": lambda r: tk.DoRA(rank=r),
          "pissa": lambda r: tk.LoRA(rank=r, init="pissa"), "loha": lambda r: tk.LoHa(rank=r),
          "lokr": lambda r: tk.LoKr(rank=r), "vera": lambda r: tk.VeRA(rank=r),
          "prompt_tuning": lambda r: tk.PromptTuning(tokens=r), "prefix_tuning": lambda r: tk.PrefixTuning(tokens=r),
          # the prefix started from the model's own keys and values for a line of words (not peft's random start)
          "prefix_text": lambda r: tk.PrefixTuning(tokens=r, init="text", init_text=PREFIX_WORDS)}
PREFIX_WORDS = "The following is a news article from the BBC."
"""Methods with a size (a rank; prompt tuning's virtual tokens): each gets the size whose trainable
count is closest to LoRA's."""
FIXED = {"probe": tk.Probe, "freeze": lambda: tk.Freeze.top(1), "full": tk.Full, "ia3": tk.IA3,
         "ln_tuning": tk.LNTuning}
REFERENCES = ("probe", "freeze", "full")
PATTERN = {"full": "negative", "dora": "negative", "lora": "positive"}
"""The signs of corr(ΔD, ΔM) the DoRA paper reports (Liu et al. 2024, section 2)."""
SHARED_MODULES = ("query", "value")
"""The matrices full fine-tuning, LoRA and DoRA all change (LoRA's default targets on BERT)."""


def machine() -> str:
    return f"{cpu()}, torch {torch.__version__}"


# ----- budgets ------------------------------------------------------------------------------------
def _count(make, rank: int, model) -> int | None:
    """The trainable count of ``make(rank)`` on ``model``; None where the rank does not fit."""
    try:
        return make(rank).count(model)["trainable"]
    except ConfigError:
        return None


def closest_rank(make, model, budget: int, top: int = 4096) -> int:
    """The rank whose trainable count is closest to ``budget`` (the smaller on a tie), among the
    ranks that fit the target layers; where no rank reaches it, the smallest rank of the largest
    count (a binary search: counts grow with the rank, or stay)."""
    lo, hi = 1, top
    while lo < hi:  # the largest rank that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _count(make, mid, model) is not None else (lo, mid - 1)
    largest = lo
    target = min(budget, _count(make, largest, model))
    lo, hi = 1, largest
    while lo < hi:  # the smallest rank whose count reaches the target
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _count(make, mid, model) >= target else (mid + 1, hi)
    candidates = [r for r in (lo - 1, lo) if r >= 1]
    return min(candidates, key=lambda r: (abs(_count(make, r, model) - budget), r))


def _size(method: str, r: int) -> str:
    return f"{r} virtual tokens" if method in ("prompt_tuning", "prefix_tuning", "prefix_text") else f"rank {r}"


def at_budget(methods, model, rank: int) -> tuple[dict, pd.DataFrame]:
    """``{method: strategy}`` at LoRA rank ``rank``'s trainable budget, and the budget table."""
    budget = tk.LoRA(rank=rank).count(model)["trainable"]
    strategies, rows = {}, []
    for method in methods:
        note = ""
        if method == "adalora":
            s = tk.AdaLoRA(target_rank=rank)
            note = f"starts at rank {s.init_rank}; ends at {rank} on average (LoRA's budget)"
        elif method in RANKED:
            # DoRA and PiSSA are LoRA at LoRA's rank (DoRA adds a magnitude per output feature);
            # the others take the rank whose count is closest to LoRA's
            r = rank if method in ("lora", "dora", "pissa") else closest_rank(RANKED[method], model, budget)
            s = RANKED[method](r)
            trainable = s.count(model)["trainable"]
            if method == "dora":
                note = "LoRA's rank, plus a magnitude per output feature"
            elif r != rank and trainable < budget and _count(RANKED[method], r + 1, model) in (None, trainable):
                note = f"{_size(method, r)}: its largest size on these layers"
            elif r != rank:
                note = f"{_size(method, r)}, the closest count"
        else:
            s = FIXED[method]()
            note = "a reference, not at the budget" if method in REFERENCES else "no size to set"
        strategies[method] = s
        trainable = s.count(model)["trainable"]
        rows.append({"method": method, "strategy": s.label, "trainable": trainable,
                     "x budget": trainable / budget, "note": note})
    table = pd.DataFrame(rows)
    table.attrs["budget"] = budget
    return strategies, table


# ----- the instruments ----------------------------------------------------------------------------
def per_step(runs) -> tuple[float, float]:
    """Mean milliseconds per optimizer step and mean peak memory (MB) of ``runs``' summaries."""
    ms = [1000 * r.summary["train_time_s"] / r.summary["steps"] for r in runs if r.summary.get("steps")]
    mb = [r.summary["peak_memory_mb"] for r in runs if r.summary.get("peak_memory_mb") is not None]
    return (float(np.mean(ms)) if ms else float("nan")), (float(np.mean(mb)) if mb else float("nan"))


def sign(c) -> str:
    """``negative`` / ``positive`` where the interval leaves out 0, else ``inside the noise``."""
    if c is None:
        return "too few matrices"
    return "negative" if c[2] < 0 else "positive" if c[1] > 0 else "inside the noise"


def magnitude_direction(runs_by_method: dict) -> tuple[list[dict], list[str]]:
    """Per run of full / LoRA / DoRA: corr(ΔD, ΔM) with its interval, over every changed block
    matrix and over query / value alone; and the sentences that say what was seen."""
    wanted = [r for m in PATTERN for r in runs_by_method.get(m, [])]
    if not wanted:
        return [], []
    table = tk.inspect.magnitude_direction(wanted)
    method_of = {r.name: m for m in PATTERN for r in runs_by_method.get(m, [])}
    rows = []
    for run, d in table.groupby("run", sort=False):
        shared = d[d["module"].isin(SHARED_MODULES)]
        c_all = correlation_interval(d["delta_d"], d["delta_m"])
        c_qv = correlation_interval(shared["delta_d"], shared["delta_m"])
        rows.append({"method": method_of[run], "run": run, "matrices": len(d), "r": c_all and c_all[0],
                     "low": c_all and c_all[1], "high": c_all and c_all[2], "sign": sign(c_all),
                     "qv_matrices": len(shared), "qv_r": c_qv and c_qv[0], "qv_low": c_qv and c_qv[1],
                     "qv_high": c_qv and c_qv[2], "qv_sign": sign(c_qv)})
    said = []
    for method, expected in PATTERN.items():
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        for p, where in (("", "every changed matrix"), ("qv_", "query/value")):  # the columns' prefix
            signs = [r[p + "sign"] for r in mine]
            rs = ", ".join("n/a" if r[p + "r"] is None else
                           f"{r[p + 'r']:+.2f} [{r[p + 'low']:+.2f}, {r[p + 'high']:+.2f}]" for r in mine)
            said.append(f"{method} ({where}): r per seed {rs}; {signs.count(expected)} of {len(mine)} "
                        f"{expected} as in the paper, {signs.count('inside the noise')} inside the noise")
    verdicts = {m: [r["qv_sign"] for r in rows if r["method"] == m] for m in PATTERN}
    present = [m for m in PATTERN if verdicts[m]]
    if present:
        held = [m for m in present if all(s == PATTERN[m] for s in verdicts[m])]
        missed = [m for m in present if m not in held]
        whole = len(present) == len(PATTERN) and not missed
        said.append(("The DoRA paper's pattern (full and DoRA negative, LoRA positive) was seen on query/value in "
                     "every seed" if whole else
                     "The DoRA paper's pattern (full and DoRA negative, LoRA positive) was not seen as a whole "
                     f"on query/value: as in the paper in every seed: {', '.join(held) or 'none'}; "
                     f"not: {', '.join(missed) or 'none'}"
                     + ("" if len(present) == len(PATTERN) else
                        f"; not trained: {', '.join(m for m in PATTERN if m not in present)}")) + ".")
    return rows, said


def drift(runs_by_method: dict, data, n: int) -> dict:
    """``{method: (mean CKA over layers, CKA at the last layer)}``, each the mean over the seeds."""
    runs = [r for rs in runs_by_method.values() for r in rs]
    table = tk.inspect.representation_drift(runs, data=data, n=n, seed=0)
    last = table["layer"].max()
    out = {}
    for method, rs in runs_by_method.items():
        mine = table[table["run"].isin([r.name for r in rs])]
        out[method] = (float(mine.groupby("run")["cka"].mean().mean()),
                       float(mine[mine["layer"] == last]["cka"].mean()))
    return out


def figures(args, runs_by_method: dict, data, path: Path) -> Path:
    """The figures side by side, for seed 0 of every method, as one HTML page (tunekit's report):
    the runs table, the weight change per module (a panel per run), the magnitude and direction
    of each update (a panel per run that changed block matrices) and the representation drift."""
    first = [rs[0] for rs in runs_by_method.values() if rs]
    pairs = tk.inspect.load_pairs(first)
    colours = tk.plots.colors(first)
    extra = [("Weight change per module (seed 0 of each method)",
              tk.plots.weight_change_heatmap(tk.plots.named(tk.inspect.weight_change(pairs), first)))]
    md = tk.plots.named(tk.inspect.magnitude_direction(pairs), first)
    if len(md):
        extra.append(("Magnitude and direction of each update (DoRA paper, section 2)",
                      tk.plots.magnitude_direction(md, colors=colours)))
    drift = tk.inspect.representation_drift(pairs, data=data, n=args.drift_n, seed=0)
    extra.append(("Representation drift (linear CKA, base vs tuned)",
                  tk.plots.cka_by_layer(tk.plots.named(drift, first), colors=colours)))
    return tk.report.write_report(first, path, title=f"The PEFT family side by side ({args.data}, seed 0)",
                                  extra=extra)


# ----- the classifier grid -----------------------------------------------------------------------
def said_cell(event: dict) -> None:
    """One line per finished cell (the experiment's callback)."""
    if event["event"] == "cell_end":
        c = event["cell"]
        acc = f"test accuracy {c['test_accuracy']:.3f}" if "test_accuracy" in c else c.get("reason")
        print(f"  {c['strategy']}, {c['size']:,} examples, seed {c['seed']}: {c['status']}, {acc}, "
              f"{c.get('wall_time_s') or 0:.0f} s", flush=True)


def classification(args, methods, model_source: str, root: Path) -> dict:
    left = [m for m in methods if m in CAUSAL_ONLY]
    if left:
        print(f"Classification leaves out {', '.join(left)}: peft has it for a causal LM only")
    methods = [m for m in methods if m not in CAUSAL_ONLY]
    if not methods:
        return {"left_out": left}
    data = tk.data.load(args.data)
    model = tk.models.load_for(model_source, data, "classification", 0)
    strategies, budget = at_budget(methods, model, args.rank)
    del model
    print(f"Budget: LoRA rank {args.rank} = {budget.attrs['budget']:,} trainable parameters")
    print(budget.to_string(index=False, formatters={"x budget": "{:.2f}".format}), flush=True)
    label = {m: s.label for m, s in strategies.items()}
    t0 = time.perf_counter()
    exp = tk.experiment(list(strategies.values()), data, sizes=args.sizes, seeds=args.seeds, model=model_source,
                        name="methods", runs_dir=str(root), epochs=args.epochs, batch_size=args.batch_size,
                        eval_size=args.eval_size, test_size=args.test_size, max_length=args.max_length,
                        lr=args.lr, tune_trials=args.tune_trials, progress=False, callback=said_cell)
    train_s = time.perf_counter() - t0
    print(f"\n{len(exp.done())} cells trained and scored in {train_s:.0f} s", flush=True)
    table = exp.table()
    size = max(args.sizes)
    runs_by_method = {m: [Run(exp.path.parent / c["run"]) for c in exp.done()
                          if c["strategy"] == label[m] and c["size"] == size] for m in methods}
    t0 = time.perf_counter()
    forgetting = drift(runs_by_method, data, args.drift_n)
    md_rows, said = magnitude_direction(runs_by_method)
    if args.figures:
        print(f"wrote the figures side by side: {figures(args, runs_by_method, data, args.figures)}")
    instruments_s = time.perf_counter() - t0
    rows = []
    for method in methods:
        at = table[(table["strategy"] == label[method]) & (table["size"] == size)]
        ms, mb = per_step(runs_by_method[method])
        versus = (exp.compare(label[method], label["lora"]) if "lora" in methods and method != "lora"
                  else pd.DataFrame())
        versus = versus[versus["size"] == size] if len(versus) else versus
        rows.append({"method": method, "strategy": label[method],
                     "trainable": int(budget.set_index("method").at[method, "trainable"]),
                     "accuracy": float(at["accuracy"].iloc[0]), "low": float(at["low"].iloc[0]),
                     "high": float(at["high"].iloc[0]), "seeds": int(at["seeds"].iloc[0]),
                     "vs_lora": float(versus["difference"].iloc[0]) if len(versus) else None,
                     "vs_lora_low": float(versus["low"].iloc[0]) if len(versus) else None,
                     "vs_lora_high": float(versus["high"].iloc[0]) if len(versus) else None,
                     "vs_lora_said": versus["said"].iloc[0] if len(versus) else None,
                     "peak_memory_mb": mb, "ms_per_step": ms,
                     "mean_cka": forgetting[method][0], "last_cka": forgetting[method][1]})
    out = pd.DataFrame(rows)
    shown = out.assign(**{"95 % interval": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(out["low"], out["high"])]})
    print(f"\nTest accuracy at {size:,} training examples ({args.data}, {len(exp.done()) // len(methods)} cells "
          f"per method), cost and forgetting:")
    print(shown[["method", "strategy", "trainable", "accuracy", "95 % interval", "peak_memory_mb", "ms_per_step",
                 "mean_cka", "last_cka"]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if "lora" in methods:
        print("\nPaired with LoRA (same seeds, same test examples):")
        for s in out["vs_lora_said"].dropna():
            print("  " + s)
    if said:
        print("\nMagnitude and direction, corr(ΔD, ΔM) per run with its 95 % interval (Fisher z):")
        for s in said:
            print("  " + s)
    print(f"\n(the instruments took {instruments_s:.0f} s)", flush=True)
    return {"budget": budget.attrs["budget"], "budget_table": budget.to_dict("records"),
            "table": table.to_dict("records"), "methods": rows, "magnitude_direction": md_rows,
            "magnitude_direction_said": said, "train_s": train_s, "instruments_s": instruments_s}


# ----- the language model ------------------------------------------------------------------------
def causal_lm(args, methods, source: str, root: Path) -> dict:
    """The methods (not the probe) on ``source`` as a causal LM on BBC News, per seed; the test
    perplexity of each run on one seeded subset of articles, with its interval over seeds and
    articles, and paired with LoRA's; and forgetting: the same on text it was not tuned on (Rotten
    Tomatoes reviews), against the base's."""
    data, other = tk.data.bbc_news(), tk.data.rotten_tomatoes()
    methods = [m for m in methods if m != "probe"]
    model = tk.load_model(source, task="causal_lm")
    strategies, budget = at_budget(methods, model, args.rank)
    print(f"\nCausal LM ({source}, BBC News). Budget: LoRA rank {args.rank} = {budget.attrs['budget']:,}")
    print(budget.to_string(index=False, formatters={"x budget": "{:.2f}".format}))
    test = dict(split="test", size=args.lm_test_size, seed=0, max_length=args.lm_max_length)

    def losses(run_or_model, text):  # per-text losses, on the same seeded texts for every run
        return tk.text_losses(run_or_model, text, **test)

    base = {"tuned": losses(model, data), "other": losses(model, other)}
    del model
    runs = {m: [] for m in methods}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        trained = tk.compare(list(strategies.values()), data, model=source, task="causal_lm",
                             train_size=args.lm_size, eval_size=args.lm_test_size, epochs=args.epochs,
                             max_length=args.lm_max_length, batch_size=args.lm_batch_size, seed=seed,
                             runs_dir=str(root / "lm"), progress=False,
                             **({"lr": args.lr} if isinstance(args.lr, float) else {}))  # no search here
        for m, run in zip(methods, trained):
            runs[m].append(run)
    train_s = time.perf_counter() - t0
    tokens = {k: df["tokens"].to_numpy() for k, df in base.items()}
    rows, per_text = [], {}
    for m in methods:
        done = [r for r in runs[m] if r.status == "completed"]
        per_text[m] = {k: np.array([losses(r, data if k == "tuned" else other)["loss"] for r in done])
                       for k in ("tuned", "other")}
        ms, mb = per_step(done)
        row = {"method": m, "strategy": strategies[m].label,
               "trainable": int(budget.set_index("method").at[m, "trainable"]), "seeds": len(done),
               "peak_memory_mb": mb, "ms_per_step": ms}
        for k, prefix in (("tuned", ""), ("other", "other_")):
            values = per_text[m][k]
            ppl, lo, hi = tk.metrics.perplexity_interval(values, tokens[k]) if len(done) else (float("nan"),) * 3
            row.update({f"{prefix}perplexity": ppl, f"{prefix}low": lo, f"{prefix}high": hi})
        rows.append(row)
    out = pd.DataFrame(rows)
    before, before_other = (math.exp(np.average(df["loss"], weights=df["tokens"])) for df in base.values())
    print(f"Test perplexity ({args.lm_test_size} articles, {args.lm_max_length} tokens at most; before "
          f"training {before:.2f}) and forgetting: perplexity on {args.lm_test_size} Rotten Tomatoes reviews, "
          f"not tuned on (before training {before_other:.2f}); mean over seeds with its 95 % interval over "
          "seeds and texts (a two-level bootstrap of the token-weighted loss):")
    print(out.to_string(index=False, float_format=lambda v: f"{v:.2f}"), flush=True)
    paired = []
    if "lora" in methods and len(per_text["lora"]["tuned"]):
        print("\nPaired with LoRA (same seeds, same texts; perplexity over LoRA's, under 1: better):")
        for m in methods:
            a, b = per_text[m]["tuned"], per_text["lora"]["tuned"]
            if m == "lora" or a.shape != b.shape:
                continue
            said = tk.metrics.paired_perplexity(a, b, tokens["tuned"], strategies[m].label, strategies["lora"].label)
            forgot = tk.metrics.paired_perplexity(per_text[m]["other"], per_text["lora"]["other"], tokens["other"],
                                                  strategies[m].label, strategies["lora"].label)
            print(f"  {said['said']}; on the reviews: x{forgot['ratio']:.3f} [{forgot['low']:.3f}, "
                  f"{forgot['high']:.3f}]", flush=True)
            paired.append({"method": m, **{k: said[k] for k in ("ratio", "low", "high", "inside_noise", "said")},
                           "other_ratio": forgot["ratio"], "other_low": forgot["low"], "other_high": forgot["high"]})
    return {"model": source, "before": before, "before_other": before_other, "budget": budget.attrs["budget"],
            "budget_table": budget.to_dict("records"), "methods": rows, "paired_with_lora": paired,
            "train_s": train_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS), help=f"a comma list of {', '.join(METHODS)}")
    ap.add_argument("--rank", type=int, default=2, help="LoRA's rank; its trainable count is the budget")
    ap.add_argument("--data", default="rotten_tomatoes", choices=["rotten_tomatoes", "bbc_news"])
    ap.add_argument("--sizes", default="1000", help="training-set sizes (the instruments use the largest)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--eval-size", type=int, default=100, help="validation examples watched while training")
    ap.add_argument("--test-size", type=int, default=400, help="test examples every accuracy is reported on")
    ap.add_argument("--lr", default=None, help="a learning rate for every method, or 'tune' (the experiment's "
                    "search per method, --tune-trials runs each); default: each method's own")
    ap.add_argument("--tune-trials", type=int, default=4)
    ap.add_argument("--drift-n", type=int, default=128, help="held-out texts the representation drift reads")
    ap.add_argument("--causal-lm", action="store_true", help="also SmolLM2-135M as a causal LM (perplexity)")
    ap.add_argument("--causal-lm-only", action="store_true", help="the causal LM alone (no classification grid)")
    ap.add_argument("--lm-size", type=int, default=200)
    ap.add_argument("--lm-test-size", type=int, default=50)
    ap.add_argument("--lm-max-length", type=int, default=128)
    ap.add_argument("--lm-batch-size", type=int, default=8)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on a tiny random model: checks the script")
    ap.add_argument("--json", default=None, help="write the results here (a bare name: under benchmarks/results/)")
    ap.add_argument("--figures", default=None, help="write the figures side by side (weight change, magnitude and "
                    "direction, drift; seed 0 of each method) to this HTML page (default: beside --json)")
    args = ap.parse_args()
    args.causal_lm = args.causal_lm or args.causal_lm_only
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        ap.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    if args.smoke:
        args.sizes, args.seeds, args.epochs, args.batch_size, args.max_length = "32", 2, 1, 8, 32
        args.eval_size, args.test_size, args.drift_n = 16, 32, 8
        args.lm_size, args.lm_test_size, args.lm_max_length, args.lm_batch_size = 16, 8, 24, 4
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.json and not args.figures:
        json_path = Path(args.json)
        args.figures = str((RESULTS / json_path if json_path.parent == Path(".") else json_path).with_suffix(".html"))
    if args.lr not in (None, "tune"):
        args.lr = float(args.lr)
    out = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "torch_threads": torch.get_num_threads(),
           "args": {k: v for k, v in vars(args).items() if k != "json"}, "methods": methods}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        if args.smoke:
            classifier = str(tk.make_tiny_bert(root / "tiny-bert"))
            decoder = str(tk.tiny.make_tiny("llama", root / "tiny-llama")) if args.causal_lm else None
        else:
            classifier, decoder = "minilm", "smollm2"
        if not args.causal_lm_only:
            out["classification"] = classification(args, methods, classifier, root)
        if args.causal_lm:
            out["causal_lm"] = causal_lm(args, methods, decoder, root)
    out["total_s"] = time.perf_counter() - t0
    print(f"\n{out['machine']}: {out['total_s']:.0f} s in all")
    if args.json:
        path = Path(args.json)
        path = RESULTS / path if path.parent == Path(".") else path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1, default=float))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
