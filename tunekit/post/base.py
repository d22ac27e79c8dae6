"""What every post-training operation shares: where it starts, what it measures, the record it writes.

An operation takes a saved run (or a loaded pretrained model), changes a copy of its
model, and writes a record of its own ``kind`` whose ``parent`` is that run. The
caller's model is never changed. Before and after are measured in the same process,
on the same machine, the same examples and in fp32:

* the task's metrics on the run's own validation subset (:func:`tunekit.evaluate`);
* ``params``: parameters held; ``nonzero_params``: those that are not exactly zero;
* ``size_mb``: the whole model written as one safetensors file, measured on disk;
* ``latency_ms``: the median wall time of a forward pass over one batch of validation
  texts on the CPU (``latency_batch`` examples), with the threads it had; the model before
  and after are timed in turns, in the same loop, so their ratio is fair on a busy machine.

The summary holds the result's numbers at the top level (``val_accuracy``, ``size_mb`` ...)
and the parent's under ``before``.
"""
from __future__ import annotations

import contextlib
import copy
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from tunekit import adapters
from tunekit.adapters import checkpointing_notice_quiet
from tunekit.config import DEFAULT_RUNS_DIR, ConfigError, positive_int
from tunekit.data import DataError, match_labels
from tunekit.data import load as load_data
from tunekit.evaluation import evaluate as run_evaluate
from tunekit.models import Model
from tunekit.quantizers import flatten
from tunekit.runs import Run, load_run
from tunekit.runtime import versions
from tunekit.writer import RunWriter, record_config, write_tensors

LATENCY_BATCH = 32
LATENCY_REPEATS = 15


@dataclass
class Source:
    """Where an operation starts: a private copy of the model, the record it came from (None
    for a pretrained model) and the parts of that record a derived one inherits."""

    model: Model
    run: Optional[Run]
    data: Any
    train: dict = field(default_factory=dict)

    @property
    def parent(self) -> Optional[dict]:
        if self.run is not None:
            return {"name": self.run.name, "path": str(self.run.path.resolve())}
        return dict(self.model.history[-1]) if self.model.history else None

    @property
    def name(self) -> str:
        return self.run.name if self.run is not None else os.path.basename(str(self.model.source)) or "model"

    @property
    def runs_dir(self) -> str:
        return str(self.run.path.parent) if self.run is not None else DEFAULT_RUNS_DIR


def refuse_quantized(run: Run) -> None:
    """Post-training operations start from float weights: a quantized record is an end point."""
    if run.format == "torchao":
        parent = (run.parent or {}).get("name", "its parent")
        raise ConfigError(f"run: {run.name!r} is quantized (torchao int tensors); prune, quantize or distil "
                          f"the float run it came from ({parent!r}) instead")


def copy_model(model: Model) -> Model:
    """A deep copy of ``model`` (transformers warns about a deprecated property that copying reads)."""
    with checkpointing_notice_quiet():
        return copy.deepcopy(model)


def source(run_or_model: Any, data: Any = None) -> Source:
    """The start of an operation: a run (a :class:`Run` or its directory; its model is loaded
    from disk, adapters merged) or a :class:`Model` (deep-copied). ``data``: the data set it
    is measured on (default: the run's built-in data set)."""
    if isinstance(run_or_model, Model):
        if data is None:
            raise ConfigError("a model (not a run) needs data=<TextDataset or built-in name> to be measured on")
        model = copy_model(run_or_model)
        if model.peft is not None:
            model.replace_hf(adapters.merge_and_unload(model.peft))
        model.module.eval()
        return Source(model, None, _matched(load_data(data), model), {"seed": 0, "eval_size": None, "max_length": 128})
    try:
        run = run_or_model if isinstance(run_or_model, Run) else load_run(run_or_model)
    except (TypeError, OSError) as e:
        raise ConfigError(f"run must be a Run, a run directory or a model from tk.load_model() "
                          f"(got {type(run_or_model).__name__})") from e
    if not run.has_weights and run.kind == "train":
        raise ConfigError(f"run {run.name!r} holds no weights to start from (status {run.status})")
    refuse_quantized(run)
    data = run.dataset(data)
    model = run.load_model(merged=True)
    return Source(model, run, _matched(data, model), dict(run.config.get("train", {})))


def _matched(data: Any, model: Model) -> Any:
    """The data with its labels numbered as the model's (by name; other names are refused)."""
    return match_labels(data, model.label_names) if model.task.name == "classification" else data


