"""The ``tunekit`` command: compare strategies from a shell, list past runs.

    tunekit compare --strategies probe,freeze,lora:4,full --epochs 1 --train-size 1000
    tunekit runs --runs-dir ./tunekit-runs --report old-runs.html
    tunekit evaluate lora-r8-20261201-101500 --split test
    tunekit export notebooks/*.ipynb --execute -p TRAIN_SIZE=200 --out site
    tunekit prune RUN --sparsity 0.3,0.5,0.7          (or --method heads --amount 4)
    tunekit quantize RUN --method int8-dynamic
    tunekit distil RUN --student 0,2,4 --loss response+feature --baseline
    tunekit forgetting --strategies probe,lora,full --first rotten_tomatoes --then bbc_news
    tunekit import hf-output/checkpoint-500 --data rotten_tomatoes   (or a fine-tune: --base B)
    tunekit experiment --strategies probe,freeze:2,lora:8,full --sizes 100,300,1000 --seeds 3
    python -m tunekit.cli compare ...

``compare`` trains each strategy on a fresh copy of the same model and data
(:func:`tunekit.engine.compare`), prints a table, and writes one self-contained
HTML report. Strategy specs: ``probe``, ``full``, ``lpft``, ``ia3``, ``ln_tuning``,
``lora`` / ``dora`` / ``vera`` / ``loha`` / ``lokr`` (each also as ``NAME:RANK``),
``freeze`` (train the top 2 blocks) or ``freeze:K`` (the top K).
``evaluate`` prints a run's metrics on a split (:func:`tunekit.evaluate`).
``prune``, ``quantize`` and ``distil`` read a run and write a record of their own kind
(:mod:`tunekit.post`), printing its numbers beside its parent's; ``forgetting`` prints
what learning a second task cost the first, per strategy. ``import`` writes a record of
an adapter or a fine-tune made elsewhere (:func:`tunekit.imports.import_run`).

Exit status: 0 done; 1 some run failed (it is still in the table and the report);
2 bad input (the message names the option); 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from tunekit import arguments
from tunekit.arguments import InputError, open_run, parse_strategies, strategy_specs
from tunekit.config import DEFAULT_RUNS_DIR, SCHEDULES, ConfigError, TunekitError
from tunekit.post.cli import FIELD_OPTIONS as POST_FIELD_OPTIONS
from tunekit.post.cli import add_commands as add_post_commands
from tunekit.strategy_registry import STRATEGIES

# ConfigError messages start with the field they are about; this maps fields to options (the
# post-training commands' fields are in tunekit.post.cli, beside those commands).
_FIELD_OPTIONS = {"lr_decay": "--lr-decay", "schedule": "--schedule", "warmup": "--warmup", "start": "--start",
                  "end": "--end", "steps": "--steps",
                  "epochs": "--epochs", "lr": "--lr", "batch_size": "--batch-size", "seed": "--seed",
                  "train_size": "--train-size", "eval_size": "--eval-size", "runs_dir": "--runs-dir",
                  "max_length": "--max-length", "device": "--device",
                  **{class_name: "--strategies" for class_name in STRATEGIES.values()},  # "LoRA.rank ..."
                  "strategy": "--strategies", "unknown strategy": "--strategies",
                  "model": "--model", "data": "--data", "task": "--task", "split": "--split",
                  "sizes": "--sizes", "seeds": "--seeds", "test_size": "--test-size", "experiment": "--name",
                  "tune_trials": "--tune-trials", "storage": "--storage",
                  **POST_FIELD_OPTIONS}


# ExportError messages start with "field: "; this maps those fields to options of `tunekit export`.
_EXPORT_OPTIONS = {"params": "--param", "notebooks": "NOTEBOOK", "notebook": "NOTEBOOK", "out": "--out"}


def _option_for(message: str, parser: Optional[argparse.ArgumentParser] = None) -> Optional[str]:
    """The option a ConfigError's message is about, as ``parser`` (the subcommand's) spells it:
    ``train`` takes one ``--strategy`` where ``compare`` takes ``--strategies``."""
    for field, option in _FIELD_OPTIONS.items():
        if message.startswith(field):
            if parser is not None and option == "--strategies" and "--strategies" not in parser._option_string_actions:
                return "--strategy" if "--strategy" in parser._option_string_actions else None
            return option
    return None


# ----- the parser -----------------------------------------------------------------------------
def _training_options(c: argparse.ArgumentParser) -> None:
    """The options ``compare`` and ``train`` share."""
    c.add_argument("--task", default="classification", choices=TASK_CHOICES,
                   help="classification (a new head on the labels), causal_lm (next-token loss on the "
                        "texts; labels ignored), sft (a decoder on prompt -> response pairs, the loss on the "
                        "response) or seq2seq (an encoder-decoder such as T5 or BART on source -> target pairs); "
                        "for both, --data is a CSV with source and target columns, default bbc_headlines "
                        "(default %(default)s)")
    c.add_argument("--instruction", default=None,
                   help="sft, seq2seq: text put before each source (e.g. 'Write a headline for this "
                        "article.'; T5: 'summarize:')")
    c.add_argument("--generate", type=arguments.positive_int, default=None,
                   help="sft, seq2seq: how many validation pairs each evaluation writes a response for and scores "
                        "(ROUGE, BLEU, chrF) (default 16)")
    c.add_argument("--max-new-tokens", type=arguments.positive_int, default=None,
                   help="sft, seq2seq: the most tokens a generated response has (default 32)")
    c.add_argument("--epochs", type=arguments.positive_int, default=1,
                   help="passes over the training subset (default 1)")
    c.add_argument("--train-size", type=arguments.size, default=1000,
                   help="training examples, a seeded subset; 'all' for the whole split (default 1000)")
    c.add_argument("--eval-size", type=arguments.size, default=500,
                   help="validation examples, a seeded subset; 'all' for the whole split (default 500)")
    c.add_argument("--model", default="minilm",
                   help="built-in name (minilm, smollm2), a model directory or a cached hub id (default minilm)")
    c.add_argument("--data", default=None,
                   help="built-in data set (rotten_tomatoes, bbc_news, bbc_headlines) or a CSV file with text "
                        "and label columns (--task sft or seq2seq: source and target columns) (default "
                        "rotten_tomatoes; bbc_headlines for --task sft or seq2seq)")
    c.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="where run records go (default %(default)s)")
    c.add_argument("--report", default="tunekit-report.html", help="HTML report to write (default %(default)s)")
    c.add_argument("--title", default=None, help="report title (default: data and model)")
    c.add_argument("--seed", type=arguments.seed, default=0,
                   help="seed for sub-sampling, shuffling and the head (default 0)")
    c.add_argument("--lr", type=arguments.positive_float, default=None,
                   help="peak learning rate for every strategy (default: each strategy's own)")
    c.add_argument("--lr-decay", type=arguments.decay, default=None,
                   help="discriminative rates: each layer group's rate is this factor of the one above it "
                        "(the head at --lr, the top block one factor lower, ...), in (0, 1] (default: one rate)")
    c.add_argument("--schedule", default="linear", choices=SCHEDULES,
                   help="the learning-rate schedule (default %(default)s; tunekit.TrainConfig says each)")
    c.add_argument("--warmup", type=arguments.fraction, default=0.1,
                   help="fraction of the steps warming up (one_cycle, slanted_triangular: rising), in [0, 1) "
                        "(default %(default)s)")
    c.add_argument("--batch-size", type=arguments.positive_int, default=16,
                   help="training examples per step (default 16)")
    c.add_argument("--max-length", type=arguments.positive_int, default=128,
                   help="tokens per example; longer texts are truncated (default 128)")
    c.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    c.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 autocast on CUDA and on CPUs with AMX / AVX-512-BF16, else fp32 (default auto)")
    c.add_argument("--no-group-by-length", action="store_true",
                   help="plain shuffled batches instead of length-grouped ones (which pad less)")
    c.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    c.add_argument("--log-every", type=arguments.positive_int, default=None,
                   help="log the loss every N steps (default: every step on the CPU, every 10 on a GPU)")


TASK_CHOICES = ("classification", "causal_lm", "sft", "seq2seq")
PAIR_TASKS = ("sft", "seq2seq")


def _task_options(args) -> dict:
    """A text-to-text task's options from the command line (refused for the other tasks)."""
    given = {k: v for k, v in (("instruction", getattr(args, "instruction", None)),
                               ("examples", getattr(args, "generate", None)),
                               ("max_new_tokens", getattr(args, "max_new_tokens", None))) if v is not None}
    if given and getattr(args, "task", None) not in PAIR_TASKS:
        option = {"instruction": "--instruction", "examples": "--generate", "max_new_tokens": "--max-new-tokens"}
        raise InputError(option[next(iter(given))], "is for --task sft or seq2seq")
    out = {"instruction": given["instruction"]} if "instruction" in given else {}
    generation = {k: given[k] for k in ("examples", "max_new_tokens") if k in given}
    return {**out, **({"generation": generation} if generation else {})}


