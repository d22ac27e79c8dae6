"""Writing one run record while it trains: the directory, atomic JSON, live metrics, tensors.

:class:`RunWriter` is what the engine uses; :mod:`tunekit.runs` reads what it writes.
No torch import at module level.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Optional

from tunekit.config import ConfigError

STATUSES = ("running", "completed", "stopped", "failed", "crashed")


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

    def save_adapter(self, peft_model, base_model_id: Optional[str] = None) -> None:
        """peft's ``save_pretrained`` into ``adapter/``; ``base_model_name_or_path`` is set to
        ``base_model_id`` (a hub id where one is known) rather than a path on this machine."""
        tmp = self.path / ".adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        config = peft_model.peft_config["default"]
        old = config.base_model_name_or_path
        if base_model_id:
            config.base_model_name_or_path = base_model_id
        try:
            # tunekit never resizes the vocabulary: saying so keeps peft from asking the hub about
            # the base model's config (a network call, and a warning when offline)
            peft_model.save_pretrained(str(tmp), save_embedding_layers=False)
        finally:
            config.base_model_name_or_path = old
        shutil.rmtree(self.path / "adapter", ignore_errors=True)
        os.replace(tmp, self.path / "adapter")




class ReplicaWriter:
    """What a process other than the main one holds while several train one run: the run's
    name and path (the main process writes the record), and no-op writes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.name = self.path.name
        self.summary: dict = {}

    def log(self, event: str, payload: dict) -> None:
        pass

    def update(self, **fields) -> None:
        self.summary.update(fields)

    def finish(self, status: str, reason: Optional[str] = None, **fields) -> None:
        self.update(status=status, reason=reason, **fields)

    def save_tensors(self, filename: str, tensors: dict) -> None:
        pass

    def save_adapter(self, peft_model, base_model_id: Optional[str] = None) -> None:
        pass