# ----- measuring ---------------------------------------------------------------------------------------
def model_tensors(model: Model) -> tuple[dict, Optional[dict]]:
    """The whole model's tensors as safetensors takes them (shared tensors once; torchao's
    quantized tensors flattened into their parts, with the metadata to rebuild them)."""
    state, seen = {}, set()
    for name, t in model.hf.state_dict().items():
        key = (t.data_ptr(), tuple(t.shape), str(t.dtype)) if type(t) is torch.Tensor else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen.add(key)
        state[name] = t
    if all(type(t) is torch.Tensor for t in state.values()):
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}, None
    return flatten(state)




def size_mb(model: Model) -> float:
    """The model's size on disk: every tensor written to one safetensors file, measured."""
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "model.safetensors"
        write_tensors(f, *model_tensors(model))
        return round(f.stat().st_size / 2 ** 20, 3)


def parameter_counts(model: Model) -> dict:
    """``params`` (held) and ``nonzero_params`` (not exactly zero), counting quantized weights
    by their number of values."""
    total = nonzero = 0
    for _, p in model.hf.named_parameters():
        plain = type(p) in (torch.Tensor, torch.nn.Parameter)
        values = p if plain or not hasattr(p, "dequantize") else p.dequantize()
        total += p.numel()
        nonzero += int(torch.count_nonzero(values.detach()))
    return {"params": int(total), "nonzero_params": int(nonzero)}


@torch.no_grad()
def latency_ms(models: Sequence[Model], texts, max_length: int = 128, repeats: int = LATENCY_REPEATS) -> list[dict]:
    """The CPU latency of each of ``models`` on one batch of ``texts``, in fp32: the median of
    ``repeats`` forward passes, taken in turns (A, B, A, B, ...) after one warm-up each, so
    that whatever else the machine is doing slows every model alike and their ratio holds."""
    positive_int("repeats", repeats)
    devices = [m.device for m in models]
    batches = []
    for m in models:
        m.to("cpu")
        m.module.eval()
        enc = m.tokenize(list(texts), max_length)
        batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    times: list[list[float]] = [[] for _ in models]
    try:
        for m, b in zip(models, batches):
            m.module(b)  # warm-up (allocations, lazy kernels)
        for _ in range(repeats):
            for i, (m, b) in enumerate(zip(models, batches)):
                t = time.perf_counter()
                m.module(b)
                times[i].append(time.perf_counter() - t)
    finally:
        for m, d in zip(models, devices):
            m.to(d)
    about = {"latency_batch": len(texts), "latency_threads": torch.get_num_threads(),
             "latency_repeats": repeats, "latency_machine": machine()}
    out = [{"latency_ms": round(1000 * statistics.median(t), 3), **about} for t in times]
    for i in range(1, len(models)):
        out[i].update(latency_ratio(times[i], times[0]))
    return out


def latency_ratio(times: Sequence[float], reference: Sequence[float]) -> dict:
    """The paired ratio of two models' latencies, timed in turns: per repeat, this model's time
    over the reference's (the first model's), as the median and the quartiles of those ratios
    (``latency_ratio``, ``latency_ratio_q1``, ``latency_ratio_q3``). The machine's load moves both
    times of a repeat alike, so the ratio holds where the milliseconds do not."""
    ratios = sorted(t / r for t, r in zip(times, reference) if r > 0)
    if len(ratios) < 2:
        return {}
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return {"latency_ratio": round(statistics.median(ratios), 4), "latency_ratio_q1": round(q1, 4),
            "latency_ratio_q3": round(q3, 4)}


