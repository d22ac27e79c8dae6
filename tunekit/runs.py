"""Run records on disk: one directory per run, JSON + safetensors, no pickle.

    tunekit-runs/<run name>/
        config.json          what was made and how: kind (train, prune, quantize,
                             distil or import), parent (the record it started from, or null for
                             the pretrained checkpoint), structure (steps replayed on
                             the parent's model: blocks kept, heads or neurons removed,
                             a new head), task, format of the weights (peft,
                             safetensors, torchao), model,
                             data + split seed, strategy, hyper-parameters, versions
        metrics.jsonl        one line per event (step, eval, epoch, ...), appended live
        summary.json         status (running / completed / stopped / failed) + final metrics
        initial.safetensors  starting values of trained tensors that are not in the
                             pretrained checkpoint (new head, LoRA A/B)
        weights.safetensors  final values of every trained tensor (not for LoRA)
        adapter/             adapters (LoRA, IA3): peft's own save_pretrained format,
                             with a model card (README.md)

Every JSON and safetensors file is written atomically (temporary file, fsync, rename).
A record that is still marked "running" but whose process is gone (or, in the process
that wrote it, whose writer stopped) is reported as "crashed", with the last step it
logged. Listing reads config.json and summary.json only (summaries are re-read when
they change). :func:`list_runs` skips a corrupt record with a warning. Records written
before ``kind`` existed read as ``kind="train"``, their task as classification.

This module imports no torch at import time, so plots and reports can read runs
without it.
"""
from __future__ import annotations

import json
import os
import socket
import warnings
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from tunekit.config import DEFAULT_RUNS_DIR, ConfigError, RunRecordError, TunekitError
from tunekit.data import BUILTIN, DEDUP, load
from tunekit.metrics import for_task
from tunekit.record_fields import CONFIG, EVENT, SUMMARY, check, problem
from tunekit.run_names import display_name
from tunekit.writer import STATUSES, RecordWriteError, RunWriter, now, sanitize_name, write_json, writing_here  # noqa: F401 - this module's API too

