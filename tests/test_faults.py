"""Faults a run record must survive (issue 11): the process killed mid-run, the disk full mid-run,
two processes choosing one name at once, the run directory removed while the run trains; and
listing many records reads only what the table shows."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tunekit as tk
from tunekit.engine import TrainingError
from tunekit.runs import RunWriter

# the `small` data of conftest.py, rebuilt in a child process
SMALL = """
import json, os, sys, time
import tunekit as tk
rt = tk.data.rotten_tomatoes()
df = rt.train.iloc[:240].assign(label=lambda d: d["label"].map(dict(enumerate(rt.label_names))))
small = tk.data.from_dataframe(df, label_names=rt.label_names, validation_size=24, test_size=24, name="rt-small")
"""


def _child(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "child.py"
    script.write_text(SMALL + textwrap.dedent(body))
    return script


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _digests(folder: Path) -> dict:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_whole(runs_dir: Path) -> None:
    """Nothing half-written: every JSON file parses, every metrics line parses, no temporary
    file is left, every safetensors file loads."""
    for f in runs_dir.rglob("*"):
        assert not f.name.endswith(".tmp"), f"temporary file left: {f}"
        if f.suffix == ".json":
            json.loads(f.read_text())
        elif f.name == "metrics.jsonl":
            _events(f)
        elif f.suffix == ".safetensors":
            load_file(str(f))


# ----- SIGKILL mid-run ---------------------------------------------------------------------------------------------
def test_a_run_killed_mid_run_reads_as_crashed_at_its_last_step(tiny_dir, small, fast, tmp_path):
    """A completed record is in the folder; a second run is killed with SIGKILL after a few steps.
    The killed record reads as crashed with the last step it logged, its earlier save (the new
    head's start values) loads and is exact, and the completed record is untouched."""
    runs_dir = Path(fast["runs_dir"])
    done = tk.train(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.Probe(), **fast)
    before = _digests(done.path)
    script = _child(tmp_path, f"""
        model = tk.load_model({tiny_dir!r}, label_names=small.label_names)
        tk.train(model, small, tk.Full(), runs_dir={str(runs_dir)!r}, name="killed", epochs=500,
                 train_size=64, batch_size=16, log_every=1, evals_per_epoch=1, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, str(script)], env=_env(), stderr=subprocess.PIPE)
    record = runs_dir / "killed"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the child run did not log 3 steps in time"
            steps = [e for e in _events(record / "metrics.jsonl") if e["event"] == "step"] \
                if (record / "metrics.jsonl").is_file() else []
            if len(steps) >= 3 and (record / "initial.safetensors").is_file():
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    logged = [e["step"] for e in _events(record / "metrics.jsonl") if "step" in e]
    assert json.loads((record / "summary.json").read_text())["status"] == "running"  # what the file says
    killed = tk.load_run(record)
    assert killed.status == "crashed"
    assert killed.summary["steps"] == logged[-1] >= 3
    assert f"last logged step: {logged[-1]}" in killed.summary["reason"]
    assert {r.name: r.status for r in tk.list_runs(runs_dir)} == {done.name: "completed", "killed": "crashed"}
    assert tk.runs.table(tk.list_runs(runs_dir)).set_index("run").loc["killed", "steps"] == logged[-1]

    # the earlier save: the new head's start values, whole and exact; no weights under a final name
    head = tk.load_model(tiny_dir, label_names=small.label_names).hf.classifier
    initial = killed.initial_tensors()
    assert torch.equal(initial["classifier.weight"], head.weight) and torch.equal(initial["classifier.bias"], head.bias)
    assert not killed.has_weights and not (record / "weights.safetensors").exists()
    _assert_whole(runs_dir)
    assert _digests(done.path) == before
    tk.load_run(done.path).load_model()


def _partial_saves(folder: Path, whole_size: int, value: float) -> list[str]:
    """The temporary files in ``folder`` that hold part of a save of ``value``s: shorter than a
    whole save, or full length (safetensors sizes its file first) with bytes not yet written."""
    out = []
    for f in folder.iterdir():
        if "tmp" not in f.name:
            continue
        raw = f.read_bytes()
        data = torch.frombuffer(bytearray(raw[-(whole_size - 8 - int.from_bytes(raw[:8], "little")):]),
                                dtype=torch.float32) if len(raw) == whole_size else None
        if data is None or not bool((data == value).all()):
            out.append(f.name)
    return out


def _identity(path: Path) -> tuple:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


def test_a_kill_in_the_middle_of_saving_weights_leaves_the_earlier_save_whole(tmp_path):
    """A process saves 64 MB of weights (every value i) for i = 1, 2, ...; it is killed with
    SIGKILL 0, 5 or 15 ms after the second save's first temporary file appears. (safetensors
    sizes its file first, so a save written in place would leave the full length with part of
    it zeros.) After each kill the weights under their final name are one whole save; at least
    one kill landed mid-write: it left a temporary file holding part of the second save, and
    the final name holds the first save."""
    n = 16 * 2**20
    landed = []
    for delay_ms in (0, 5, 15):
        root = tmp_path / f"after{delay_ms}ms"
        record = root / "runs" / "saves"
        child = root / "saves.py"
        root.mkdir()
        child.write_text(textwrap.dedent(f"""
            import torch
            from tunekit.writer import RunWriter
            w = RunWriter({str(root / "runs")!r}, "saves", {{}})
            for i in range(1, 1000):
                x = torch.full(({n},), float(i))
                print("saving", i, flush=True)
                w.save_tensors("weights.safetensors", {{"x": x}})
        """))
        proc = subprocess.Popen([sys.executable, str(child)], stdout=subprocess.PIPE, text=True, env=_env())
        try:
            assert proc.stdout.readline().split() == ["saving", "1"]
            assert proc.stdout.readline().split() == ["saving", "2"]  # the first save is complete
            first = _identity(record / "weights.safetensors")
            deadline = time.monotonic() + 120
            # the second save's file is open: a temporary one, or (a writer in place) the final one changed
            while not any("tmp" in e.name for e in os.scandir(record)) and \
                    _identity(record / "weights.safetensors") == first:
                assert proc.poll() is None and time.monotonic() < deadline, "the second save never started"
            time.sleep(delay_ms / 1000)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=60)
        started = [int(line.split()[1]) for line in proc.stdout.read().splitlines()]
        proc.stdout.close()
        final = record / "weights.safetensors"
        try:
            x = load_file(str(final))["x"]
        except Exception as e:  # noqa: BLE001 - the assertion says what it was
            raise AssertionError(f"the weights file is not a whole save: {e}") from e
        last = started[-1] if started else 2
        assert x.shape == (n,) and bool((x == x[0]).all()), "the weights file holds part of a save"
        assert 1 <= int(x[0]) <= last
        partial = _partial_saves(record, final.stat().st_size, float(last))
        landed.append({"delay_ms": delay_ms, "partial": partial, "final": int(x[0]), "saving": last})
        if partial:
            assert int(x[0]) == last - 1, landed[-1]  # the save it interrupted never reached the final name
    assert any(k["partial"] for k in landed), f"no kill landed in the middle of a write: {landed}"


# ----- the disk full mid-run ---------------------------------------------------------------------------------------
def test_a_full_disk_mid_run_fails_the_run_in_words_and_leaves_every_file_whole(tiny, small, fast, monkeypatch):
    """ENOSPC from the OS's write for every file of the runs folder from step 3 on (the first
    refused write still puts half its bytes on disk, as a real full disk can)."""
    runs_dir = Path(fast["runs_dir"])
    other = tk.train(tk.load_model(tiny.path, label_names=small.label_names), small, tk.Probe(), **fast)
    other_files = _digests(other.path)
    full = {"now": False, "refused": []}
    real_write = os.write

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if full["now"] and target.startswith(str(runs_dir)):
            if not full["refused"]:
                real_write(fd, bytes(data[:max(1, len(data) // 2)]))
            full["refused"].append(os.path.basename(target))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    seen = []

    def on_step(ev):
        seen.append(ev.payload["step"])
        if ev.payload["step"] == 3:
            full["now"] = True

    with pytest.raises(TrainingError) as info:
        tk.train(tiny, small, tk.Full(), callbacks={"step": on_step}, name="full-disk",
                 **{**fast, "epochs": 5, "log_every": 1})
    record = runs_dir / "full-disk"
    message = str(info.value)
    assert "no space left on the disk" in message and str(record) in message and "mounted at" in message
    assert seen == [1, 2, 3]  # it stopped at the first refused write, not at the end
    assert full["refused"][0] == "metrics.jsonl"
    monkeypatch.undo()

    _assert_whole(runs_dir)  # the half-written line was taken back; summary.json is its last whole version
    assert [e["step"] for e in _events(record / "metrics.jsonl") if e["event"] == "step"] == [1, 2, 3]
    failed = tk.load_run(record)
    assert failed.status == "crashed" and "last logged step: 3" in failed.summary["reason"]
    assert {r.name: r.status for r in tk.list_runs(runs_dir)} == {other.name: "completed", "full-disk": "crashed"}
    assert _digests(other.path) == other_files
    tk.load_run(other.path).load_model()


def _can_mount_tmpfs(where: Path) -> bool:
    where.mkdir()
    try:
        out = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {where}"],
                             capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


@pytest.mark.slow
def test_a_real_full_disk_mid_run_and_at_the_weights(tiny_dir, small, fast, tmp_path):
    """A real 8 MB tmpfs (in a user and mount namespace): run A fills up mid-run (another file
    takes the last free space at step 3), run B's weights (17 MB) do not fit. Both fail naming
    the disk; the record already there, and every file, stay whole."""
    disk = tmp_path / "disk"
    if not _can_mount_tmpfs(disk):
        pytest.skip("this kernel does not let this user mount a tmpfs in a namespace (unshare -rm)")
    other = tk.train(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.Probe(), **fast)
    after = tmp_path / "after"
    script = _child(tmp_path, f"""
        import shutil
        from tunekit.engine import TrainingError
        disk, runs = {str(disk)!r}, {str(disk / "runs")!r}
        shutil.copytree({str(other.path)!r}, runs + "/" + {other.name!r})
        out = {{}}

        def fill(ev):
            if ev.payload["step"] == 3:  # another program takes the last free space
                fd = os.open(disk + "/filler", os.O_WRONLY | os.O_CREAT)
                try:
                    while True:
                        os.write(fd, b"x" * 4096)
                except OSError:
                    pass
                finally:
                    os.close(fd)
        for name, callbacks in (("A", {{"step": fill}}), ("B", {{}})):
            model = tk.load_model({tiny_dir!r}, label_names=small.label_names)
            try:
                run = tk.train(model, small, tk.Full(), runs_dir=runs, name=name, epochs=40 if name == "A" else 1,
                               train_size=64, batch_size=16, log_every=1, evals_per_epoch=1, progress=False,
                               callbacks=callbacks)
                out[name] = {{"ok": run.status}}
            except TrainingError as e:
                out[name] = {{"error": str(e)}}
            if os.path.exists(disk + "/filler"):
                os.remove(disk + "/filler")
        shutil.copytree(runs, {str(after)!r})
        print("RESULT " + json.dumps(out))
    """)
    cmd = f"mount -t tmpfs -o size=8m tmpfs {disk} && exec {sys.executable} {script}"
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    for name in ("A", "B"):
        assert "error" in out[name], out
        assert "no space left on the disk" in out[name]["error"] and f"{disk}/runs/{name}" in out[name]["error"], out
        assert f"mounted at {disk}" in out[name]["error"], out
    assert "while writing metrics.jsonl" in out["A"]["error"]  # a step's line, mid-run
    assert "weights.safetensors" in out["B"]["error"]

    _assert_whole(after)
    runs = {r.name: r for r in tk.list_runs(after)}
    assert sorted(runs) == sorted([other.name, "A", "B"])
    assert runs[other.name].status == "completed" and _digests(after / other.name) == _digests(other.path)
    steps_a = [e["step"] for e in _events(after / "A" / "metrics.jsonl") if e["event"] == "step"]
    assert 3 <= steps_a[-1] < 40  # stopped at the first line that found no room (of 160 steps)
    assert runs["A"].status in ("crashed", "failed") and runs["A"].summary["reason"]
    assert runs["B"].status == "failed" and "no space left on the disk" in runs["B"].summary["reason"]
    assert not runs["B"].has_weights  # no truncated weights.safetensors under the final name
    runs[other.name].load_model()


# ----- two processes, one name, at once ----------------------------------------------------------------------------
def _blocked_opening_a_fifo(pid: int) -> bool:
    """Whether process ``pid`` waits in the kernel for a FIFO's other end (Linux: fifo_open)."""
    with open(f"/proc/{pid}/wchan") as f:
        return f.read().strip() == "wait_for_partner"


