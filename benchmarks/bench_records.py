"""1,000 run records in one directory: how long ``tk.list_runs`` and the lab's runs table take.

Target (issue 11): each under 2 s on 2 CPU cores. One real record is trained first (a tiny
random BERT probed on 320 Rotten Tomatoes reviews, one step event per step); it is copied
1,000 times with its name, start time, status and final metrics varied: mostly completed,
some stopped or failed, a few marked running by a process that is gone (read as crashed).
Then, repeated, timed apart: ``tk.list_runs(dir)``, the comparison table the lab shows
(``tunekit.report.formatted_table`` of those runs) and the lab's ``RunsPanel.refresh()``
(list, table, HTML, the selection and the Post-training tab's run list).

    .venv/bin/python benchmarks/bench_records.py [--records 1000] [--repeats 5] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tunekit as tk  # noqa: E402

STRATEGIES = ("probe", "lora", "full", "freeze")


def _dead_pid() -> int:
    """The pid of a process that has ended (so a 'running' record made with it reads as crashed)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def template(root: Path) -> Path:
    """One real record of the current format, trained here."""
    model_dir = tk.make_tiny_bert(root / "tiny-bert")
    rt = tk.data.rotten_tomatoes()
    df = rt.train.iloc[:400].assign(label=lambda d: d["label"].map(dict(enumerate(rt.label_names))))
    data = tk.data.from_dataframe(df, label_names=rt.label_names, validation_size=40, test_size=40, name="rt-400")
    model = tk.load_model(str(model_dir), label_names=data.label_names)
    run = tk.train(model, data, tk.Probe(), runs_dir=str(root / "template"), name="template", epochs=2,
                   batch_size=16, log_every=1, evals_per_epoch=2, progress=False)
    return run.path


def make_records(template_dir: Path, runs_dir: Path, n: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    summary = json.loads((template_dir / "summary.json").read_text())
    config = json.loads((template_dir / "config.json").read_text())
    dead = _dead_pid()
    counts: dict[str, int] = {}
    for i in range(n):
        name = f"{rng.choice(STRATEGIES)}-{20261202 + i // 200}-{i:04d}"
        d = runs_dir / name
        d.mkdir(parents=True)
        for f in template_dir.iterdir():
            if f.is_file() and f.name not in ("summary.json", "config.json"):
                shutil.copyfile(f, d / f.name)
        status = rng.choices(["completed", "stopped", "failed", "running"], [90, 5, 3, 2])[0]
        s = {**summary, "status": status, "started": f"2026-12-{1 + i // 100:02d}T{i % 24:02d}:{i % 60:02d}:00",
             "val_accuracy": round(rng.uniform(0.5, 0.9), 4), "val_loss": round(rng.uniform(0.3, 0.7), 4),
             "wall_time_s": round(rng.uniform(5, 500), 3)}
        if status == "running":
            s = {k: s[k] for k in ("status", "started", "pid", "host", "params")} | {"pid": dead}
        elif status != "completed":
            s["reason"] = f"{status} at step {rng.randint(1, 40)}"
        counts[status] = counts.get(status, 0) + 1
        (d / "summary.json").write_text(json.dumps(s, indent=1))
        label = name.split("-")[0]
        (d / "config.json").write_text(json.dumps({**config, "name": name, "strategy_label": label,
                                                   "strategy": {**config.get("strategy", {}), "name": label}},
                                                  indent=1))
    return counts


def timed(fn, repeats: int) -> dict:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4), "all_s": [round(x, 4) for x in times], "result": out}


def environment() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cores": os.cpu_count(), "tunekit": tk.__version__, "load_average": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the raw numbers to this file")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from tunekit.report import formatted_table
    from tunekit.widgets.views import RunsPanel

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        src = template(root)
        runs_dir = root / "runs"
        counts = make_records(src, runs_dir, args.records)
        made_s = time.perf_counter() - t
        per_record = {f.name: f.stat().st_size for f in src.iterdir() if f.is_file()}

        first = timed(lambda: len(tk.list_runs(runs_dir)), 1)  # the first listing of a fresh directory
        listing = timed(lambda: len(tk.list_runs(runs_dir)), args.repeats)
        runs = tk.list_runs(runs_dir)
        statuses = {s: sum(r.status == s for r in runs) for s in sorted({r.status for r in runs})}
        table = timed(lambda: len(formatted_table(tk.list_runs(runs_dir))), args.repeats)
        panel = RunsPanel(str(runs_dir), tk.data.rotten_tomatoes())
        refresh = timed(lambda: (panel.refresh(), len(panel.select.options))[1], args.repeats)

    report = {"records": args.records, "written": counts, "read_as": statuses, "record_files_bytes": per_record,
              "setup_s": round(made_s, 1), "list_runs_first": first, "list_runs": listing,
              "list_runs_and_formatted_table": table, "lab_runs_panel_refresh": refresh,
              "environment": environment()}
    print(f"{args.records} records ({counts}; read as {statuses}); {report['environment']['cpu']}, "
          f"{report['environment']['cores']} cores")
    for key, label in (("list_runs_first", "tk.list_runs, first call"), ("list_runs", "tk.list_runs"),
                       ("list_runs_and_formatted_table", "list_runs + the runs table"),
                       ("lab_runs_panel_refresh", "the lab's RunsPanel.refresh()")):
        r = report[key]
        ok = "OK" if r["median_s"] < 2 else "MISSED"
        print(f"{label:34s} median {r['median_s']:6.3f} s  (min {r['min_s']:.3f}, max {r['max_s']:.3f})  "
              f"target < 2 s  {ok}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)


if __name__ == "__main__":
    main()