def _train_overrides(args) -> dict:
    return dict(task=args.task, epochs=args.epochs, train_size=args.train_size, eval_size=args.eval_size,
                seed=args.seed, lr=args.lr, lr_decay=args.lr_decay, schedule=args.schedule, warmup=args.warmup,
                batch_size=args.batch_size, max_length=args.max_length, device=args.device, runs_dir=args.runs_dir,
                progress=not args.no_progress,
                precision=args.precision, group_by_length=not args.no_group_by_length,
                compile=args.compile, log_every=args.log_every)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunekit", description="Compare ways of adapting a pretrained "
                                     "language model: probe, freeze, LoRA, full fine-tuning.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser("compare", help="train several strategies side by side and write an HTML report",
                       description="Train each strategy on a fresh copy of the same model with the same data "
                                   "and seed; print a table and write a self-contained HTML report.")
    c.add_argument("--strategies", default="probe,lora,full",
                   help=f"comma list of {strategy_specs(explain=True)} (default: %(default)s)")
    _training_options(c)
    c.add_argument("--no-inspect", action="store_true",
                   help="leave the instruments (weight change, spectra, CKA, PCA, attributions) out of the report")
    c.add_argument("--sentence", default=None,
                   help="sentence whose token attributions the report shows (default: a built-in review)")
    c.set_defaults(run=cmd_compare, parser=c)

    t = sub.add_parser("train", help="train one strategy and write its run record",
                       description="Train one strategy and write its run record. Under torchrun or "
                                   "accelerate launch every process trains (--batch-size is the global "
                                   "batch) and the main process writes the one record.")
    t.add_argument("--strategy", default="lora", help=f"one of {strategy_specs()} (default %(default)s)")
    _training_options(t)
    t.add_argument("--name", default=None, help="run name (default: the strategy and a timestamp)")
    t.set_defaults(run=cmd_train, parser=t)

    f = sub.add_parser("lr-find", help="sweep the learning rate for a strategy and suggest one",
                       description="A short run on a copy of the model whose learning rate grows exponentially "
                                   "from --start to --end, one optimizer step per rate, until the loss runs away; "
                                   "prints the rate each rule suggests (valley, steepest, minimum/10) and can "
                                   "draw the curve. Nothing is written but --plot.")
    f.add_argument("--strategy", default="lora", help=f"one of {strategy_specs()} (default %(default)s)")
    f.add_argument("--model", default="minilm", help="built-in name, a model directory or a cached hub id "
                                                     "(default %(default)s)")
    f.add_argument("--data", default=None, help="built-in data set or CSV file (default rotten_tomatoes; "
                                                "bbc_headlines for --task sft or seq2seq)")
    f.add_argument("--task", default="classification", choices=TASK_CHOICES,
                   help="(default %(default)s)")
    f.add_argument("--train-size", type=arguments.size, default=1000,
                   help="training examples the sweep draws its batches from (default 1000)")
    f.add_argument("--batch-size", type=arguments.positive_int, default=16, help="(default 16)")
    f.add_argument("--max-length", type=arguments.positive_int, default=128, help="(default 128)")
    f.add_argument("--lr-decay", type=arguments.decay, default=None,
                   help="sweep the layer groups at these ratios (see train --lr-decay)")
    f.add_argument("--start", type=arguments.positive_float, default=1e-7, help="the first rate (default 1e-7)")
    f.add_argument("--end", type=arguments.positive_float, default=10.0, help="the last rate (default 10)")
    f.add_argument("--steps", type=arguments.positive_int, default=100, help="steps of the sweep (default 100)")
    f.add_argument("--seed", type=arguments.seed, default=0, help="(default 0)")
    f.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    f.add_argument("--plot", default=None, help="write the curve to this HTML file")
    f.set_defaults(run=cmd_lr_find, parser=f)

    r = sub.add_parser("runs", help="list the runs in a runs directory",
                       description="List the run records in --runs-dir as a table; optionally write a report.")
    r.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="runs directory (default %(default)s)")
    r.add_argument("--report", default=None, help="also write an HTML report of these runs to this file")
    r.set_defaults(run=cmd_runs, parser=r)

    v = sub.add_parser("evaluate", help="print a run's metrics on a split of its data",
                       description="Evaluate a run's trained model on a split and print the task's metrics "
                                   "(classification: accuracy, macro-F1, loss; causal LM: perplexity, loss). On "
                                   "the validation split it uses the run's own subset, so the numbers equal the "
                                   "ones the run recorded.")
    v.add_argument("run_ref", metavar="RUN", help="a run directory, or a run name in --runs-dir")
    v.add_argument("--split", default="validation", choices=("train", "validation", "test"),
                   help="which split (default %(default)s)")
    v.add_argument("--data", default=None,
                   help="built-in data set or CSV file (default: the run's own built-in data set)")
    v.add_argument("--size", type=arguments.size, default=None,
                   help="a seeded subset of this many examples, or 'all' (default: the run's eval size on "
                        "validation, else all)")
    v.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="where to look up RUN by name (default %(default)s)")
    v.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    v.set_defaults(run=cmd_evaluate, parser=v)

    add_post_commands(sub)

    i = sub.add_parser("import", help="write a run record of a peft adapter or a fine-tuned model made elsewhere",
                       description="Import a peft adapter folder (adapter_config.json + adapter_model.safetensors) "
                                   "or a fine-tuned model folder (config.json + model.safetensors, with --base) as a "
                                   "run record of kind 'import': it then lists, reloads and draws like tunekit's own "
                                   "records. A trainer_state.json in or beside the folder becomes its curves. The "
                                   "folder is only read; pickled weights are refused.")
    i.add_argument("path", metavar="PATH", help="the adapter or fine-tuned model folder")
    i.add_argument("--base", default=None,
                   help="the checkpoint it was trained from: a folder, a cached hub id or a built-in name "
                        "(default: an adapter's base_model_name_or_path; a fine-tune needs it)")
    i.add_argument("--data", default=None,
                   help="built-in data set or CSV file to evaluate it on once, on the validation split "
                        "(default: no evaluation)")
    i.add_argument("--task", default=None, choices=("classification", "causal_lm"),
                   help="what it was trained for (default: what the folder says)")
    i.add_argument("--name", default=None, help="the record's name (default: import-<folder name>)")
    i.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="where the record goes (default %(default)s)")
    i.set_defaults(run=cmd_import, parser=i)

    x = sub.add_parser("experiment", help="train strategies x training-set sizes x seeds; print test accuracy "
                       "with 95 %% intervals and what to choose (resumes a grid of the same name)",
                       description="Every (strategy, size, seed) cell is an ordinary run record; the "
                       "experiment's record (RUNS_DIR/NAME/experiment.json) keeps the grid and each finished "
                       "cell, so the same command again resumes it.")
    x.add_argument("--strategies", default="probe,freeze:2,lora:8,full",
                   help="strategy specs, comma separated (default %(default)s)")
    x.add_argument("--sizes", type=arguments.sizes, default=[100, 300, 1000],
                   help="training-set sizes, comma separated; nested per seed (default 100,300,1000)")
    x.add_argument("--seeds", type=arguments.positive_int, default=3, help="seeds per cell (default 3)")
    x.add_argument("--name", default="experiment", help="the experiment's folder in --runs-dir (default %(default)s)")
    x.add_argument("--model", default="minilm", help="built-in name, model directory or cached hub id (default minilm)")
    x.add_argument("--data", default="rotten_tomatoes", help="built-in data set or a CSV file (default %(default)s)")
    x.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="where records go (default %(default)s)")
    x.add_argument("--epochs", type=arguments.positive_int, default=1, help="epochs per cell (default 1)")
    x.add_argument("--eval-size", type=arguments.size, default=500,
                   help="validation examples watched while training; 'all' for the split (default 500)")
    x.add_argument("--test-size", type=arguments.size, default=None,
                   help="test examples reported on, a seeded subset (default: the whole test split)")
    x.add_argument("--lr", type=arguments.lr_or_tune, default=None,
                   help="peak learning rate for every strategy, or 'tune': a search per strategy and size on "
                        "the validation split (default: each strategy's own)")
    x.add_argument("--tune-trials", type=arguments.positive_int, default=4,
                   help="with --lr tune: training runs per strategy and size (default 4)")
    x.add_argument("--batch-size", type=arguments.positive_int, default=16, help="examples per step (default 16)")
    x.add_argument("--max-length", type=arguments.positive_int, default=128, help="tokens per example (default 128)")
    x.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    x.add_argument("--storage", default=None,
                   help="Optuna storage URL holding the queue of cells (sqlite:///FILE, postgresql://...); "
                        "default: a SQLite file in the experiment's folder")
    x.add_argument("--worker", action="store_true",
                   help="only take cells from the queue (more processes, GPUs or machines beside the first)")
    x.add_argument("--report", default="tunekit-experiment.html",
                   help="HTML report to write: the learning curves, the cost plane, the tables (default %(default)s)")
    x.add_argument("--no-progress", action="store_true", help="no progress bar")
    x.set_defaults(run=cmd_experiment, parser=x, task="classification", seed=0)

    e = sub.add_parser("export", help="write notebooks as HTML pages whose figures and widgets render offline",
                       description="Write each notebook as OUT/NAME.html, drawing its plotly figures and saved "
                                   "widgets with no kernel and no internet (the widget JavaScript is written next "
                                   "to the pages). With --execute, run each notebook first on a fresh kernel.")
    e.add_argument("notebooks", nargs="+", metavar="NOTEBOOK", help=".ipynb files")
    e.add_argument("--out", default="tunekit-pages", help="folder for the pages (default %(default)s)")
    e.add_argument("--execute", action="store_true", help="run each notebook top to bottom first")
    e.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="with --execute: set a name of the notebooks' parameters cell, e.g. -p TRAIN_SIZE=200 "
                        "(VALUE is a Python literal, else a string)")
    e.add_argument("--timeout", type=arguments.positive_int, default=1800,
                   help="with --execute: seconds one cell may run (default %(default)s)")
    e.add_argument("--ipynb", action="store_true",
                   help="also write each notebook as exported (outputs, widget state, figures as HTML) "
                        "next to its page: the file to publish for nbviewer")
    e.add_argument("--cdn", action="store_true",
                   help="load the widget manager from a CDN instead of writing local copies (needs internet to view)")
    e.set_defaults(run=cmd_export, parser=e)
    return parser