def test_two_processes_starting_runs_with_one_name_at_once_get_two_records(tmp_path):
    """The children wait on one FIFO and are released together by the kernel, then each
    creates a record named "same" and writes what it is. Five rounds. Before each release both
    are seen waiting in the FIFO's open, and both pass it only after the parent opened it."""
    child = tmp_path / "start.py"
    child.write_text(textwrap.dedent("""
        import os, sys, time
        from tunekit.writer import RunWriter
        who, runs_dir, gate = sys.argv[1], sys.argv[2], sys.argv[3]
        print("ready", flush=True)
        open(gate).close()  # blocks until the parent opens the FIFO for writing
        print("released", time.monotonic_ns(), flush=True)
        w = RunWriter(runs_dir, "same", {"who": who})
        w.log("step", {"step": 1, "who": who})
        w.finish("completed", None, who=who)
        print(w.name, flush=True)
    """))
    for round_ in range(5):
        runs_dir, gate = tmp_path / f"runs{round_}", tmp_path / f"gate{round_}"
        os.mkfifo(gate)
        procs = [subprocess.Popen([sys.executable, str(child), who, str(runs_dir), str(gate)],
                                  stdout=subprocess.PIPE, text=True, env=_env()) for who in ("a", "b")]
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while not all(_blocked_opening_a_fifo(p.pid) for p in procs):  # both wait at the gate
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a child never reached the gate"
            time.sleep(0.01)
        opened = time.monotonic_ns()
        os.close(os.open(gate, os.O_WRONLY))
        outs = [p.communicate(timeout=60)[0].split("\n") for p in procs]
        assert all(p.returncode == 0 for p in procs)
        released = [int(out[0].split()[1]) for out in outs]
        assert all(t >= opened for t in released), (opened, released)  # neither passed the gate before
        names = [out[1].strip() for out in outs]
        assert sorted(names) == ["same", "same-2"]
        runs = tk.list_runs(runs_dir)
        assert sorted(r.name for r in runs) == ["same", "same-2"]
        for r, who in zip(sorted(runs, key=lambda r: names.index(r.name)), ("a", "b")):
            assert (r.config["who"], r.summary["who"], r.status) == (who, who, "completed")
            assert [e["who"] for e in r.metrics()] == [who]