def machine() -> str:
    """A short description of the CPU this process runs on."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} cores"


def evaluation_args(src: Source) -> dict:
    """The examples a run was evaluated on (its validation subset), for before and after alike."""
    return {"split": "validation", "size": src.train.get("eval_size"), "seed": int(src.train.get("seed", 0)) + 1,
            "max_length": src.train.get("max_length") or 128}


def measure(model: Any, src: Optional[Source] = None, evaluate: bool = True, latency: bool = True, *,
            data: Any = None) -> dict:
    """Everything the post-training views compare, measured now (see the module docstring).

    ``tk.measure(run)``: measure a run's model (a training run too) and add ``params``,
    ``nonzero_params``, ``size_mb`` and ``latency_ms`` to its summary, so that it sits on the
    same size and latency axes as the post-training records; returns what was measured.
    ``data``: whose texts the latency is taken on; a run trained on a built-in data set
    uses it by default, a run trained on your own data needs it (the record keeps no texts).
    ``tk.measure(model, data=...)`` measures a model from ``tk.load_model`` (no record)."""
    if src is None:
        return _measure_record(model, data)
    if data is not None:
        raise ConfigError("measure: pass data= or src=, not both")
    out: dict[str, Any] = {}
    if evaluate:
        args = evaluation_args(src)
        metrics = run_evaluate(model, src.data, precision="fp32", device="cpu", **args)
        out.update({f"val_{k}": v for k, v in metrics.items() if k not in ("examples", "seconds")})
        out["eval_examples"] = metrics["examples"]
    out.update(parameter_counts(model))
    out["size_mb"] = size_mb(model)
    if latency:
        out.update(latency_ms([model], latency_texts(src), src.train.get("max_length") or 128)[0])
    return out


def latency_texts(src: Source) -> list[str]:
    return src.data.validation["text"].tolist()[:LATENCY_BATCH] or src.data.train["text"].tolist()[:LATENCY_BATCH]


#: what :func:`measure` adds to a record's summary besides its metrics: held and non-zero parameters,
#: size on disk, CPU latency and how that latency was taken
MEASUREMENTS = ("params", "nonzero_params", "size_mb", "latency_ms", "latency_batch", "latency_threads",
                "latency_repeats", "latency_machine")


def keep_measurements(run: Run, measured: dict) -> None:
    """Add to ``run``'s summary the :data:`MEASUREMENTS` of ``measured`` that it lacks (a training
    run measured as the start of an operation), so that it sits on the same size and latency axes
    as the records made from it. Measurements it already has are kept: each is taken once."""
    summary = run.summary  # read once: each read checks the file
    missing = {k: measured[k] for k in MEASUREMENTS if k in measured and summary.get(k) is None}
    if missing:
        run.update_summary(**missing)


def before_and_after(reference: Model, result: Model, src: Source, evaluate: bool = True) -> tuple[dict, dict]:
    """:func:`measure` of a model before and after an operation, their latencies taken in turns.
    The record the operation starts from keeps the measurements it lacked (:func:`keep_measurements`)."""
    before = measure(reference, src, evaluate=evaluate, latency=False)
    after = measure(result, src, evaluate=evaluate, latency=False)
    lb, la = latency_ms([reference, result], latency_texts(src), src.train.get("max_length") or 128)
    if src.run is not None:
        keep_measurements(src.run, {**before, **lb})
    return {**before, **lb}, {**after, **la}


def _measure_record(run: Any, data: Any = None) -> dict:
    src = source(run, data)
    out = measure(src.model, src, evaluate=False)
    if src.run is not None:
        src.run.update_summary(**out)
    return out


# ----- the record ----------------------------------------------------------------------------------------
def describe_source(src: Source) -> dict:
    """The config fields a derived record inherits from where it started."""
    cfg = dict(src.run.config) if src.run is not None else {}
    return {"task": src.model.task.name, "model": src.model.describe(),
            "data": cfg.get("data") or src.data.describe(), "train": src.train}


@contextlib.contextmanager
def derived_record(src: Source, result: Model, kind: str, label: str, operation: dict, *, fmt: Optional[str],
                   name: Optional[str] = None, runs_dir: Optional[str] = None):
    """Write a record of ``kind`` whose parent is ``src`` and whose model is ``result`` (its
    structural steps are recorded); yields its :class:`RunWriter`.

    The record is marked running while the block runs, completed when it returns, stopped
    when the user interrupts it (Ctrl-C, or interrupting the kernel), and failed, with the
    reason, when it raises (the error then propagates). An input refused inside the block (a
    :class:`ConfigError` or :class:`DataError`, e.g. data without a validation split to measure
    on) leaves no record: nothing was made of it."""
    counts = parameter_counts(result)
    inherited = describe_source(src)
    config = record_config(
        kind=kind, parent=src.parent, task=inherited["task"], model=result.describe(), data=inherited["data"],
        train=inherited["train"], strategy=operation, label=label, fmt=fmt, structure=result.structure,
        device="cpu", versions=versions(),
        precision={"requested": "fp32", "autocast": None, "why": "post-training measurements run in fp32"},
        params={"trainable": 0, "total": counts["params"], "percent": 0.0, "nonzero": counts["nonzero_params"]})
    writer = RunWriter(runs_dir or src.runs_dir, name or f"{src.name}-{label}", config)
    t = time.perf_counter()
    try:
        yield writer
    except (ConfigError, DataError):
        writer.discard()
        raise
    except KeyboardInterrupt:
        writer.finish("stopped", "interrupted by the user", wall_time_s=round(time.perf_counter() - t, 3))
        raise
    except BaseException as e:
        writer.finish("failed", f"{type(e).__name__}: {e}", wall_time_s=round(time.perf_counter() - t, 3))
        raise
    writer.finish("completed", None, wall_time_s=round(time.perf_counter() - t, 3))