# ----- commands ---------------------------------------------------------------------------------
def _print_table(runs) -> None:
    from tunekit.report import formatted_table  # lazy: pandas and plotly load only for the commands that print runs
    print(formatted_table(runs).to_string(index=False))


def _write_report(runs, path, title, extra=()) -> Path:
    from tunekit.report import write_report  # lazy: plotly loads only for the commands that write a report
    try:
        return write_report(runs, path, title=title, extra=extra)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        raise InputError("--report", f"cannot write {str(path)!r}: {getattr(e, 'strerror', None) or e}") from e


def _check_writable(path) -> None:
    """Fail before training, not after, if the report cannot be written."""
    try:
        parent = Path(path).expanduser().resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError, RuntimeError) as e:  # also a NUL byte, '~nobody'
        raise InputError("--report", f"cannot write {str(path)!r}: {getattr(e, 'strerror', None) or e}") from e
    if Path(path).expanduser().is_dir() or not os.access(parent, os.W_OK):
        raise InputError("--report", f"cannot write {str(path)!r}")


def _checked_inputs(args, strategies: list, option: str):
    """The data and a model loaded for it, with every strategy checked against the model, so
    that a bad option fails now, not after a run has trained; errors name the option."""
    # lazy: torch loads only for the commands that need it
    from tunekit.data import BUILTIN, DataError, from_pairs
    from tunekit.data import load as load_data
    from tunekit.models import ModelNotFoundError, load_for, resolve_model_path
    task = getattr(args, "task", "classification")
    if args.data is None:
        args.data = "bbc_headlines" if task in PAIR_TASKS else "rotten_tomatoes"
    try:
        if task in PAIR_TASKS and args.data not in BUILTIN:
            data = from_pairs(args.data)  # a CSV of source and target columns
        else:
            data = load_data(args.data)
    except (DataError, ConfigError) as e:
        raise InputError("--data", str(e)) from e
    try:
        resolve_model_path(args.model)
        model = load_for(args.model, data, task, args.seed, _task_options(args))
    except (ModelNotFoundError, ConfigError) as e:
        raise InputError("--model", str(e)) from e
    try:
        for s in strategies:
            for phase in s.phases():
                phase.strategy.count(model)
    except ConfigError as e:
        raise InputError(option, str(e)) from e
    return data, model


