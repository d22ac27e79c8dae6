"""tk.experiment (issue 21, first part): a grid of (strategy, size, seed) cells, each an ordinary
run record, reported on the test split with bootstrap intervals; resumable; refused bad input."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import tunekit as tk
from tunekit.config import ConfigError
from tunekit.evaluation import subset
from tunekit.experiments import bootstrap_mean, in_words


@pytest.fixture
def grid(tiny_dir, small, tmp_path):
    kw = dict(sizes=[16, 48], seeds=2, model=tiny_dir, name="tiny grid", runs_dir=str(tmp_path / "runs"),
              eval_size=16, batch_size=16)
    return kw


def test_a_grid_trains_every_cell_once_and_resumes(grid, small, tmp_path, monkeypatch):
    exp = tk.experiment([tk.Probe(), tk.Full()], small, **grid)
    assert len(exp.done()) == 2 * 2 * 2
    record = json.loads((exp.path / "experiment.json").read_text())
    assert record["kind"] == "experiment" and record["grid"]["strategies"] == ["probe", "full"]
    # every cell is an ordinary run record, listed and loadable; the experiment's folder is not a run
    runs = tk.list_runs(grid["runs_dir"])
    assert len(runs) == 8 and {r.status for r in runs} == {"completed"}
    assert sorted(r.name for r in runs) == sorted(c["run"] for c in exp.done())
    cell = exp.cells["full|48|1"]
    run = tk.load_run(exp.path.parent / cell["run"])
    assert run.config["data"]["train_used"] == 48 and run.config["train"]["seed"] == 1
    assert {r.experiment["cell"] for r in runs} == set(exp.cells)  # each run names its experiment and cell
    assert run.experiment == {"name": "tiny grid", "path": str(exp.path), "cell": "full|48|1"}
    assert len(cell["correct"]) == len(small.test) and cell["test_accuracy"] == np.mean(cell["correct"])
    assert exp.cells["probe|16|0"]["lr"] == tk.Probe.default_lr

    table = exp.table()
    assert list(table[["strategy", "size"]].itertuples(index=False, name=None)) == \
        [("probe", 16), ("probe", 48), ("full", 16), ("full", 48)]
    assert (table["seeds"] == 2).all() and (table["low"] <= table["accuracy"]).all() \
        and (table["accuracy"] <= table["high"]).all()
    assert (table["seconds"] > 0).all() and (table["trainable"] > 0).all()
    diff = exp.compare("Full", "probe")  # a label, or as said in words
    assert list(diff["size"]) == [16, 48] and (diff["low"] <= diff["high"]).all()
    assert all(("inside the noise" in s) == inside for s, inside in zip(diff["said"], diff["inside_noise"]))

    # the same call again trains nothing; a cell lost in a crash is the only one retrained
    calls = []
    real = tk.experiments.runner._train_cell
    monkeypatch.setattr(tk.experiments.runner, "_train_cell", lambda *a, **k: calls.append(a[2:5]) or real(*a, **k))
    again = tk.experiment([tk.Probe(), tk.Full()], small, **grid)
    assert calls == [] and len(again.done()) == 8
    (again.path / "cells" / "full-16-0.json").unlink()  # a lost entry and a damaged one: the queue's
    (again.path / "cells" / "probe-48-1.json").write_text("{not json")  # trials hold them, nothing retrains
    with pytest.warns(UserWarning, match="damaged experiment entry"):
        third = tk.experiment([tk.Probe(), tk.Full()], small, **grid)
    assert calls == [] and len(third.done()) == 8
    assert third.cells["full|16|0"] == again.cells["full|16|0"]
    (again.path / "cells" / "full-16-0.json").unlink()  # as if the kernel died while it trained: no trace
    (again.path / "cells" / "probe-48-1.json").write_text("{not json")  # of either in the queue either
    (again.path / "queue.db").unlink()
    with pytest.warns(UserWarning, match="damaged experiment entry"):
        fourth = tk.experiment([tk.Probe(), tk.Full()], small, **grid)
    assert sorted(calls) == [("full", 16, 0), ("probe", 48, 1)] and len(fourth.done()) == 8
    assert [e.name for e in tk.list_experiments(grid["runs_dir"])] == ["tiny grid"]


def test_the_training_subsets_are_nested_for_a_seed():
    """The 100 examples of a seed are inside its 300 (a learning curve moves with data, not noise)."""
    for seed in (0, 1, 2):
        small, large = set(subset(1000, 100, seed)), set(subset(1000, 300, seed))
        assert small < large
    assert set(subset(1000, 100, 0)) != set(subset(1000, 100, 1))


def test_bad_grids_are_refused_before_anything_trains(grid, small):
    with pytest.raises(ConfigError, match="more than the 192 training examples"):
        tk.experiment([tk.Probe()], small, **{**grid, "sizes": [16, 500]})
    with pytest.raises(ConfigError, match="seeds"):
        tk.experiment([tk.Probe()], small, **{**grid, "seeds": 0})
    with pytest.raises(ConfigError, match="at least one strategy"):
        tk.experiment([], small, **grid)
    with pytest.raises(ConfigError, match="unknown strategy|Unknown strategy|not a strategy"):
        tk.experiment(["no-such-strategy"], small, **grid)
    with pytest.raises(ConfigError, match="share a label"):
        tk.experiment([tk.LoRA(rank=4), tk.LoRA(rank=4)], small, **grid)
    with pytest.raises(ConfigError, match="lr must be"):
        tk.experiment([tk.Probe()], small, lr="fast", **grid)
    with pytest.raises(ConfigError, match="tune_trials"):
        tk.experiment([tk.Probe()], small, lr="tune", tune_trials=0, **grid)
    with pytest.raises(ConfigError, match="lr names strategies not in the grid"):
        tk.experiment([tk.Probe()], small, lr={"full": 1e-4}, **grid)
    with pytest.raises(ConfigError, match="set per cell"):
        tk.experiment([tk.Probe()], small, seed=3, **grid)
    with pytest.raises(ConfigError, match="storage 'nosuch://x' cannot be opened"):
        tk.experiment([tk.Probe()], small, storage="nosuch://x", **grid)
    assert not tk.list_runs(grid["runs_dir"])  # nothing trained


def test_the_same_name_with_another_grid_is_refused(grid, small):
    tk.experiment([tk.Probe()], small, **{**grid, "sizes": [16], "seeds": 1})
    with pytest.raises(ConfigError, match="another grid .*sizes.*resume it, or give this one another name"):
        tk.experiment([tk.Probe()], small, **{**grid, "sizes": [16, 48], "seeds": 1})


def test_the_bootstrap_interval_covers_both_seeds_and_examples():
    rng = np.random.default_rng(0)
    same = rng.integers(0, 2, size=(3, 400))
    mean, lo, hi = bootstrap_mean(same)
    assert lo < mean < hi and 0.03 < hi - lo < 0.15  # about +-2 standard errors of 1,200 coin flips
    # seeds that disagree widen it beyond what the examples alone give
    apart = np.vstack([np.ones(400), np.zeros(400), np.ones(400)])
    _, lo2, hi2 = bootstrap_mean(apart)
    assert hi2 - lo2 > 0.5
    assert bootstrap_mean(same) == bootstrap_mean(same)  # seeded: the same record, the same interval
    assert in_words(-0.004, -0.021, 0.013, "LoRA r8", "full", 300) == \
        "LoRA r8 vs full at 300 examples: -0.4 points [-2.1, +1.3], inside the noise"
    assert in_words(0.05, 0.02, 0.08, "full", "probe", 1000).endswith("full better")


def _table(rows):
    import pandas as pd
    cols = ["strategy", "size", "accuracy", "low", "high", "seeds", "test examples", "seconds", "memory_mb",
            "trainable", "lr"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows], columns=cols)


def test_learning_and_cost_curves_read_the_table():
    from tunekit import plots
    table = _table([("probe", 100, 0.60, 0.55, 0.65, 3, 500, 2.0, 100.0, 770, 1e-3),
                    ("probe", 1000, 0.66, 0.62, 0.70, 3, 500, 9.0, 100.0, 770, 1e-3),
                    ("full", 100, 0.58, 0.50, 0.66, 3, 500, 20.0, 400.0, 22_000_000, 2e-5),
                    ("full", 1000, 0.80, 0.77, 0.83, 3, 500, 90.0, 400.0, 22_000_000, 2e-5)])
    fig = plots.learning_curves(table)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert [t.name for t in lines] == ["probe", "full"] and len(bands) == 2
    assert list(bands[1].x) == [100, 1000, 1000, 100] and list(bands[1].y) == [0.66, 0.83, 0.77, 0.50]
    assert all(b.mode == "lines" for b in bands)  # a band's corners are no points of their own
    assert all(t.error_y.array is None for t in lines)  # the bands say the intervals
    one = plots.learning_curves(table[table["size"] == 100])  # one size: no band to draw, an error bar
    mean = [t for t in one.data if t.mode == "lines+markers"]
    assert [list(t.error_y.array) for t in mean] == [pytest.approx([0.05]), pytest.approx([0.08])]
    assert fig.layout.xaxis.type == "log" and fig.layout.meta["tunekit_kind"] == "learning_curves"
    cost = plots.cost_curves(table, x="trainable")
    assert [list(t.text) for t in cost.data] == [["100", "1,000"], ["100", "1,000"]]
    assert list(cost.data[1].error_y.array) == pytest.approx([0.08, 0.03])
    assert plots.cost_curves(table, x="memory_mb").layout.xaxis.type == "linear"
    with pytest.raises(ConfigError, match="x must be one of"):
        plots.cost_curves(table, x="accuracy")
    assert "no cell" in plots.learning_curves(table.iloc[:0]).layout.annotations[0].text


def test_what_to_choose_takes_the_cheapest_strategy_within_the_noise_of_the_best(grid, small):
    exp = tk.experiment([tk.Probe(), tk.Full()], small, **{**grid, "sizes": [48]})
    choice = exp.choose()
    assert list(choice["size"]) == [48]
    row = choice.iloc[0]
    table = exp.table().set_index("strategy")
    assert row["best"] == table["accuracy"].idxmax()
    inside = bool(exp.compare(row["best"], "probe" if row["best"] == "full" else "full")["inside_noise"].iloc[0])
    cheaper = table["seconds"].idxmin()
    assert row["choose"] == (cheaper if inside else row["best"]), (row.to_dict(), inside)
    assert row["said"].startswith(f"at 48 examples {row['best']} is best")
    with pytest.raises(ConfigError, match="cost must be"):
        exp.choose(cost="accuracy")
    with pytest.raises(ConfigError, match="'LoRA r8' is not in experiment"):
        exp.compare("LoRA r8", "full")


def test_the_command_line_trains_prints_and_resumes(tiny_dir, tmp_path, capsys):
    from tunekit.cli import main
    argv = ["experiment", "--strategies", "probe,full", "--sizes", "16,32", "--seeds", "1", "--model", tiny_dir,
            "--runs-dir", str(tmp_path / "runs"), "--name", "cli", "--eval-size", "16", "--test-size", "32",
            "--no-progress", "--report", str(tmp_path / "exp.html")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "95 % interval" in out and "at 16 examples" in out and "at 32 examples" in out
    page = (tmp_path / "exp.html").read_text()
    for words in ("Test accuracy vs training examples", "What to choose", "Paired differences", "full vs probe at 16"):
        assert words in page, words
    assert len(tk.list_runs(tmp_path / "runs")) == 4
    assert main(argv) == 0 and len(tk.list_runs(tmp_path / "runs")) == 4  # resumed: nothing trained again
    capsys.readouterr()
    assert main(argv[:4] + ["16,99999999"] + argv[5:]) == 2
    assert "argument --sizes" in capsys.readouterr().err
    assert main(argv[:4] + ["16,x"] + argv[5:]) == 2
    assert main(argv[:6] + ["2"] + argv[7:]) == 2  # the same name, another grid: refused, says how to resume
    err = capsys.readouterr().err
    assert "argument --name" in err and "resume" in err


def test_lr_tune_searches_each_strategy_on_validation_and_reports_on_test(grid, small, monkeypatch):
    """lr="tune": the same Optuna budget per (strategy, size) on seed 0's subset, judged by
    validation accuracy; every seed then trains at the best rate; the trials are kept."""
    kw = {**grid, "sizes": [32], "seeds": 2}
    exp = tk.experiment([tk.Full()], small, lr="tune", tune_trials=3, **kw)
    entry = exp.tuning["full|32"]
    base = tk.Full.default_lr
    assert len(entry["trials"]) == 3 and entry["space"] == pytest.approx([base / 10, base * 10])
    assert all(base / 10 <= t["lr"] <= base * 10 and 0 <= t["value"] <= 1 for t in entry["trials"])
    assert len({t["lr"] for t in entry["trials"]}) == 3  # three different rates tried
    best = max(entry["trials"], key=lambda t: t["value"])
    assert entry["best"] == best["lr"]
    for t in entry["trials"]:  # each trial is a run record of its own: validation, never test
        run = tk.load_run(exp.path.parent / t["run"])
        assert run.experiment["trial"] == "full|32"
        assert run.summary["val_accuracy"] == t["value"] and run.config["train"]["lr"] == pytest.approx(t["lr"])
    assert [exp.cells[f"full|32|{s}"]["lr"] for s in (0, 1)] == pytest.approx([best["lr"]] * 2)
    assert exp.grid["lr"] == "tune" and exp.grid["tune_trials"] == 3
    # resumed: no trial and no cell again
    calls = []
    monkeypatch.setattr(tk.experiments.runner, "Trainer", lambda *a, **k: calls.append(a) or None)
    again = tk.experiment([tk.Full()], small, lr="tune", tune_trials=3, **kw)
    assert calls == [] and len(again.done()) == 2


# ----- workers sharing one Optuna queue -----------------------------------------------------------------------
WORKER = """
import sys, tunekit as tk
csv, model, runs, url, grid = sys.argv[1:6]
strategies, sizes, seeds, epochs = {"two": ([tk.Probe(), tk.Full()], [16, 32], 2, 1),
                                    "slow": ([tk.Full()], [32], 1, 40)}[grid]
