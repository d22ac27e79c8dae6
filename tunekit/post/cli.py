"""The post-training commands of ``tunekit``: prune, quantize, distil, forgetting.

    tunekit prune RUN --sparsity 0.3,0.5,0.7          (or --method heads --amount 4)
    tunekit quantize RUN --method int8-dynamic
    tunekit distil RUN --student 0,2,4 --loss response+feature --baseline
    tunekit forgetting --strategies probe,lora,full --first rotten_tomatoes --then bbc_news

Each reads a run (by directory, or by name in ``--runs-dir``) and writes a record of its own
kind beside it (:mod:`tunekit.post`), printing its numbers next to its parent's. Registered
on the main parser by :func:`tunekit.cli.build_parser`; errors follow its rules (exit 2 with
the option named, :data:`FIELD_OPTIONS` naming it for an error of :mod:`tunekit.post`). What
the commands share with the others comes from :mod:`tunekit.arguments`.
"""
from __future__ import annotations

import argparse

from tunekit.arguments import InputError, open_run, parse_strategies, positive_float, positive_int, seed, size
from tunekit.config import DEFAULT_RUNS_DIR

# ConfigError messages of tunekit.post start with the parameter they are about; its option here
FIELD_OPTIONS = {"sparsity": "--sparsity", "method": "--method", "scope": "--scope", "amount": "--amount",
                 "importance": "--importance", "bits": "--bits", "loss": "--loss", "temperature": "--temperature",
                 "student": "--student", "hard": "--hard"}


def add_commands(sub) -> None:
    """Add prune, quantize, distil and forgetting to the ``tunekit`` sub-parsers ``sub``."""
    p = sub.add_parser("prune", help="prune a run's model and write a prune record",
                       description="Unstructured magnitude pruning (--sparsity, several values for a sweep) or "
                                   "structured pruning of attention heads or feed-forward neurons (--method, "
                                   "--amount). Prints the metrics, parameters, size and CPU latency before and after.")
    _post_options(p)
    p.add_argument("--method", default="magnitude", choices=("magnitude", "heads", "neurons"),
                   help="magnitude (zero the smallest weights), heads or neurons (remove them) (default %(default)s)")
    p.add_argument("--sparsity", default="0.5",
                   help="magnitude: fraction of block weights zeroed, in [0, 1); a comma list sweeps (default 0.5)")
    p.add_argument("--scope", default="global", choices=("global", "layer"), help="rank weights over all blocks "
                   "or within each layer (default %(default)s)")
    p.add_argument("--amount", default=None, help="heads: heads removed per block; neurons: fraction removed")
    p.add_argument("--importance", default="taylor", choices=("taylor", "magnitude"),
                   help="how heads and neurons are ranked (default %(default)s)")
    p.add_argument("--recover-epochs", type=positive_int, default=None,
                   help="then fine-tune the pruned model for this many epochs (zeros stay zero)")
    p.set_defaults(run=cmd_prune, parser=p)

    q = sub.add_parser("quantize", help="quantize a run's model with torchao and write a quantize record",
                       description="Post-training quantization of the blocks' Linear layers with torchao. Prints "
                                   "the metrics, size on disk and CPU latency before and after (int8 can be slower "
                                   "than fp32 on a CPU in eager mode; the numbers say what this machine measured).")
    _post_options(q)
    q.add_argument("--method", default=None, choices=("int8-dynamic", "int8-weight", "intx-dynamic"),
                   help="default int8-dynamic (intx-dynamic at the run's bits for a QAT run)")
    q.add_argument("--bits", type=positive_int, default=None, help="weight bits for intx-dynamic, 2..8 (default 8)")
    q.set_defaults(run=cmd_quantize, parser=q)

    d = sub.add_parser("distil", help="distil a teacher run into a smaller student",
                       description="Train a student made of some of the teacher's blocks with distillation losses "
                                   "(and the labels), through the engine; --baseline also trains it alone.")
    _post_options(d)
    d.add_argument("--student", default="0,2,4", help="the teacher's blocks the student keeps (default %(default)s)")
    d.add_argument("--loss", default="response", help="response, feature, relation or a + combination "
                   "(default %(default)s)")
    d.add_argument("--temperature", type=positive_float, default=2.0, help="softening temperature (default 2)")
    d.add_argument("--hard", type=float, default=1.0, help="weight of the loss on the labels (default 1)")
    d.add_argument("--epochs", type=positive_int, default=1, help="student training epochs (default 1)")
    d.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default 1e-4)")
    d.add_argument("--baseline", action="store_true", help="also train the same student without the teacher")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(run=cmd_distil, parser=d)

    f = sub.add_parser("forgetting", help="learn one task, then another; measure what the first lost",
                       description="Learn --first (fully fine-tuned), then --then with each strategy; print task "
                                   "A's held-out metric before and after, what was learned on B, and the drift of "
                                   "the sentence embeddings.")
    f.add_argument("--strategies", default="probe,lora,full", help="what learns the second task (default %(default)s)")
    f.add_argument("--first", default="rotten_tomatoes", help="task A's data (default %(default)s)")
    f.add_argument("--then", default="bbc_news", help="task B's data (default %(default)s)")
    f.add_argument("--model", default="minilm", help="the pretrained model (default minilm)")
    f.add_argument("--train-size", type=size, default=1000, help="training examples per task (default 1000)")
    f.add_argument("--eval-size", type=size, default=500, help="validation examples during training (default 500)")
    f.add_argument("--epochs", type=positive_int, default=1, help="epochs per task (default 1)")
    f.add_argument("--seed", type=seed, default=0, help="seed (default 0)")
    f.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="where run records go (default %(default)s)")
    f.add_argument("--no-progress", action="store_true", help="no progress bars")
    f.set_defaults(run=cmd_forgetting, parser=f)