LR_COLUMNS = ["step", "phase", "group", "lr"]
"""The columns of a table of learning rates (:meth:`Run.learning_rates`, and the planned ones)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Run:
    """A run record, live (just trained, ``.model`` set) or reloaded from disk."""

    def __init__(self, path: str | os.PathLike, model=None):
        if not isinstance(path, (str, os.PathLike)):
            raise RunRecordError(f"a run is opened from its folder's path (got {type(path).__name__} {path!r})")
        self.path = Path(path)
        try:
            self.path.exists()
        except (OSError, ValueError) as e:  # a name the system cannot look up: too long, a NUL byte
            raise RunRecordError(f"{str(path)[:200]!r} cannot be a run record's folder ({e})") from None
        if self.path.exists() and not self.path.is_dir():
            raise RunRecordError(f"{self.path} is a file, not a run record (a folder with config.json and "
                                 "summary.json)")
        self.model = model
        self.config = self._read_json("config.json", CONFIG)
        self._summary_stamp = self._stamp("summary.json")  # taken first: a later rewrite is then seen
        self._summary = self._read_json("summary.json", SUMMARY)
        self._last_step: tuple = (None, None)  # (metrics.jsonl stamp, last logged step)

    def _stamp(self, name: str) -> Optional[tuple]:
        """What changes whenever the file is rewritten (every JSON write is a rename: a new inode)."""
        try:
            st = os.stat(self.path / name)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _read_json(self, name: str, fields: dict) -> dict:
        """``name`` read, with the types of the ``fields`` it declares checked
        (:mod:`tunekit.record_fields`): a RunRecordError names the file and what is wrong."""
        f = self.path / name
        try:
            with open(f, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError as e:
            raise RunRecordError(f"{self.path} is not a run record: {name} is missing") from e
        except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, or a number too long to read
            raise RunRecordError(f"{f} is corrupt: {str(e)[:200]}") from e
        return check(data, fields, f)

    # ----- what was run ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind(self) -> str:
        """``train``, ``prune``, ``quantize`` or ``distil`` (see :mod:`tunekit.post`), or ``import``
        (an adapter or fine-tune made elsewhere: :func:`tunekit.imports.import_run`)."""
        return self.config.get("kind", "train")

    @property
    def experiment(self) -> Optional[dict]:
        """``{"name", "path", "cell"}`` of the experiment this run is a cell (``"cell": "lora-r8|300|1"``)
        or a learning-rate trial (``"trial": "lora-r8|300"``) of; None for a run of its own."""
        return self.summary.get("experiment")

    @property
    def task(self) -> str:
        return self.config.get("task") or self.config.get("model", {}).get("task") or "classification"

    @property
    def parent(self) -> Optional[dict]:
        """``{"name", "path"}`` of the record this one started from; None for the pretrained
        checkpoint. Records from before ``parent`` existed give their ``trained_before``."""
        if "parent" in self.config:
            return self.config["parent"]
        before = self.config.get("trained_before") or []
        return {"name": before[-1], "path": None} if before else None

    def parent_run(self) -> Optional["Run"]:
        """The parent record, opened (found by its path, or by name beside this one)."""
        p = self.parent
        if p is None:
            return None
        for candidate in ([Path(p["path"])] if p.get("path") else []) + [self.path.parent / p["name"]]:
            if (candidate / "config.json").is_file():
                return Run(candidate)
        raise RunRecordError(f"{self.path / 'config.json'}: {self.name} started from {p['name']!r}, whose record is "
                             f"not at {p.get('path') or self.path.parent / p['name']}")

    def ancestors(self) -> list["Run"]:
        """The records this one started from, its parent first, back to the one that started from
        the pretrained checkpoint. A parent that is gone, or a chain of parents that comes back
        to a record already in it (config.json files edited or copied by hand), is a
        RunRecordError that names the config.json files involved."""
        chain: list[Run] = []
        seen = [os.path.realpath(self.path)]
        run = self
        while (parent := run.parent_run()) is not None:
            key = os.path.realpath(parent.path)
            if key in seen:
                loop = [self, *chain][seen.index(key):]
                files = " -> ".join(str(r.path / "config.json") for r in loop + loop[:1])
                raise RunRecordError(f"the records' parents make a cycle ({files}): a record's parent "
                                     "must be an earlier record")
            seen.append(key)
            chain.append(parent)
            run = parent
        return chain

    @property
    def format(self) -> Optional[str]:
        """How the weights are stored: ``"peft"`` (an adapter folder), ``"safetensors"`` (the
        trained tensors), or None when the record holds none."""
        fmt = self.config.get("format")
        if fmt is None:  # records from before `format` existed: read what is there
            fmt = "peft" if (self.path / "adapter").is_dir() else "safetensors"
        present = (self.path / "adapter").is_dir() if fmt == "peft" else (self.path / "weights.safetensors").is_file()
        return fmt if present else None

    @property
    def has_weights(self) -> bool:
        return self.format is not None

    @property
    def strategy(self) -> dict:
        return self.config.get("strategy", {})

    @property
    def label(self) -> str:
        return self.config.get("strategy_label", self.strategy.get("name", "?"))

    @property
    def display_name(self) -> str:
        """What the run is, in words, with what tells it from its neighbours: the strategy
        and its settings, the training examples and the epochs, e.g. ``"LoRA r8 α16 · 200 ex ·
        1 ep"``, ``"probe · 200 ex · 1 ep"``; a post-training record names what was done to
        which record, by its number, e.g. ``"prune 50 % of #1"``, ``"distil of #1, 3 blocks"``.
        Records that lack a field leave it out. Two runs can share it:
        :func:`tunekit.plots.display_names` tells them apart."""
        if "_display_name" not in self.__dict__:
            self._display_name = display_name(self)
        return self._display_name

    @property
    def summary(self) -> dict:
        """The latest summary.json (re-read, so a run training elsewhere shows progress)."""
        stamp = self._stamp("summary.json")
        if stamp is None or stamp != self._summary_stamp:  # re-read only when it was rewritten
            try:
                self._summary = self._read_json("summary.json", SUMMARY)
                self._summary_stamp = stamp
            except RunRecordError:
                pass
        s = dict(self._summary)
        if s.get("status") == "running" and self.model is None and self._writer_gone(s):
            s["status"] = "crashed"
            s["reason"] = "the training process ended before the run finished"
            last = self.last_logged_step()
            if last is not None:
                s["reason"] += f" (last logged step: {last})"
                s.setdefault("steps", last)
        return s

    def _writer_gone(self, s: dict) -> bool:
        """Whether the process that marked this record running can no longer finish it: it is
        gone, or it is this process and no writer here holds the record (its run stopped)."""
        pid = s.get("pid")
        if s.get("host") != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool):
            return False
        if pid == os.getpid():
            return not writing_here(self.path)
        return not _pid_alive(pid)

    def last_logged_step(self) -> Optional[int]:
        """The last step number in metrics.jsonl (read from its end), or None."""
        stamp = self._stamp("metrics.jsonl")
        if stamp is None:
            return None
        if self._last_step[0] == stamp:
            return self._last_step[1]
        last = None
        try:
            with open(self.path / "metrics.jsonl", "rb") as fh:
                fh.seek(max(0, stamp[2] - 65536))
                tail = fh.read()
        except OSError:
            return None
        for line in reversed(tail.splitlines()):
            try:
                event = json.loads(line.decode("utf-8"))
            except (ValueError, RecursionError):
                continue
            if isinstance(event, dict) and isinstance(event.get("step"), int):
                last = event["step"]
                break
        self._last_step = (stamp, last)
        return last

    def update_summary(self, **fields) -> None:
        """Add ``fields`` to summary.json (atomically): measurements made after the run ended."""
        summary = self._read_json("summary.json", SUMMARY)
        summary.update(fields)
        write_json(self.path / "summary.json", summary)
        self._summary, self._summary_stamp = summary, self._stamp("summary.json")

    @property
    def status(self) -> str:
        return self.summary.get("status", "?")

    def metrics(self) -> list[dict]:
        """Every logged event, in order. A line that cannot be read (torn by a crash mid-write,
        bytes that are not UTF-8, a number too long to parse, a field of another type than
        :data:`tunekit.record_fields.EVENT` says) is skipped."""
        out = []
        try:
            with open(self.path / "metrics.jsonl", "rb") as fh:
                for line in fh:
                    try:
                        event = json.loads(line.decode("utf-8"))
                    except (ValueError, RecursionError):
                        continue
                    if problem(event, EVENT) is None:
                        out.append(event)
        except FileNotFoundError:
            pass
        return out

    def learning_rates(self) -> pd.DataFrame:
        """The rate every layer group took: one row per (step event, group) with the columns
        ``step, phase, group, lr`` (what :func:`tunekit.learning_rates` gives before
        training): the ``step`` events' ``lrs``, or their ``lr`` where one group trained (named
        from the summary's ``rates``; ``"all"`` in a record made before them). A ``step`` event
        is written every ``log_every`` steps; a record without any gives an empty table."""
        phases = self.summary.get("rates") or []
        rows, phase = [], 0
        for e in self.metrics():
            if e.get("event") == "phase_start":
                phase = int(e.get("phase", phase))
            if e.get("event") != "step" or "lr" not in e:
                continue
            lrs = e.get("lrs")
            if lrs is None:
                one = phase < len(phases) and isinstance(phases[phase], dict) and len(phases[phase]) == 1
                lrs = {(next(iter(phases[phase])) if one else "all"): e["lr"]}
            rows += [(e["step"], phase, g, v) for g, v in lrs.items()]
        return pd.DataFrame(rows, columns=LR_COLUMNS)

    def history(self, event: str = "step") -> pd.DataFrame:
        """A DataFrame of one event kind: ``"step"`` (loss per step) or ``"eval"``."""
        rows = [{k: v for k, v in m.items() if k != "event"} for m in self.metrics() if m.get("event") == event]
        return pd.DataFrame(rows)

    def generations(self, step: Optional[int] = None) -> list[dict]:
        """What a text-to-text run wrote at an evaluation (the last one, or the one at ``step``):
        ``[{"source", "reference", "generated"}, ...]``; empty for other tasks."""
        evals = [m for m in self.metrics() if m.get("event") == "eval" and m.get("generations")]
        if step is not None:
            evals = [m for m in evals if m.get("step") == step]
        return [dict(g) for g in evals[-1]["generations"]] if evals else []

    def metrics_summary(self) -> dict:
        """The task's final validation metrics, without the ``val_`` prefix (what it has)."""
        s = self.summary
        return {m.key: s.get(f"val_{m.key}") for m in for_task(self.task) if f"val_{m.key}" in s}

    def row(self) -> dict:
        """One summary row for comparison tables: the run, its cost and the metrics its task
        has (classification: accuracy, macro_f1, val_loss; causal LM: perplexity, val_loss)."""
        s, p = self.summary, self.config.get("params", {})
        row = {"run": self.name, "strategy": self.label, "kind": self.kind, "task": self.task,
               "status": s.get("status"), "trainable_params": p.get("trainable"), "total_params": p.get("total"),
               "trainable_percent": p.get("percent")}
        for key, value in self.metrics_summary().items():
            row["val_loss" if key == "loss" else key] = value
        row.update({"wall_time_s": s.get("wall_time_s"), "samples_per_s": s.get("samples_per_s"),
                    "peak_memory_mb": s.get("peak_memory_mb"), "memory_kind": s.get("memory_kind"),
                    "device": self.config.get("device"), "steps": s.get("steps")})
        for key in ("nonzero_params", "size_mb", "latency_ms"):  # measured by tunekit.post
            if s.get(key) is not None:
                row[key] = s[key]
        row["parent"] = (self.parent or {}).get("name")
        return row

    # ----- weights ---------------------------------------------------------------------------------
    @property
    def model_source(self) -> str:
        """Where the pretrained model is: the recorded path if it still exists, else the name/id."""
        m = self.model_entry()
        return m["path"] if m.get("path") and Path(m["path"]).exists() else (m.get("source") or m["path"])

    def model_entry(self) -> dict:
        """config.json's ``model`` entry, checked to say which model (and, for classification,
        which labels) the run trained."""
        m = self.config.get("model")
        if not isinstance(m, dict) or not (m.get("source") or m.get("path")):
            raise RunRecordError(f"{self.path / 'config.json'} does not say which model the run trained "
                                 "(no 'model' with a 'source'); the record cannot rebuild it")
        if self.task == "classification" and not isinstance(m.get("label_names"), list):
            raise RunRecordError(f"{self.path / 'config.json'}: 'model' has no 'label_names'; the record cannot "
                                 "rebuild its classification head")
        return m

    def dataset(self, data=None):
        """``data`` loaded (a TextDataset, a built-in name, ...), or, for None, the built-in data
        set this run was trained on; a run trained on other data needs ``data`` given."""
        if data is None:
            name = self.config.get("data", {}).get("name")
            if name not in BUILTIN:
                raise ConfigError(f"run {self.name!r} was trained on {name!r}, which is not a built-in data set "
                                  f"({sorted(BUILTIN)}): pass data=<the same TextDataset>")
            return self._builtin_data(name)
        return load(data)

    def _builtin_data(self, name: str):
        """The built-in set as this run saw it: its seed and split sizes, and the duplicate rule
        it was made with (records before 2026-12-04 name none and dropped byte-identical texts
        only; the sizes they recorded tell which rule rebuilds them)."""
        seen = self.config.get("data") or {}
        kwargs = {}
        if isinstance(seen.get("seed"), int) and not isinstance(seen.get("seed"), bool):
            kwargs["seed"] = seen["seed"]
        sizes = seen.get("sizes") if isinstance(seen.get("sizes"), dict) else {}
        for split in ("validation", "test"):
            if isinstance(sizes.get(split), int) and not isinstance(sizes.get(split), bool):
                kwargs[f"{split}_size"] = sizes[split]
        rules = [seen["dedup"]] if seen.get("dedup") in DEDUP else list(DEDUP)
        first = None
        for rule in rules:
            try:
                data = BUILTIN[name](dedup=rule, **kwargs)
            except TunekitError as e:
                raise RunRecordError(f"{self.path / 'config.json'}: its data entry cannot rebuild {name!r}: "
                                     f"{e}") from None
            if all(data.describe()["sizes"].get(s) == sizes.get(s) for s in ("train", "validation", "test")):
                return data
            first = first or data
        warnings.warn(f"run {self.name!r}: the built-in {name!r} now splits into {first.describe()['sizes']}, not the "
                      f"{sizes} this run recorded; its numbers on it may differ from the record's", stacklevel=3)
        return first

    @property
    def seed(self) -> int:
        return int(self.config.get("train", {}).get("seed", 0))

    @property
    def pooling(self) -> Optional[str]:
        return self.summary.get("pooling") or self.config.get("model", {}).get("pooling")

    @property
    def structure(self) -> list[dict]:
        """The structural steps this record applies to its parent's model before its weights
        (blocks kept for a student, heads or neurons removed, a new head); [] for none."""
        return list(self.config.get("structure") or [])

    # ----- the model: rebuilt by tunekit.restore (records are data; rebuilding is the model side's job)
    @property
    def snapshot_steps(self) -> list[int]:
        """The steps at which this run's model can be rebuilt (``load_model(step=...)``): 0 (its
        start), those kept in ``snapshots/`` and its last step; [] for a run trained without
        ``snapshots`` (or without weights)."""
        if not (self.config.get("train") or {}).get("snapshots") or not self.has_weights:
            return []
        last = self.summary.get("steps") or 0
        kept = [s["step"] for s in self.summary.get("snapshots") or [] if 0 < s["step"] < last]
        return [0, *kept, last] if last > 0 else []

    def load_model(self, device: Optional[str] = None, merged: bool = False, step: Optional[int] = None):
        """Rebuild the trained model: its parent's result (or the pretrained model), with the
        record's weights applied by the loader of its ``format``. Works after a kernel restart.
        ``merged=True`` folds an adapter into the weights (a plain model, no peft layers).
        ``step``: the model at one of :attr:`snapshot_steps` instead of the end.
        See :func:`tunekit.restore.load_model`."""
        from tunekit import restore  # lazy: reading records needs no torch (plots, reports)
        return restore.load_model(self, device=device, merged=merged, step=step)

    def load_start(self, device: Optional[str] = None):
        """The model as it was when this record's run started (eval mode): its parent's result
        (or the pretrained checkpoint), with the record's ``initial.safetensors`` applied."""
        from tunekit import restore  # lazy: reading records needs no torch
        return restore.load_start(self, device=device)

    def initial_tensors(self) -> dict:
        """Starting values (canonical names) of the trained tensors that the parent (or the
        checkpoint) does not hold: the new head (:func:`tunekit.restore.initial_tensors`)."""
        from tunekit import restore  # lazy: reading records needs no torch
        return restore.initial_tensors(self)

    def export(self, folder: str | os.PathLike) -> Path:
        """Write the trained model as a plain Hugging Face folder that needs no tunekit: its
        weights (an adapter merged in), the tokenizer and a model card (README.md) whose
        snippet reproduces tunekit's logits. ``folder`` must not exist or be empty."""
        from tunekit import restore  # lazy: reading records needs no torch
        return restore.export(self, folder)

    def __repr__(self) -> str:
        metrics = "".join(f", {k}={v:.3f}" for k, v in list(self.metrics_summary().items())[:1]
                          if isinstance(v, (int, float)))
        return f"Run({self.name!r}, {self.label}, {self.status}{metrics})"