tk.experiment(strategies, csv, sizes=sizes, seeds=seeds, epochs=epochs, model=model, name=grid, runs_dir=runs,
              eval_size=16, batch_size=16, test_size=24, storage=url, worker=True, heartbeat=1, progress=False)
"""


def _reviews_csv(small, tmp_path):
    import pandas as pd
    df = pd.concat([small.train, small.validation, small.test])
    path = tmp_path / "reviews.csv"
    df.assign(label=[small.label_names[i] for i in df["label"]])[["text", "label"]].to_csv(path, index=False)
    return str(path)


def _worker(tmp_path, csv, model, runs, url, grid):
    import subprocess
    import sys
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen([sys.executable, str(script), csv, model, runs, url, grid],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _trials(url, name):
    import optuna
    study = optuna.load_study(study_name=f"tunekit-experiment:{name}", storage=url)
    return [(t.state.name, t.user_attrs.get("key")) for t in study.get_trials()]


@pytest.mark.parametrize("server", ["sqlite", "postgresql"])
def test_two_workers_share_one_queue_and_train_every_cell_once(server, tiny_dir, small, tmp_path, request):
    """Two worker processes against one queue: a SQLite file, and a real PostgreSQL server (the
    storage for workers on several machines), started for the test."""
    csv, runs = _reviews_csv(small, tmp_path), str(tmp_path / "runs")
    url = f"sqlite:///{tmp_path / 'queue.db'}" if server == "sqlite" else request.getfixturevalue("postgres_url")
    kw = dict(sizes=[16, 32], seeds=2, epochs=1, model=tiny_dir, name="two", runs_dir=runs, eval_size=16,
              batch_size=16, test_size=24, storage=url, heartbeat=1, progress=False)
    tk.experiment([tk.Probe(), tk.Full()], csv, work=False, **kw)  # fills the queue, trains nothing
    assert sorted(k for _, k in _trials(url, "two")) == sorted(f"{s}|{n}|{d}" for s in ("probe", "full")
                                                               for n in (16, 32) for d in (0, 1))
    assert not tk.list_runs(runs)
    # PostgreSQL: each worker its own disk, as on two machines (SQLite: one file, so one disk)
    disks = [runs, runs] if server == "sqlite" else [str(tmp_path / "machine-a"), str(tmp_path / "machine-b")]
    workers = [_worker(tmp_path, csv, tiny_dir, disk, url, "two") for disk in disks]
    outs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs
    trials = _trials(url, "two")
    done = sorted(k for state, k in trials if state == "COMPLETE")
    assert len(done) == 8 and len(set(done)) == 8, trials  # every cell once
    trained = [r for disk in sorted(set(disks)) for r in tk.list_runs(disk)]
    assert len(trained) == 8  # no cell trained twice
    exp = tk.experiment([tk.Probe(), tk.Full()], csv, **kw)  # the first call again: all done, nothing to train
    assert len(exp.done()) == 8  # (on PostgreSQL, the cells the workers' disks hold came through the storage)
    assert sum(len(tk.list_runs(disk)) for disk in sorted(set([runs, *disks]))) == 8
    assert sorted(exp.table()["seeds"]) == [2, 2, 2, 2]


def test_a_worker_without_the_shared_disk_gets_the_tuned_rates_and_gives_back_its_cells(tiny_dir, small, tmp_path):
    """Workers on other machines share only the storage: the tuned learning rates reach them through
    it, and the cells they finish come back through it into the first machine's record."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    kw = dict(sizes=[16], seeds=2, model=tiny_dir, name="apart", eval_size=16, batch_size=16, test_size=24,
              storage=url, progress=False, lr="tune", tune_trials=2)
    here = tk.experiment([tk.Full()], small, runs_dir=str(tmp_path / "a"), work=False, **kw)  # tunes, fills
    best = here.tuning["full|16"]["best"]
    assert not here.done() and len(tk.list_runs(tmp_path / "a")) == 2  # the two trials, no cell
    there = tk.experiment([tk.Full()], small, runs_dir=str(tmp_path / "b"), worker=True, **kw)
    assert len(there.done()) == 2 and {c["lr"] for c in there.done()} == {best}  # the rate from the storage
    assert there.tuning["full|16"]["best"] == best
    back = tk.experiment([tk.Full()], small, runs_dir=str(tmp_path / "a"), **kw)  # nothing left to train
    assert len(back.done()) == 2 and len(tk.list_runs(tmp_path / "a")) == 2
    assert back.table()["accuracy"].tolist() == there.table()["accuracy"].tolist()