def _post_options(c: argparse.ArgumentParser) -> None:
    c.add_argument("run_ref", metavar="RUN", help="a run directory, or a run name in --runs-dir")
    c.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR,
                   help="where to look up RUN by name; the new record goes beside RUN (default %(default)s)")
    c.add_argument("--data", default=None, help="built-in data set or CSV file (default: the run's own)")
    c.add_argument("--name", default=None, help="the new record's name (default: RUN-<operation>)")


def _post_data(args):
    if args.data is None:
        return None
    from tunekit.data import DataError, load  # lazy: pandas and the data sets, only when asked for
    try:
        return load(args.data)
    except DataError as e:
        raise InputError("--data", str(e)) from e


def _print_post(runs) -> None:
    """Each new record beside what it started from."""
    from tunekit.metrics import primary  # lazy: only once a command has a record to print
    for run in runs:
        s, key = run.summary, primary(run.task).key
        before = s.get("before") or s.get("teacher") or {}
        print(f"{run.name} ({run.kind}: {run.label}), {s.get('status')}")
        for field, title in ((f"val_{key}", key), ("params", "params"), ("nonzero_params", "nonzero params"),
                             ("size_mb", "size (MB)"), ("latency_ms", "CPU latency (ms)")):
            if s.get(field) is None:
                continue
            was = before.get(field)
            fmt = (lambda v: f"{v:,}") if "params" in field else (lambda v: f"{v:.4g}")
            print(f"  {title:<18}{fmt(s[field]):>14}" + (f"   (was {fmt(was)})" if was is not None else ""))
        if s.get("latency_machine"):
            print(f"  latency measured on {s['latency_machine']}, batch {s.get('latency_batch')}, "
                  f"{s.get('latency_threads')} threads")


def cmd_prune(args) -> int:
    from tunekit.post.pruning import prune  # lazy: torch loads only for the command that needs it
    run = open_run(args.run_ref, args.runs_dir)
    try:
        sparsity = [float(x) for x in str(args.sparsity).split(",") if x.strip()]
    except ValueError as e:
        raise InputError("--sparsity", f"expected numbers in [0, 1) separated by commas (got {args.sparsity!r})") from e
    amount = None
    if args.amount is not None:
        try:
            amount = int(args.amount) if args.method == "heads" else float(args.amount)
        except ValueError as e:
            raise InputError("--amount", f"expected {'an integer' if args.method == 'heads' else 'a fraction'} "
                                         f"(got {args.amount!r})") from e
    recover = {"epochs": args.recover_epochs} if args.recover_epochs else None
    result = prune(run, sparsity[0] if len(sparsity) == 1 else sparsity, args.method, args.scope, amount=amount,
                   importance=args.importance, data=_post_data(args), name=args.name, recover=recover)
    _print_post(result if isinstance(result, list) else [result])
    return 0


def cmd_quantize(args) -> int:
    from tunekit.post.quantization import quantize  # lazy: torch loads only for the command that needs it
    run = open_run(args.run_ref, args.runs_dir)
    _print_post([quantize(run, args.method, args.bits, data=_post_data(args), name=args.name)])
    return 0


def cmd_distil(args) -> int:
    from tunekit.post.distillation import distil  # lazy: torch loads only for the command that needs it
    run = open_run(args.run_ref, args.runs_dir)
    try:
        student = [int(x) for x in args.student.split(",") if x.strip()]
    except ValueError as e:
        raise InputError("--student", f"expected block indices separated by commas (got {args.student!r})") from e
    out = distil(run, student, args.loss, hard=args.hard, temperature=args.temperature, data=_post_data(args),
                 baseline=args.baseline, name=args.name, epochs=args.epochs, lr=args.lr,
                 progress=not args.no_progress)
    _print_post(list(out) if isinstance(out, tuple) else [out])
    return 0


def cmd_forgetting(args) -> int:
    from tunekit.post.continual import forgetting  # lazy: torch loads only for the command that needs it
    strategies = parse_strategies(args.strategies)
    df = forgetting(strategies, first=args.first, then=args.then, model=args.model, train_size=args.train_size,
                    eval_size=args.eval_size, epochs=args.epochs, seed=args.seed, runs_dir=args.runs_dir,
                    progress=not args.no_progress)
    import pandas as pd  # lazy: only `forgetting` prints a data frame
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(df.drop(columns=["first_run"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"task A ({df.attrs['first']}) was learned by {df.attrs['first_run']}; metric {df.attrs['metric']} "
          f"on its {df.attrs['split']} split")
    return 0