def cmd_compare(args) -> int:
    # lazy: torch loads only for the commands that need it
    from tunekit.data import DataError
    from tunekit.models import ModelNotFoundError

    strategies = parse_strategies(args.strategies)
    data, model = _checked_inputs(args, strategies, "--strategies")
    del model
    _check_writable(args.report)

    from tunekit.engine import compare  # lazy: torch loads only for the commands that need it
    print(f"tunekit: {len(strategies)} strateg{'y' if len(strategies) == 1 else 'ies'} "
          f"({', '.join(s.label for s in strategies)}) on {data.name} with {args.model}", file=sys.stderr)
    try:
        runs = compare(strategies, data, model=args.model, task_options=_task_options(args), **_train_overrides(args))
    except DataError as e:
        raise InputError("--data", str(e)) from e
    except ModelNotFoundError as e:
        raise InputError("--model", str(e)) from e
    _print_table(runs)
    title = args.title or f"{data.name}: {', '.join(r.label for r in runs)} on {args.model}"
    extra = [] if args.no_inspect else _instrument_sections(runs, data, args.sentence)
    path = _write_report(runs, args.report, title, extra)
    print(f"runs: {Path(args.runs_dir).expanduser().resolve()}")
    print(f"report: {path}")
    return 1 if len(runs) < len(strategies) or any(r.status == "failed" for r in runs) else 0