def test_a_cell_whose_worker_was_killed_goes_to_another_worker(tiny_dir, small, tmp_path):
    import signal
    import time
    csv, runs = _reviews_csv(small, tmp_path), str(tmp_path / "runs")
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    kw = dict(sizes=[32], seeds=1, epochs=40, model=tiny_dir, name="slow", runs_dir=runs, eval_size=16,
              batch_size=16, test_size=24, storage=url, heartbeat=1, progress=False)
    tk.experiment([tk.Full()], csv, work=False, **kw)
    first = _worker(tmp_path, csv, tiny_dir, runs, url, "slow")
    deadline = time.time() + 300
    while time.time() < deadline and not (("RUNNING", "full|32|0") in _trials(url, "slow") and tk.list_runs(runs)):
        time.sleep(0.2)
    assert ("RUNNING", "full|32|0") in _trials(url, "slow"), "the first worker never started the cell"
    first.send_signal(signal.SIGKILL)  # mid-cell: no goodbye, no record of its end
    first.wait(timeout=60)
    second = _worker(tmp_path, csv, tiny_dir, runs, url, "slow")
    out = second.communicate(timeout=600)[0]
    assert second.returncode == 0, out
    states = sorted(s for s, k in _trials(url, "slow") if k == "full|32|0")
    assert states == ["COMPLETE", "FAIL"], _trials(url, "slow")  # the killed try failed, the retry finished
    exp = tk.experiment([tk.Full()], csv, **kw)
    assert len(exp.done()) == 1 and exp.cells["full|32|0"]["status"] == "completed"
    statuses = sorted(r.status for r in tk.list_runs(runs))
    assert statuses == ["completed", "crashed"], statuses  # the killed one's partial record is kept, marked