def test_threads_starting_runs_with_one_name_at_once_get_a_record_each(tmp_path):
    """8 threads of one process (the lab trains in a thread), released by one barrier, with the
    interpreter switching threads as often as it can; ten rounds."""
    import threading
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for round_ in range(10):
            root, barrier, made, errors = tmp_path / str(round_), threading.Barrier(8), [], []

            def start(i, barrier=barrier, made=made, root=root, errors=errors):
                barrier.wait()
                try:
                    made.append(RunWriter(root, "same", {"who": i}))
                except Exception as e:  # noqa: BLE001 - collected for the assertion
                    errors.append(e)
            threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors
            assert len({w.name for w in made}) == 8
            assert sorted(r.config["who"] for r in tk.list_runs(root)) == list(range(8))
    finally:
        sys.setswitchinterval(old)


# ----- the run directory removed while the run trains --------------------------------------------------------------
def test_removing_the_run_directory_mid_run_fails_the_run_at_once(tiny, small, fast):
    runs_dir = Path(fast["runs_dir"])
    seen = []

    def remove(ev):
        seen.append(ev.payload["step"])
        if ev.payload["step"] == 2:
            shutil.rmtree(runs_dir / "doomed")

    with pytest.raises(TrainingError, match=r"the run directory .*doomed was removed while the run trained "
                                            r"\(after step 2, the last one recorded\)") as info:
        tk.train(tiny, small, tk.Full(), callbacks={"step": remove}, name="doomed",
                 **{**fast, "epochs": 20, "log_every": 1})
    assert seen == [1, 2]  # at once: no step after the one that found the directory gone
    assert str(runs_dir / "doomed") in str(info.value)
    assert not (runs_dir / "doomed").exists()  # not made again by the end of the run
    assert info.value.run is not None and info.value.run.name == "doomed"