def cmd_experiment(args) -> int:
    """Train the grid's missing cells; print its table, the paired differences to the best
    strategy, and what to choose per size. Exit 1 when a cell did not finish."""
    strategies = parse_strategies(args.strategies)
    data, _ = _checked_inputs(args, strategies, "--strategies")
    _check_writable(args.report)
    # lazy: torch loads only for the commands that train
    from tunekit.experiments import experiment, report_sections, table_with_intervals
    exp = experiment(strategies, data, sizes=args.sizes, seeds=args.seeds, model=args.model, name=args.name,
                     runs_dir=args.runs_dir, lr=args.lr, tune_trials=args.tune_trials, test_size=args.test_size,
                     epochs=args.epochs,
                     eval_size=args.eval_size, batch_size=args.batch_size, max_length=args.max_length,
                     device=args.device, progress=not args.no_progress, storage=args.storage, worker=args.worker)
    table = table_with_intervals(exp)
    if table.empty:
        print("no cell finished", file=sys.stderr)
        return 1
    print(table[["strategy", "size", "accuracy", "95 % interval", "seeds", "seconds", "memory_mb", "trainable"]]
          .to_string(index=False, float_format=lambda v: f"{v:,.3f}"))
    print()
    for said in exp.choose()["said"]:
        print(said)
    path = _write_report(exp.runs(), args.report, f"{exp.name}: which strategy at which data size",
                         extra=report_sections(exp))
    print(f"experiment: {exp.path.resolve()}")
    print(f"report: {path}")
    total = len(exp.grid["strategies"]) * len(exp.grid["sizes"]) * exp.grid["seeds"]
    return 0 if len(exp.done()) == total else 1