LAUNCHED = """
import sys, tunekit as tk
csv, model, runs = sys.argv[1:4]
exp = tk.experiment([tk.Probe(), tk.Full()], csv, sizes=[16], seeds=1, model=model, name="launched", runs_dir=runs,
                    eval_size=12, batch_size=8, test_size=24, max_length=32, precision="fp32", lr="tune",
                    tune_trials=2, progress=False)
import os
sys.stdout.flush()
# one write per process: two processes printing "a", "b" to one pipe can interleave their pieces
os.write(sys.stdout.fileno(), f"cells done: {len(exp.done())}\\n".encode())
import torch.distributed as dist
dist.barrier()
dist.destroy_process_group()  # as a script launched by torchrun ends (gloo's threads stopped before exit)
# and leave without the interpreter's teardown: under load, gloo's worker threads were seen to abort the
# process there ("terminate called without an active exception") after every record was written
os._exit(0)
"""


def test_a_cell_may_train_on_several_processes_launched_by_torchrun(tiny_dir, small, tmp_path):
    """``torchrun --nproc_per_node 2`` around an experiment: the main process pulls the cells and the
    learning-rate trials and writes every record; each cell and trial is one run of two processes
    (gradients averaged), none trained twice."""
    import subprocess
    import sys
    csv, runs = _reviews_csv(small, tmp_path), str(tmp_path / "runs")
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), csv, tiny_dir, runs], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert proc.stdout.count("cells done: 2") == 2  # both processes return the finished experiment
    exp = tk.list_experiments(runs)[0]
    assert len(exp.done()) == 2 and set(exp.tuning) == {"probe|16", "full|16"}
    trained = tk.list_runs(runs)
    assert len(trained) == 2 + 2 * 2  # two cells, two trials per strategy: each once
    assert {r.config["world_size"] for r in trained} == {2} and {r.status for r in trained} == {"completed"}
    assert {r.experiment.get("cell") or r.experiment.get("trial") for r in trained} == \
        {"probe|16|0", "full|16|0", "probe|16", "full|16"}
