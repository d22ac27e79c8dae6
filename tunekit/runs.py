"""Run records on disk: one directory per run, JSON + safetensors, no pickle.

    tunekit-runs/<run name>/
        config.json          what was run: model, data + split seed, strategy,
                             hyper-parameters, package versions
        metrics.jsonl        one line per event (step, eval, epoch, ...), appended live
        summary.json         status (running / completed / stopped / failed) + final metrics
        initial.safetensors  starting values of trained tensors that are not in the
                             pretrained checkpoint (new head, LoRA A/B)
        weights.safetensors  final values of every trained tensor (not for LoRA)
        adapter/             LoRA only: peft's own save_pretrained format

Every JSON file is written atomically (temporary file, then rename). A record
that is still marked "running" but whose process is gone is reported as
"crashed". :func:`list_runs` skips a corrupt record with a warning.

This module imports no torch at import time, so plots and reports can read runs
without it.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd

from tunekit.config import DEFAULT_RUNS_DIR, ConfigError

STATUSES = ("running", "completed", "stopped", "failed", "crashed")


class RunRecordError(ValueError):
    """A run directory is missing or unreadable."""


def sanitize_name(name: str) -> str:
    """A safe directory name: letters, digits, '.', '_' and '-' only; no path parts."""
    if not isinstance(name, str):
        raise ConfigError(f"name must be a string (got {type(name).__name__})")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:100]
    if not safe:
        raise ConfigError(f"name {name!r} has no usable characters (allowed: letters, digits, . _ -)")
    return safe


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically: a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, default=_jsonable)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, (set, tuple)):
        return list(x)
    if isinstance(x, Path):
        return str(x)
    return repr(x)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunWriter:
    """Creates and updates one run directory while a run trains."""

    def __init__(self, runs_dir: str | os.PathLike, name: str, config: dict):
        root = Path(runs_dir).expanduser()
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise ConfigError(f"runs_dir {str(root)!r} cannot be written: {e.strerror or e}") from e
        base = sanitize_name(name)
        path, i = root / base, 1
        while True:
            try:
                path.mkdir()
                break
            except FileExistsError:
                i += 1
                path = root / f"{base}-{i}"
        self.path = path
        self.name = path.name
        config = {**config, "name": self.name}
        write_json(path / "config.json", config)
        self.summary: dict = {"status": "running", "started": now(), "pid": os.getpid(),
                              "host": socket.gethostname()}
        write_json(path / "summary.json", self.summary)
        self._metrics = open(path / "metrics.jsonl", "a", encoding="utf-8")

    def log(self, event: str, payload: dict) -> None:
        self._metrics.write(json.dumps({"event": event, **payload}, default=_jsonable) + "\n")
        self._metrics.flush()

    def update(self, **fields) -> None:
        self.summary.update(fields)
        write_json(self.path / "summary.json", self.summary)

    def finish(self, status: str, reason: Optional[str] = None, **fields) -> None:
        assert status in STATUSES, status
        self.update(status=status, reason=reason, ended=now(), **fields)
        self._metrics.close()

    def save_tensors(self, filename: str, tensors: dict) -> None:
        from safetensors.torch import save_file
        tmp = self.path / f".{filename}.tmp"
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, self.path / filename)

    def save_adapter(self, peft_model) -> None:
        tmp = self.path / ".adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        peft_model.save_pretrained(str(tmp))
        shutil.rmtree(self.path / "adapter", ignore_errors=True)
        os.replace(tmp, self.path / "adapter")


class Run:
    """A run record, live (just trained, ``.model`` set) or reloaded from disk."""

    def __init__(self, path: str | os.PathLike, model=None):
        self.path = Path(path)
        self.model = model
        self.config = self._read_json("config.json")
        self._summary = self._read_json("summary.json")

    def _read_json(self, name: str) -> dict:
        f = self.path / name
        try:
            with open(f, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError as e:
            raise RunRecordError(f"{self.path} is not a run record: {name} is missing") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunRecordError(f"{f} is corrupt: {e}") from e
        if not isinstance(data, dict):
            raise RunRecordError(f"{f} is corrupt: not a JSON object")
        return data

    # ----- what was run ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def strategy(self) -> dict:
        return self.config.get("strategy", {})

    @property
    def label(self) -> str:
        return self.config.get("strategy_label", self.strategy.get("name", "?"))

    @property
    def summary(self) -> dict:
        """The latest summary.json (re-read, so a run training elsewhere shows progress)."""
        try:
            self._summary = self._read_json("summary.json")
        except RunRecordError:
            pass
        s = dict(self._summary)
        if s.get("status") == "running" and self.model is None and s.get("host") == socket.gethostname() \
                and isinstance(s.get("pid"), int) and not _pid_alive(s["pid"]):
            s["status"] = "crashed"
            s["reason"] = "the training process ended before the run finished"
        return s

    @property
    def status(self) -> str:
        return self.summary.get("status", "?")

    def metrics(self) -> list[dict]:
        """Every logged event, in order. A torn last line (crash mid-write) is skipped."""
        out = []
        try:
            with open(self.path / "metrics.jsonl", encoding="utf-8") as fh:
                for line in fh:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
        except FileNotFoundError:
            pass
        return out

    def history(self, event: str = "step") -> pd.DataFrame:
        """A DataFrame of one event kind: ``"step"`` (loss per step) or ``"eval"``."""
        rows = [{k: v for k, v in m.items() if k != "event"} for m in self.metrics() if m.get("event") == event]
        return pd.DataFrame(rows)

    def row(self) -> dict:
        """One summary row for comparison tables."""
        s, p = self.summary, self.config.get("params", {})
        return {"run": self.name, "strategy": self.label, "status": s.get("status"),
                "trainable_params": p.get("trainable"), "total_params": p.get("total"),
                "trainable_percent": p.get("percent"), "accuracy": s.get("val_accuracy"),
                "macro_f1": s.get("val_macro_f1"), "val_loss": s.get("val_loss"),
                "wall_time_s": s.get("wall_time_s"), "samples_per_s": s.get("samples_per_s"),
                "peak_memory_mb": s.get("peak_memory_mb"), "memory_kind": s.get("memory_kind"),
                "device": self.config.get("device"), "steps": s.get("steps")}

    # ----- weights ---------------------------------------------------------------------------------
    @property
    def model_source(self) -> str:
        """Where the pretrained model is: the recorded path if it still exists, else the name/id."""
        m = self.config["model"]
        return m["path"] if m.get("path") and Path(m["path"]).exists() else m["source"]

    @property
    def seed(self) -> int:
        return int(self.config.get("train", {}).get("seed", 0))

    def load_model(self, device: Optional[str] = None):
        """Rebuild the trained model: the pretrained model from the record's source, with the
        record's trained weights (or LoRA adapter) applied. Works after a kernel restart."""
        from safetensors.torch import load_file

        from tunekit.models import load_model

        model = load_model(self.model_source, label_names=self.config["model"]["label_names"], seed=self.seed)
        if (self.path / "adapter").is_dir():
            from peft import PeftModel
            model.module = PeftModel.from_pretrained(model.hf, str(self.path / "adapter"))
            model.peft_config = model.module.peft_config["default"]
        elif (self.path / "weights.safetensors").is_file():
            state = load_file(str(self.path / "weights.safetensors"))
            missing = set(state) - set(dict(model.hf.named_parameters()))
            if missing:
                raise RunRecordError(f"{self.path}/weights.safetensors has tensors the model lacks: "
                                     f"{sorted(missing)[:5]}")
            model.hf.load_state_dict(state, strict=False)
        else:
            raise RunRecordError(f"{self.path} holds no weights (saved with save_weights=False, "
                                 f"or the run {self.status} before any were written)")
        model.pooling = self.summary.get("pooling") or self.config["model"].get("pooling", "model")
        model.trained_by.append(self.name)
        model.module.eval()
        if device:
            model.to(device)
        return model

    def initial_tensors(self) -> dict:
        """Starting values of the trained tensors that the checkpoint does not hold."""
        from safetensors.torch import load_file
        f = self.path / "initial.safetensors"
        return load_file(str(f)) if f.is_file() else {}

    def __repr__(self) -> str:
        s = self.summary
        acc = s.get("val_accuracy")
        acc = f", accuracy={acc:.3f}" if isinstance(acc, (int, float)) else ""
        return f"Run({self.name!r}, {self.label}, {s.get('status')}{acc})"


def load_run(path: str | os.PathLike) -> Run:
    """Open one run record."""
    return Run(path)


def list_runs(runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> list[Run]:
    """Every run under ``runs_dir``, oldest first. Corrupt records are skipped with a warning."""
    root = Path(runs_dir).expanduser()
    if not root.is_dir():
        return []
    runs = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            runs.append(Run(d))
        except RunRecordError as e:
            warnings.warn(f"skipping run record: {e}", stacklevel=2)
    return sorted(runs, key=lambda r: (r.summary.get("started", ""), r.name))


def table(runs: Iterable[Run]) -> pd.DataFrame:
    """A comparison table: one row per run."""
    return pd.DataFrame([r.row() for r in runs])