def cmd_train(args) -> int:
    from tunekit.engine import TrainingError, train  # lazy: torch loads only for the commands that need it

    strategies = parse_strategies(args.strategy, "--strategy")
    if len(strategies) != 1:
        raise InputError("--strategy", f"train takes one strategy (got {args.strategy!r}); use compare for several")
    strategy = strategies[0]
    data, model = _checked_inputs(args, strategies, "--strategy")
    main_process = int(os.environ.get("RANK", "0")) == 0
    overrides = _train_overrides(args)
    overrides.pop("task")
    try:
        run = train(model, data, strategy, name=args.name, **overrides)
    except TrainingError as e:
        if main_process:
            print(f"tunekit: {e}", file=sys.stderr)
        return 1
    if main_process:
        _print_table([run])
        print(f"run: {run.path.resolve()}")
    return 0


def cmd_lr_find(args) -> int:
    from tunekit.lr_finder import lr_find  # lazy: torch loads only for the commands that need it

    strategies = parse_strategies(args.strategy, "--strategy")
    if len(strategies) != 1:
        raise InputError("--strategy", f"lr-find sweeps one strategy (got {args.strategy!r})")
    data, model = _checked_inputs(args, strategies, "--strategy")
    found = lr_find(model, data, strategies[0], start=args.start, end=args.end, steps=args.steps,
                    train_size=args.train_size, batch_size=args.batch_size, max_length=args.max_length,
                    lr_decay=args.lr_decay, seed=args.seed, device=args.device)
    print(f"{found.strategy}: {len(found.lrs)} steps; {found.stopped}")
    if not found.suggestions:
        print("no suggestion: the loss never fell for long enough to say (try a wider --start .. --end or more "
              "--steps)")
        return 1
    for rule, lr in found.suggestions.items():
        print(f"  {rule:<11s} {lr:.2e}{'   <- suggested' if rule == found.rule else ''}")
    if args.plot:
        path = arguments.user_path(args.plot, "--plot")
        found.plot().write_html(str(path), include_plotlyjs=True)
        print(f"plot: {path.resolve()}")
    return 0