def test_a_record_replaced_by_another_directory_is_not_written_into(tmp_path):
    w = RunWriter(tmp_path, "r", {})
    w.log("step", {"step": 1})
    shutil.rmtree(w.path)
    w.path.mkdir()  # someone made a folder of the same name
    with pytest.raises(TrainingError, match="was removed while the run trained"):
        w.log("step", {"step": 2})
    w.log("train_end", {})  # after the failure the engine's clean-up writes do nothing
    w.finish("failed", "x")
    assert list(w.path.iterdir()) == []


# ----- many records: listing reads summaries only ------------------------------------------------------------------
_OPENED: list | None = None


def _audit(event, args):
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, os.PathLike)):
        _OPENED.append(os.fspath(args[0]))


sys.addaudithook(_audit)


def test_listing_and_the_runs_table_read_only_config_and_summary(tmp_path, small):
    """Every file the listing, the comparison table and the lab's runs panel open, seen by an
    audit hook: config.json and summary.json once per record, nothing else; metrics.jsonl
    only for the record marked running by a process that is gone (its last step), and for
    the runs the panel selects (at most four: its Compare tab draws their curves)."""
    global _OPENED
    from tunekit.report import formatted_table
    from tunekit.widgets.views import RunsPanel
    for i in range(5):
        w = RunWriter(tmp_path, f"r{i}", {"strategy": {"name": "full"}, "params": {"trainable": 1, "total": 2}})
        for step in range(1, 4):
            w.log("step", {"step": step, "loss": 0.5})
        w.save_tensors("weights.safetensors", {"x": torch.zeros(3)})
        w.finish("completed", None, steps=3, val_accuracy=0.5 + i / 10)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    crashed = tmp_path / "crashed"
    shutil.copytree(tmp_path / "r0", crashed)
    summary = json.loads((crashed / "summary.json").read_text())
    (crashed / "summary.json").write_text(json.dumps({**summary, "status": "running", "pid": int(dead.stdout),
                                                      "steps": None}))
    _OPENED = []
    try:
        runs = tk.list_runs(tmp_path)
        listed = list(_OPENED)
        table = formatted_table(runs)
        panel = RunsPanel(str(tmp_path), small)
        panel.refresh()
        for _ in range(600):  # the Compare view computes in a thread
            if panel.state["Compare"] != "computing":
                break
            time.sleep(0.05)
    finally:
        opened, _OPENED = _OPENED, None
    drawn = set(panel.select.value)
    assert len(drawn) <= 4
    assert len(runs) == len(table) == 6
    assert {r.name: r.status for r in runs}["crashed"] == "crashed"
    names = [Path(p).relative_to(tmp_path).as_posix() for p in opened if Path(p).is_relative_to(tmp_path)]
    assert sorted(set(names)) == sorted({f"{d}/{f}" for d in ("r0", "r1", "r2", "r3", "r4", "crashed")
                                         for f in ("config.json", "summary.json")} | {"crashed/metrics.jsonl"}
                                        | {f"{d}/metrics.jsonl" for d in drawn})
    listed = [Path(p).relative_to(tmp_path).as_posix() for p in listed if Path(p).is_relative_to(tmp_path)]
    assert sorted(n for n in listed if n.endswith("summary.json")) == sorted(f"{d}/summary.json" for d in
                                                                             ("r0", "r1", "r2", "r3", "r4", "crashed"))