def load_run(path: str | os.PathLike) -> Run:
    """Open one run record."""
    return Run(path)


def list_runs(runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> list[Run]:
    """Every run under ``runs_dir``, oldest first. Corrupt records are skipped with a warning."""
    if not isinstance(runs_dir, (str, os.PathLike)):
        raise RunRecordError(f"runs_dir must be a folder's path (got {type(runs_dir).__name__} {runs_dir!r})")
    try:
        root = Path(runs_dir).expanduser()
        if not root.is_dir():
            return []
    except (OSError, ValueError, RuntimeError):  # a name the system cannot look up: too long, a NUL byte, ~nobody
        return []
    runs = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (d / "experiment.json").exists():  # an experiment's record: its cells are runs of their own
            continue
        try:
            runs.append(Run(d))
        except RunRecordError as e:
            warnings.warn(f"skipping run record: {e}", stacklevel=2)
    def order(run: Run):  # started to the second; within a second, the number the record took
        number = run.config.get("number")
        return (str(run.summary.get("started") or ""),
                number if isinstance(number, int) and not isinstance(number, bool) else float("inf"), run.name)
    return sorted(runs, key=order)


def table(runs: Iterable[Run]) -> pd.DataFrame:
    """A comparison table: one row per run."""
    return pd.DataFrame([r.row() for r in runs])