def _instrument_sections(runs, data, sentence) -> list:
    """The instrument views; if one fails, the report is still written without them."""
    from tunekit.inspect.views import DEFAULT_SENTENCE, instrument_sections  # lazy: torch, only when it is needed
    try:
        return instrument_sections(runs, data, sentence or DEFAULT_SENTENCE,
                                   progress=lambda what: print(f"tunekit: {what}", file=sys.stderr))
    except Exception as e:  # noqa: BLE001 - the runs are trained; never lose the report over a view
        print(f"tunekit: instruments skipped ({type(e).__name__}: {e})", file=sys.stderr)
        return []


def cmd_runs(args) -> int:
    from tunekit.runs import list_runs  # lazy: pandas loads only for the commands that read runs
    root = arguments.user_path(args.runs_dir, "--runs-dir")
    if root.exists() and not root.is_dir():
        raise InputError("--runs-dir", f"{str(root)!r} is not a directory")
    runs = list_runs(root)
    if not runs:
        print(f"no runs in {root}")
    else:
        _print_table(runs)
    if args.report:
        print(f"report: {_write_report(runs, args.report, f'tunekit runs in {root}')}")
    return 0


def cmd_evaluate(args) -> int:
    # lazy: torch loads only for the commands that need it
    from tunekit.data import DataError
    from tunekit.evaluation import evaluate
    from tunekit.metrics import METRICS

    run = open_run(args.run_ref, args.runs_dir)
    if not run.has_weights:
        raise InputError("RUN", f"{run.name} ({run.status}) holds no weights to evaluate")
    try:
        result = evaluate(run, args.data, split=args.split, size=args.size, device=args.device)
    except DataError as e:
        raise InputError("--data", str(e)) from e
    print(f"{run.name} ({run.label}, {run.task}) on {args.split}: {result.pop('examples')} examples, "
          f"{result.pop('seconds')} s")
    for key, value in result.items():
        fmt = METRICS[key].fmt if key in METRICS else ".4f"
        print(f"  {key:<12}{value:{fmt}}")
    return 0


