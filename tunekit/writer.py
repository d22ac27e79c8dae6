"""Writing one run record while it trains: the directory, atomic JSON, live metrics, tensors.

:class:`RunWriter` is what the engine uses; :mod:`tunekit.runs` reads what it writes.
Every JSON and safetensors file is replaced atomically (a temporary file in the same folder,
fsynced, then renamed), so a killed process or a full disk leaves the old file or the new one;
a failed write is a ``TrainingError`` that names the file, and for a full disk the disk.
No torch import at module level.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any, Iterable, Optional

from tunekit import __version__
from tunekit.config import ConfigError, TrainingError, TunekitError
from tunekit.run_names import next_number

try:
    import fcntl
except ImportError:  # Windows has no flock: there numbers are chosen without the lock
    fcntl = None

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


# ----- a record's config.json ----------------------------------------------------------------------------
CONFIG_ORDER = ("kind", "parent", "task", "format", "tunekit_version", "created", "model", "data", "strategy",
                "strategy_label", "phases", "train", "device", "versions", "precision", "world_size",
                "per_process_batch_size", "params", "trained_before", "structure")
"""The order of the keys of every record's ``config.json``, trained or derived (a reader never
depends on it; it keeps records easy to compare by eye)."""


def record_config(*, kind: str, parent: Optional[dict], task: str, model: dict, data: dict, train: dict,
                  strategy: dict, label: str, fmt: Optional[str], structure: list, device: str,
                  versions: dict, precision: dict, params: dict, **extra) -> dict:
    """What a record's ``config.json`` says about how it was made (the writer adds its name and
    number).

    Args:
        kind: ``"train"``, ``"distil"``, ``"prune"``, ``"quantize"`` ...
        parent: the record (``{"name", "path"}``) the model came from, or None for a pretrained one.
        task, model, data, train: the task's name, and the model, data and training settings
            as they describe themselves.
        strategy, label: what was done (a strategy's or an operation's description) and its
            short label (``strategy_label``).
        fmt: how the weights are saved (``format``: ``"safetensors"``, ``"peft"``, ``"torchao"``).
        structure: the structural steps the model has been through (layers removed ...).
        device: where it ran.
        versions: the versions of the libraries it ran with (:func:`tunekit.runtime.versions`).
        precision: ``{"requested", "autocast", "why"}``.
        params: the parameter counts.
        extra: further keys (a trained record's ``phases``, ``world_size`` ...); they take their
            place in :data:`CONFIG_ORDER`, and any it does not list follow, in the order given.
    """
    fields = {"kind": kind, "parent": parent, "task": task, "model": model, "data": data, "train": train,
              "strategy": strategy, "strategy_label": label, "format": fmt, "structure": list(structure),
              "tunekit_version": __version__, "created": now(), "device": device, "versions": versions,
              "precision": precision, "params": params, **extra}
    return {**{k: fields[k] for k in CONFIG_ORDER if k in fields},
            **{k: v for k, v in fields.items() if k not in CONFIG_ORDER}}


class RecordWriteError(TunekitError, OSError):
    """A file of a run record could not be written (the disk is full, the folder is gone, no
    permission); the message names the file, and for a full disk the disk."""


def _mount_point(path: Path) -> Path:
    """The mount point of the file system that holds ``path`` (what "the disk" is)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def _no_space(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)  # a full disk, or this user's share of it
    text = str(e)  # safetensors' own writer reports the OS error in its message
    return any(words in text for words in ("No space left", "os error 28", "Disk quota exceeded", "os error 122"))


def describe_write_error(path: Path, e: BaseException) -> str:
    """Words for a failed write of ``path``: the disk when it is full, else the OS's reason."""
    path = Path(path)
    if _no_space(e):
        return (f"no space left on the disk that holds {path.parent} (the file system mounted at "
                f"{_mount_point(path.parent)}) while writing {path.name}: free some space there, or "
                f"choose another runs_dir")
    if isinstance(e, FileNotFoundError) and not path.parent.is_dir():
        return f"{path.parent} no longer exists, so {path.name} could not be written"
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return f"{path} could not be written: {reason}"


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, written in
    full and fsynced, then renamed over ``path``. A crash or a full disk leaves the old file or
    the new one, never part of one, and no temporary file. Raises :class:`RecordWriteError`."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise RecordWriteError(describe_write_error(path, e)) from e
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        with _suppress():
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise RecordWriteError(describe_write_error(path, e)) from e
        raise
    _fsync_dir(path.parent)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (see :func:`write_bytes`): a crash leaves the old file or the new
    one, never half of one."""
    write_bytes(Path(path), json.dumps(obj, indent=1, default=_jsonable).encode("utf-8"))


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

    def __exit__(self, kind, *exc):
        return kind is not None and issubclass(kind, Exception)


NUMBERING_LOCK = ".numbering.lock"
"""Where a runs folder's numbering lock is taken on a file system that cannot lock a folder."""


@contextlib.contextmanager
def numbering(root: Path):
    """Hold the numbering lock of the runs folder ``root``: an exclusive ``flock`` on the folder
    itself (on a file system that cannot lock a folder, NFS, on its :data:`NUMBERING_LOCK`
    file). A record takes the next number and writes it into its config.json while it holds
    the lock, so two records started at once, by two processes or two threads, never get one
    number. The lock goes with the process: a killed one holds nothing."""
    if fcntl is None:
        yield
        return
    fd = os.open(root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # NFS emulates flock with record locks, which need a file open for writing
            os.close(fd)
            fd = os.open(Path(root) / NUMBERING_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the folder (or file) releases its lock


_OPEN: set[str] = set()
"""The records that a :class:`RunWriter` of this process is writing now (resolved paths): a
record marked running by this process but not here has stopped without finishing it."""


def writing_here(path: str | os.PathLike) -> bool:
    """Whether a :class:`RunWriter` of this process is still writing the record at ``path``."""
    return os.path.realpath(path) in _OPEN


class RunWriter:
    """Creates and updates one run directory while a run trains.

    Every JSON and safetensors file is replaced atomically (temporary file, fsync, rename);
    ``metrics.jsonl`` is appended one whole line per write. Before each write the writer checks
    that its directory is still the one it made: a directory removed (or moved) while the run
    trains, or a write that fails (a full disk), raises a ``TrainingError`` that says so at once.
    After that the writer records the failure in ``summary.json`` where it still can, and its
    later ``log`` / ``update`` calls do nothing.
    """

    def __init__(self, runs_dir: str | os.PathLike, name: str, config: dict):
        root = Path(runs_dir).expanduser()
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / f".write-test-{os.getpid()}-{secrets.token_hex(4)}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            reason = (f"no space left on its disk (the file system mounted at {_mount_point(root)})"
                      if _no_space(e) else e.strerror or str(e))
            raise ConfigError(f"runs_dir {str(root)!r} cannot be written: {reason}") from e
        base = sanitize_name(name)
        with contextlib.ExitStack() as numbered:
            try:
                numbered.enter_context(numbering(root))
            except OSError as e:
                raise ConfigError(f"runs_dir {str(root)!r} cannot be written: "
                                  f"{describe_write_error(root / NUMBERING_LOCK, e)}") from e
            number = next_number(root)  # the record's number for good: its name (#k) and colour
            path, i = root / base, 1
            while True:  # mkdir is atomic: of two processes choosing one name, one gets "name-2"
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    i += 1
                    path = root / f"{base}-{i}"
                except OSError as e:
                    raise ConfigError(f"runs_dir {str(root)!r} cannot be written: "
                                      f"{describe_write_error(path, e)}") from e
            self.path = path
            self.name = path.name
            self._dir_id = self._identity()
            self._failed: Optional[str] = None
            self._last_step: Optional[int] = None
            self._metrics: Optional[int] = None
            _OPEN.add(os.path.realpath(path))
            try:
                write_json(path / "config.json", {**config, "name": self.name, "number": number})
                numbered.close()  # the number is in the record: the next record may take the next one
                self.summary: dict = {"status": "running", "started": now(), "pid": os.getpid(),
                                      "host": socket.gethostname()}
                write_json(path / "summary.json", self.summary)
                self._metrics = os.open(path / "metrics.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            except OSError as e:
                words = str(e) if isinstance(e, RecordWriteError) else describe_write_error(path / "metrics.jsonl", e)
                if (path / "config.json").is_file():
                    self._fail(words, e)
                _OPEN.discard(os.path.realpath(path))
                shutil.rmtree(path, ignore_errors=True)  # nothing of the run is in it yet
                raise ConfigError(f"runs_dir {str(root)!r} cannot be written: {words}") from e

    # ----- checks -------------------------------------------------------------------------------
    def _identity(self) -> Optional[tuple]:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _gone(self) -> Optional[str]:
        """Words for a directory that is no longer the record this writer made, else None."""
        if self._identity() != self._dir_id:
            at = f" (after step {self._last_step}, the last one recorded)" if self._last_step is not None else ""
            return (f"the run directory {self.path} was removed while the run trained{at}; "
                    f"the run stopped, as nothing more of it could be recorded")
        return None

    def _check(self) -> None:
        if self._failed is not None:
            raise TrainingError(self._failed)
        gone = self._gone()
        if gone:
            self._fail(gone)

    def _fail(self, message: str, cause: Optional[BaseException] = None):
        """Stop writing: record the failure where the directory still allows it, then raise."""
        gone = self._gone()
        if gone and "was removed" not in message:
            message = gone
        self._failed = message
        _OPEN.discard(os.path.realpath(self.path))
        self._close_metrics()
        if not gone:
            with _suppress():  # a full disk may refuse this too; the record then reads as crashed
                write_json(self.path / "summary.json",
                           {**getattr(self, "summary", {}), "status": "failed", "reason": message, "ended": now()})
        raise TrainingError(message) from cause

    def _guarded(self, path: Path, write) -> None:
        self._check()
        try:
            write()
        except RecordWriteError as e:
            self._fail(str(e), e)
        except OSError as e:
            self._fail(describe_write_error(path, e), e)

    def _close_metrics(self) -> None:
        if self._metrics is not None:
            with _suppress():
                os.close(self._metrics)
            self._metrics = None

    @property
    def failed(self) -> Optional[str]:
        """Why the writer stopped writing (a full disk, its directory removed), or None."""
        return self._failed

    # ----- writes -------------------------------------------------------------------------------
    def log(self, event: str, payload: dict) -> None:
        """Append one event to metrics.jsonl (one whole line, or none: a failed write is undone)."""
        if self._failed is not None:
            return
        line = (json.dumps({"event": event, **payload}, default=_jsonable) + "\n").encode("utf-8")

        def append():
            size = os.fstat(self._metrics).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(self._metrics, view):]
            except OSError:
                with _suppress():
                    os.ftruncate(self._metrics, size)  # no torn line left behind
                raise
        self._guarded(self.path / "metrics.jsonl", append)
        if isinstance(payload.get("step"), int):
            self._last_step = payload["step"]

    def update(self, **fields) -> None:
        self.summary.update(fields)
        if self._failed is not None:
            return
        self._guarded(self.path / "summary.json", lambda: write_json(self.path / "summary.json", self.summary))

    def finish(self, status: str, reason: Optional[str] = None, **fields) -> None:
        """Write the final summary. After a failure it is written if the directory still
        allows it (a full disk may not), and never raises: the run's own error is what counts."""
        assert status in STATUSES, status
        if self._failed is not None:
            self.summary.update(status=status, reason=reason or self._failed, ended=now(), **fields)
            if not self._gone():
                with _suppress():
                    write_json(self.path / "summary.json", self.summary)
            return
        try:
            self.update(status=status, reason=reason, ended=now(), **fields)
        finally:
            self._close_metrics()
            _OPEN.discard(os.path.realpath(self.path))

    def discard(self) -> None:
        """Remove the record: what it was to hold was refused before anything came of it (a
        post-training input that fails its checks), so no record is truer than a failed one."""
        self._close_metrics()
        _OPEN.discard(os.path.realpath(self.path))
        shutil.rmtree(self.path, ignore_errors=True)

    def save_tensors(self, filename: str, tensors: dict, metadata: Optional[dict] = None) -> None:
        """Save ``tensors`` (with safetensors ``metadata``) as ``filename`` atomically: see
        :func:`write_tensors`. A failure marks the record failed and raises RecordWriteError."""
        self._check()
        try:
            (self.path / filename).parent.mkdir(parents=True, exist_ok=True)  # snapshots/ and the like
            write_tensors(self.path / filename, tensors, metadata)
        except RecordWriteError as e:
            self._fail(str(e), e.__cause__)

    def save_adapter(self, peft_model, base_model_id: Optional[str] = None) -> None:
        """peft's ``save_pretrained`` into ``adapter/``; ``base_model_name_or_path`` is set to
        ``base_model_id`` (a hub id where one is known) rather than a path on this machine.
        Written into a temporary folder, fsynced, then renamed into place."""
        from safetensors import SafetensorError
        self._check()
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
            self._place_adapter(tmp)
        except (OSError, SafetensorError) as e:  # safetensors reports the OS's errors as its own
            shutil.rmtree(tmp, ignore_errors=True)
            self._fail(describe_write_error(self.path / "adapter", e), e)
        finally:
            config.base_model_name_or_path = old

    def copy_adapter(self, folder: Path, files: Iterable[str]) -> None:
        """Copy ``files`` of a peft adapter folder made elsewhere into ``adapter/``, byte for byte
        (the folder itself is only read): into a temporary folder, fsynced, then renamed into
        place, as :meth:`save_adapter` does. A failure marks the record failed and raises."""
        self._check()
        tmp = self.path / ".adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            for name in files:
                shutil.copyfile(Path(folder) / name, tmp / name)
            self._place_adapter(tmp)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            self._fail(describe_write_error(self.path / "adapter", e), e)

    def _place_adapter(self, tmp: Path) -> None:
        """The written folder ``tmp`` made durable and renamed to ``adapter/``."""
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_file(f)
        _fsync_dir(tmp)
        shutil.rmtree(self.path / "adapter", ignore_errors=True)
        os.replace(tmp, self.path / "adapter")
        _fsync_dir(self.path)


def write_tensors(path: Path, tensors: dict, metadata: Optional[dict] = None) -> None:
    """Write ``tensors`` as one safetensors file at ``path`` atomically: a temporary file in the
    same folder, fsynced, then renamed over ``path`` (a crash leaves the old file or the new one,
    and no temporary file). The one way tunekit writes tensors. Raises RecordWriteError."""
    from safetensors import SafetensorError  # lazy: reading and writing JSON records needs no torch
    from safetensors.torch import save_file
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, SafetensorError) as e:  # safetensors reports the OS's errors as its own
        with _suppress():
            os.unlink(tmp)
        raise RecordWriteError(describe_write_error(path, e)) from e


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ReplicaWriter:
    """What a process other than the main one holds while several train one run: the run's
    name and path (the main process writes the record), and no-op writes."""

    failed = None

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

    def save_tensors(self, filename: str, tensors: dict, metadata: Optional[dict] = None) -> None:
        pass

    def save_adapter(self, peft_model, base_model_id: Optional[str] = None) -> None:
        pass