_IMPORT_OPTIONS = {"path": "PATH", "base": "--base", "task": "--task", "data": "--data", "name": "--name",
                   "runs_dir": "--runs-dir"}
"""The option each field of :func:`tunekit.imports.import_run`'s errors is given by."""


def cmd_import(args) -> int:
    from tunekit.data import DataError  # lazy: torch loads only for the commands that need it
    from tunekit.imports import import_run
    try:
        run = import_run(args.path, base=args.base, data=args.data, name=args.name, runs_dir=args.runs_dir,
                         task=args.task)
    except DataError as e:
        raise InputError("--data", str(e)) from e
    except ConfigError as e:
        option = next((o for f, o in _IMPORT_OPTIONS.items() if str(e).startswith(f)), None)
        raise InputError(option, str(e)) from e
    _print_table([run])
    print(f"run: {run.path.resolve()}")
    return 0


def cmd_export(args) -> int:
    from tunekit.export import ExportError, export_notebooks, parse_parameter  # lazy: only `export` needs it
    try:
        params = dict(parse_parameter(p) for p in args.param)
    except ExportError as e:
        raise InputError("--param", str(e).partition(": ")[2]) from e
    try:
        export_notebooks(args.notebooks, args.out, execute=args.execute, params=params, cdn=args.cdn,
                         timeout=args.timeout, ipynb=args.ipynb,
                         progress=lambda m: print(f"tunekit: {m}", file=sys.stderr))
    except ExportError as e:
        message = str(e)
        option = _EXPORT_OPTIONS.get(message.split(":")[0])
        raise InputError(option, message.partition(": ")[2] if option else message) from e
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 a run failed, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed its message (bad input) or the help
        return e.code if isinstance(e.code, int) else 2
    sub = args.parser  # the subcommand's parser, for its usage line
    try:
        return args.run(args)
    except InputError as e:
        sub.print_usage(sys.stderr)
        where = f"argument {e.option}: " if e.option else ""
        print(f"{sub.prog}: error: {where}{e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        option = _option_for(str(e), sub)
        sub.print_usage(sys.stderr)
        print(f"{sub.prog}: error: {f'argument {option}: ' if option else ''}{e}", file=sys.stderr)
        return 2
    except TunekitError as e:  # a data, model, record or export error: one line, never a traceback
        from tunekit.engine import TrainingError  # lazy: torch, only once something has failed
        print(f"{sub.prog}: error: {e}", file=sys.stderr)
        return 1 if isinstance(e, TrainingError) else 2
    except OSError as e:  # a file the user named that cannot be read or written
        where = f" {e.filename!r}" if e.filename else ""
        print(f"{sub.prog}: error:{where} {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished runs are in {getattr(args, 'runs_dir', '')}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
