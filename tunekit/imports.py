"""Adapters and fine-tunes made elsewhere (HF Trainer, LLaMA-Factory, the hub) as run records.

    run = tk.import_run("out/checkpoint-500")                    # a peft adapter: base from its config
    run = tk.import_run("out/final", base="minilm", data=data)   # a fine-tuned model folder, evaluated
    tk.plots.weight_change([run]); tk.prune(run, sparsity=0.5, data=data)

:func:`import_run` writes a record of ``kind="import"`` whose parent is the pretrained
checkpoint (``parent`` null, as a training run from that checkpoint has), so it lists, reloads,
draws in every view and goes through every post-training operation as tunekit's own records do:

* a **peft adapter folder** (``adapter_config.json`` + ``adapter_model.safetensors``, any peft
  method) is copied byte for byte into the record's ``adapter/`` (format ``peft``), where
  :mod:`tunekit.restore` loads it as it loads tunekit's own adapters;
* a **fine-tuned model folder** (``config.json`` + ``model.safetensors``, as transformers'
  ``save_pretrained`` writes it) is compared with its base, and the tensors that differ are
  saved as ``weights.safetensors`` (format ``safetensors``).

A ``trainer_state.json`` inside the folder or beside it (the HF Trainer's) becomes the record's
curves: its ``log_history`` as ``step`` and ``eval`` events, ``eval_X`` read as ``val_X``.

The source folder is only read. Its weights are read from safetensors only: a folder whose
weights are a pickle (``*.bin``, ``*.pt``, ``*.pkl`` ...) is refused with the command that
converts it; the pickles a Trainer checkpoint keeps beside them (``optimizer.pt``,
``training_args.bin``) are never opened. An imported classifier reads its head as transformers
does (the architecture's own pooling; a decoder's last token), so its logits are the ones plain
transformers and peft give.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

import torch

from tunekit.config import DEFAULT_RUNS_DIR, ConfigError, RunRecordError, TunekitError, plain_arguments
from tunekit.data import load as load_data
from tunekit.evaluation import evaluate
from tunekit.models import LOAD_LOCK, Model, load_model
from tunekit.restore import attach_adapter, read_adapter_config
from tunekit.runs import Run
from tunekit.runtime import versions
from tunekit.sources import SAFE_WEIGHT_FILES, check_model_dir, convert_command, pickle_only, resolve_model_path
from tunekit.strategies.lora import INITS
from tunekit.tasks import TASKS, task_class
from tunekit.tasks.classification import default_pooling
from tunekit.writer import RunWriter, record_config

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
"""What a peft adapter folder holds (``save_pretrained``); its README.md is copied too, when there."""
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle")
"""Files that may hold a pickle, which tunekit never loads (loading one can run code)."""
ARCHITECTURE_TASKS = {"ForSequenceClassification": "classification", "ForCausalLM": "causal_lm",
                      "LMHeadModel": "causal_lm"}
"""The task of a transformers architecture (``config.json`` ``architectures``), by its name's end."""
NOT_METRICS = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time")
"""The Trainer's ``eval_*`` entries that time the evaluation rather than measure the model."""


# ----- what the folder holds ---------------------------------------------------------------------------
def source_folder(path: Any) -> Path:
    """``path`` as an existing folder, or a ConfigError that says what it is instead."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError(f"path must be a folder: a peft adapter or a fine-tuned model (got {path!r})")
    folder = Path(path).expanduser()
    try:
        exists, is_dir = folder.exists(), folder.is_dir()
    except (OSError, ValueError) as e:  # too long, a NUL byte
        raise ConfigError(f"path {str(path)[:200]!r} cannot be looked up ({e})") from None
    if not exists:
        raise ConfigError(f"path {str(folder)!r} does not exist; {_ALLOWED}")
    if not is_dir:
        raise ConfigError(f"path {str(folder)!r} is a file; {_ALLOWED}")
    return folder


_ALLOWED = ("import_run takes a peft adapter folder (adapter_config.json + adapter_model.safetensors) or a "
            "fine-tuned model folder (config.json + model.safetensors, with base= the checkpoint it was "
            "fine-tuned from)")


def folder_format(folder: Path) -> str:
    """How a folder's weights become a record's: ``"peft"`` for an adapter folder,
    ``"safetensors"`` for a fine-tuned model folder. A folder whose weights are only a pickle,
    a tunekit record, or a folder of neither kind is a ConfigError that names it."""
    if (folder / "summary.json").is_file() and (folder / "metrics.jsonl").is_file():
        raise ConfigError(f"path {str(folder)!r} is a tunekit run record already: open it with "
                          f"tk.load_run({str(folder)!r})")
    if (folder / "adapter_config.json").is_file():
        if not (folder / "adapter_model.safetensors").is_file():
            _refuse_pickle(folder, folder / "adapter_model.safetensors")
            raise ConfigError(f"path {str(folder)!r} has an adapter_config.json but no adapter_model.safetensors "
                              f"beside it; {_ALLOWED}")
        return "peft"
    if (folder / "config.json").is_file():
        if not any((folder / f).is_file() for f in SAFE_WEIGHT_FILES):
            _refuse_pickle(folder, folder / "model.safetensors")
            raise ConfigError(f"path {str(folder)!r} has a config.json but no model.safetensors beside it; "
                              f"{_ALLOWED}")
        return "safetensors"
    _refuse_pickle(folder, None)
    raise ConfigError(f"path {str(folder)!r} is neither kind of folder (it holds "
                      f"{sorted(p.name for p in folder.iterdir())[:8]}); {_ALLOWED}")


def _refuse_pickle(folder: Path, target: Optional[Path]) -> None:
    """Refuse a folder whose weights are a pickle, naming the file and how to convert it to
    ``target`` (the safetensors file the folder lacks). With no ``target`` (a folder of neither
    kind) any pickle is refused; else only one named as weights are (``adapter_model.bin``,
    ``pytorch_model.bin``, ``model.pt`` ...), not a Trainer's ``training_args.bin``."""
    if target is not None and (folder / "pytorch_model.bin.index.json").is_file():
        raise ConfigError(f"path: {pickle_only(repr(str(folder)), folder)}")
    pickled = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES
                     and (target is None or p.name.startswith(("adapter_model", "pytorch_model", "model"))))
    if not pickled:
        return
    said = (f"path {str(folder)!r}: its weights are a pickle ({pickled[0].name}); tunekit loads safetensors only, "
            "since loading a pickle can run code")
    if target is None:
        raise ConfigError(f"{said}. {_ALLOWED}")
    raise ConfigError(f"{said}. If you trust the file, convert it once (tunekit never changes the folder itself): "
                      f"{convert_command(pickled[0], target)}")


def _json_object(f: Path) -> dict:
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ConfigError(f"path: {f} cannot be read as JSON ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"path: {f} must hold a JSON object (got {type(data).__name__})")
    return data


# ----- the task and the base ---------------------------------------------------------------------------
def architecture_task(config: dict) -> Optional[str]:
    """The task a transformers ``config.json`` was saved for (its ``architectures``), or None."""
    for arch in config.get("architectures") or []:
        for ending, task in ARCHITECTURE_TASKS.items():
            if isinstance(arch, str) and arch.endswith(ending):
                return task
    return None


def adapter_task(config: dict) -> Optional[str]:
    """The tunekit task of a peft config's ``task_type`` (``SEQ_CLS``, ``CAUSAL_LM``), None when
    it names none; one that tunekit has no task for is a ConfigError. A ``CAUSAL_LM`` adapter is
    read as ``causal_lm`` (pass ``task="sft"`` to score one on pairs)."""
    kind = config.get("task_type")
    if kind is None:
        return None
    by_peft: dict[str, str] = {}
    for name, cls in TASKS.items():  # CAUSAL_LM is causal_lm's and sft's: the first registered (causal_lm) reads it
        by_peft.setdefault(cls.peft_task_type, name)
    if kind not in by_peft:
        raise ConfigError(f"task: the adapter is for peft task_type {kind!r}; tunekit has {sorted(TASKS)} "
                          f"(peft {sorted(by_peft)})")
    return by_peft[kind]


def choose_task(task: Optional[str], *configs: dict, where: Path) -> str:
    """``task`` checked, or the first task one of ``configs`` says (see :func:`adapter_task`,
    :func:`architecture_task`); none is a ConfigError that asks for ``task=``."""
    if task is not None:
        task_class(task)  # a ConfigError that names the tasks there are
        return task
    for config in configs:
        found = adapter_task(config) if "peft_type" in config else architecture_task(config)
        if found is not None:
            return found
    raise ConfigError(f"task: {where} does not say what the model was trained for (no task_type, and no "
                      f"architecture ending in {sorted(ARCHITECTURE_TASKS)}); pass task= one of {sorted(TASKS)}")


def label_names(config: dict, count: Optional[int] = None) -> list[str]:
    """The class names of a transformers config (``id2label`` in id order); ``count`` names
    when the head has another number of rows than the config names (transformers' own
    ``LABEL_i``, which data sets are matched to by position)."""
    id2label = config.get("id2label") or {}
    try:
        names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    except (TypeError, ValueError):
        names = []
    if count is not None and len(names) != count:
        return [f"LABEL_{i}" for i in range(count)]
    return names or ["LABEL_0", "LABEL_1"]


def base_config(base: str, said_by: str) -> dict:
    """The ``config.json`` of the base checkpoint ``base`` (a folder, a cached hub id or a
    built-in name, found as :func:`tunekit.load_model` finds one, offline unless the hub answers);
    not found is a ConfigError that says where the name came from."""
    try:
        return check_model_dir(resolve_model_path(base), base)
    except (TunekitError, OSError) as e:
        raise ConfigError(f"base: {base!r} ({said_by}) cannot be found or read: {e}; pass base=<the checkpoint it "
                          "was trained from: a folder, a cached hub id or a built-in name>") from None


def load_base(base: str, task: str, names: Optional[list[str]], folder: Path) -> Model:
    """The base checkpoint loaded for ``task``, reading its head as transformers does (the
    architecture's own pooling; a decoder's ``score`` head, the last token), as the model
    imported from ``folder`` was trained."""
    try:
        model = load_model(base, label_names=names, task=task) if task == "classification" else \
            load_model(base, task=task)
    except (TunekitError, OSError) as e:
        raise ConfigError(f"base: {base!r} cannot be loaded for {task}: {e}") from None
    if task == "classification":
        model.pooling = default_pooling(folder, model.hf)  # never the base's sentence-embedding mean
    return model


def _mismatch(base: str, model: Model, folder: Path, why: str) -> ConfigError:
    return ConfigError(f"base: {base!r} (a {model.hf.config.model_type} {type(model.hf).__name__}) does not match "
                       f"{folder}: {why}; pass base= the checkpoint it was trained from")


# ----- a peft adapter ----------------------------------------------------------------------------------
def adapter_model(folder: Path, base: Optional[str], task: Optional[str]) -> tuple[Model, dict]:
    """The base with the adapter of ``folder`` loaded by peft (what the record will reload),
    and the strategy entry that describes it."""
    config = read_adapter_config(folder)
    said_by = f"given as base=, for {folder}"
    if base is None:
        base = config.get("base_model_name_or_path")
        said_by = f"{folder / 'adapter_config.json'}'s base_model_name_or_path"
        if not isinstance(base, str) or not base:
            raise ConfigError(f"base: {folder / 'adapter_config.json'} names no base model "
                              "(base_model_name_or_path is empty); pass base=<the checkpoint it was trained from>")
    checkpoint = base_config(base, said_by)
    task = choose_task(task, config, checkpoint, where=folder)
    names = _adapter_labels(folder, config, checkpoint, base) if task == "classification" else None
    model = load_base(base, task, names, folder)
    try:
        attach_adapter(model, folder)
    except RunRecordError as e:
        raise _mismatch(base, model, folder, str(e)) from None
    _check_keys(model, folder, base)
    return model, _adapter_strategy(config)


def _adapter_labels(folder: Path, config: dict, checkpoint: dict, base: str) -> list[str]:
    """The class names of an adapter's classifier: the base's ``id2label`` when its head has
    as many rows, else transformers' ``LABEL_i``. A base that holds a head of another size is
    refused in words: tunekit loads a checkpoint's own head as it is."""
    rows = _head_rows(folder, config, checkpoint)
    names = label_names(checkpoint, rows)
    if architecture_task(checkpoint) == "classification" and len(label_names(checkpoint)) != len(names):
        raise ConfigError(f"base: {base!r} holds a {len(label_names(checkpoint))}-class head and the adapter in "
                          f"{folder} a {rows}-class one; tunekit loads a checkpoint's own head as it is: pass base= "
                          "the checkpoint without its head (the hub's own), or one saved with the adapter's classes")
    return names


def _head_rows(folder: Path, config: dict, checkpoint: dict) -> Optional[int]:
    """The classes of the head the adapter trains in full (``modules_to_save``): the rows of
    its last weight matrix that does not map the hidden size onto itself; None without one."""
    from safetensors import safe_open
    saved = set(config.get("modules_to_save") or [])
    hidden = checkpoint.get("hidden_size") or checkpoint.get("d_model") or checkpoint.get("n_embd")
    rows = None
    try:
        with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
            for key in f.keys():
                parts = key.split(".")
                shape = f.get_slice(key).get_shape()
                if parts[-1] == "weight" and saved & set(parts) and len(shape) == 2 and shape[0] != hidden:
                    rows = shape[0]
    except Exception:  # noqa: BLE001 - a damaged file: attach_adapter says so in words
        return None
    return rows


def _check_keys(model: Model, folder: Path, base: str) -> None:
    """Every tensor of the adapter file has its place in the adapted base, and every place a
    tensor: peft drops the others silently (an adapter for more blocks than the base has)."""
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        saved = set(f.keys())
    expected = set(get_peft_model_state_dict(model.peft, save_embedding_layers=False))
    extra, missing = sorted(saved - expected), sorted(expected - saved)
    if extra:
        raise _mismatch(base, model, folder, f"{len(extra)} of the adapter's tensors have no place in it "
                                             f"({extra[:3]})")
    if missing:
        raise _mismatch(base, model, folder, f"the adapter lacks {len(missing)} tensors its config asks for "
                                             f"({missing[:3]})")


def _adapter_strategy(config: dict) -> dict:
    """The record's ``strategy``: the peft method in tunekit's words, its rank (AdaLoRA: target and
    starting rank), alpha, start (PiSSA, OLoRA, Gaussian), rsLoRA and targets."""
    method = str(config.get("peft_type", "?")).lower()
    if method == "lora" and config.get("use_dora"):
        method = "dora"
    out = {"name": "import", "method": method, "peft_type": config.get("peft_type")}
    rank, alpha = config.get("r"), config.get("lora_alpha", config.get("alpha"))
    if isinstance(rank, int) and not isinstance(rank, bool):
        out["rank"] = rank
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        out["alpha"] = alpha
    if method == "adalora":  # its r is unused: it starts at init_r and ends averaging target_r
        out.pop("rank", None)
        for key, field in (("target_r", "target_rank"), ("init_r", "init_rank")):
            if isinstance(config.get(key), int) and not isinstance(config.get(key), bool):
                out[field] = config[key]
    start = config.get("init_lora_weights")
    if method in ("lora", "dora") and isinstance(start, str):  # "pissa_niter_16" is PiSSA too
        start = next((name for name in INITS if name != "default" and start.startswith(name)), None)
        if start:  # so the views say that PiSSA / OLoRA are measured against the original weights
            out["init"] = start
    if method in ("lora", "dora") and config.get("use_rslora") is True:
        out["rslora"] = True
    if config.get("target_modules") is not None:
        out["targets"] = config["target_modules"]
    return out


# ----- a fine-tuned model ------------------------------------------------------------------------------
def fine_tuned_model(folder: Path, base: Optional[str], task: Optional[str]) -> tuple[Model, dict, dict]:
    """The base with the fine-tune's weights in place (what the record will reload), the
    strategy entry, and the tensors that differ from the base (canonical names)."""
    try:
        config = check_model_dir(folder, str(folder))
    except (TunekitError, OSError) as e:  # a config.json transformers cannot read
        raise ConfigError(f"path: {e}") from None
    if base is None:
        raise ConfigError(f"base: {folder} is a fine-tuned model folder; pass base=<the checkpoint it was "
                          "fine-tuned from> (a folder, a cached hub id or a built-in name), so that its change "
                          "is measured against it")
    checkpoint = base_config(base, f"given as base=, for {folder}")
    task = choose_task(task, config, checkpoint, where=folder)
    model = load_base(base, task, label_names(config) if task == "classification" else None, folder)
    if config.get("model_type") != model.hf.config.model_type:
        raise _mismatch(base, model, folder, f"it is a {config.get('model_type')!r} model")
    tuned = _load_fine_tune(model, folder)
    changed = _changed(model, tuned, folder, base)
    if not changed:
        raise ConfigError(f"path: {folder} holds the same weights as base {base!r}: nothing was fine-tuned "
                          "(is base= the fine-tune itself?)")
    model.hf.load_state_dict(changed, strict=False)
    return model, {"name": "import", "method": "full"}, changed


def _load_fine_tune(model: Model, folder: Path) -> torch.nn.Module:
    """The fine-tuned Hugging Face model, built by the task as the base was (safetensors only)."""
    try:
        with LOAD_LOCK:  # see LOAD_LOCK: transformers' loader is not safe in two threads at once
            tuned, missing = model.task.build(str(folder))
    except Exception as e:  # noqa: BLE001 - whatever transformers raises, the user gets words
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ConfigError(f"path: {folder} cannot be loaded as a {model.task.name} model "
                          f"({type(e).__name__}: {first})") from None
    if missing:
        raise ConfigError(f"path: {folder} lacks {len(missing)} tensors of a {model.task.name} model "
                          f"({missing[:3]}); is task={model.task.name!r} the one it was fine-tuned for?")
    return tuned.float()


def _changed(model: Model, tuned: torch.nn.Module, folder: Path, base: str) -> dict:
    """The fine-tune's tensors that differ from the base's, which must have the same names and shapes."""
    mine, theirs = dict(model.hf.named_parameters()), dict(tuned.named_parameters())
    odd = sorted(set(mine) ^ set(theirs))
    if odd:
        raise _mismatch(base, model, folder, f"{len(odd)} tensors are in one and not the other ({odd[:3]})")
    shaped = [n for n in mine if mine[n].shape != theirs[n].shape]
    if shaped:
        n = shaped[0]
        raise _mismatch(base, model, folder, f"{n} is {list(theirs[n].shape)} there and {list(mine[n].shape)} in "
                                             f"the base ({len(shaped) - 1} more differ)")
    with torch.no_grad():
        return {n: t.detach().clone() for n, t in theirs.items() if not torch.equal(t, mine[n])}


# ----- the Trainer's curves ----------------------------------------------------------------------------
def trainer_state(folder: Path) -> Optional[Path]:
    """The HF Trainer's ``trainer_state.json`` inside ``folder``, else beside it, or None."""
    for f in (folder / "trainer_state.json", folder.parent / "trainer_state.json"):
        if f.is_file():
            return f
    return None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def curves(state: dict) -> list[tuple[str, dict]]:
    """``(event, payload)`` of a trainer state's ``log_history``, in tunekit's event format: a
    ``step`` event (``loss``, ``lr``, ``grad_norm``) for each training log, an ``eval`` event
    (``val_X`` for ``eval_X``, the timings left out) for each evaluation."""
    out = []
    for entry in state.get("log_history") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), int) or isinstance(entry["step"], bool):
            continue
        at = {"step": entry["step"], **({"epoch": entry["epoch"]} if _number(entry.get("epoch")) else {})}
        if _number(entry.get("loss")):
            logged = {"loss": entry["loss"], "lr": entry.get("learning_rate"), "grad_norm": entry.get("grad_norm")}
            out.append(("step", {**at, **{k: v for k, v in logged.items() if _number(v)}}))
        evals = {f"val_{k[5:]}": v for k, v in entry.items()
                 if k.startswith("eval_") and k[5:] not in NOT_METRICS and _number(v)}
        if evals:
            out.append(("eval", {**at, **evals}))
    return out


def training_facts(state: dict) -> tuple[dict, dict]:
    """What a trainer state says about the training: the record's ``train`` fields (epochs,
    batch size, the highest learning rate logged) and ``summary`` fields (steps, wall time,
    samples per second), each only where the state has it."""
    def whole(v):
        return v if isinstance(v, int) and not isinstance(v, bool) else None
    rates = [e["learning_rate"] for e in state.get("log_history") or []
             if isinstance(e, dict) and _number(e.get("learning_rate"))]
    end = next((e for e in reversed(state.get("log_history") or []) if isinstance(e, dict) and "train_runtime" in e),
               {})
    train = {"epochs": whole(state.get("num_train_epochs")), "batch_size": whole(state.get("train_batch_size")),
             "lr": max(rates) if rates else None}
    summary = {"steps": whole(state.get("global_step")),
               "wall_time_s": end.get("train_runtime") if _number(end.get("train_runtime")) else None,
               "samples_per_s": end.get("train_samples_per_second")
               if _number(end.get("train_samples_per_second")) else None}
    return ({k: v for k, v in train.items() if v is not None}, {k: v for k, v in summary.items() if v is not None})


# ----- the record --------------------------------------------------------------------------------------
def _sha256(f: Path) -> str:
    digest = hashlib.sha256()
    with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_files(folder: Path, fmt: str, state: Optional[Path]) -> list[Path]:
    """The files of ``folder`` the import reads (and the trainer state it takes its curves from)."""
    if fmt == "peft":
        names = ADAPTER_FILES
    else:
        index = folder / "model.safetensors.index.json"
        shards = sorted(set(_json_object(index).get("weight_map", {}).values())) if index.is_file() else []
        names = ("config.json", *(["model.safetensors.index.json", *shards] if shards else ["model.safetensors"]))
    return [folder / n for n in names if (folder / n).is_file()] + ([state] if state else [])


def _evaluated(model: Model, data: Any) -> tuple[dict, dict]:
    """The model's metrics on the data's validation split (summary fields) and the data's
    description (the record's ``data``); ``({}, {"name": None})`` without data."""
    if data is None:
        return {}, {"name": None}
    metrics = evaluate(model, data, split="validation", precision="fp32")
    summary = {f"val_{k}": v for k, v in metrics.items() if k not in ("examples", "seconds")}
    examples = metrics["examples"]
    return {**summary, "eval_examples": examples}, {**data.describe(), "validation_used": examples}


@plain_arguments
def import_run(path: Any, base: Optional[str] = None, data: Any = None, *, name: Optional[str] = None,
               runs_dir: Optional[str] = None, task: Optional[str] = None) -> Run:
    """Import an adapter or a fine-tune made elsewhere as a run record of ``kind="import"``.

    Args:
        path: a peft adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``;
            LoRA, DoRA, IA3, VeRA, LoHa, LoKr, LayerNorm tuning ...) or a fine-tuned model
            folder (``config.json`` + ``model.safetensors``, transformers' ``save_pretrained``).
            It is only read; pickled weights are refused with the command that converts them.
        base: the checkpoint it was trained from (a folder, a cached hub id or a built-in name).
            An adapter's default is its ``base_model_name_or_path``; a fine-tune needs it.
        data: evaluate the model once on this data's validation split (a TextDataset or a
            built-in name) and keep the metrics in the summary; post-training operations
            reuse it when it is a built-in data set. None: no evaluation.
        name: the record's folder name (default ``import-<folder name>``).
        runs_dir: where the record goes (default ``./tunekit-runs``).
        task: ``"classification"`` or ``"causal_lm"``; default: what the folder says (peft's
            ``task_type``, or the architecture: ``...ForSequenceClassification`` with its
            ``id2label`` as label names, ``...ForCausalLM``).

    Returns the :class:`~tunekit.runs.Run`, with its model loaded (``run.model``). The
    record's parent is the pretrained checkpoint; an adapter is copied into its ``adapter/``,
    a fine-tune's changed tensors are saved as ``weights.safetensors``; a ``trainer_state.json``
    in or beside ``path`` becomes its curves. Bad input (no such folder, a folder of neither
    kind, a base that cannot be found or does not match, an unknown task) is a ConfigError
    that names the path and what is allowed; nothing is written then.
    """
    folder = source_folder(path)
    fmt = folder_format(folder)
    if base is not None and (not isinstance(base, (str, os.PathLike)) or not str(base)):
        raise ConfigError(f"base must be the checkpoint's folder, a cached hub id or a built-in name (got {base!r})")
    base = None if base is None else str(base)
    data = None if data is None else load_data(data)
    if fmt == "peft":
        model, strategy = adapter_model(folder, base, task)
        changed = None
    else:
        model, strategy, changed = fine_tuned_model(folder, base, task)
    found = trainer_state(folder)
    state = _json_object(found) if found else {}
    train, facts = training_facts(state)
    measured, described = _evaluated(model, data)
    counts = _counts(model, folder, changed)
    label = f"import-{strategy['method']}" + (f"-r{strategy['rank']}" if "rank" in strategy else "")
    config = record_config(
        kind="import", parent=None, task=model.task.name, model=model.describe(), data=described,
        train={"seed": 0, "eval_size": None, "max_length": 128, **train}, strategy=strategy, label=label,
        fmt=fmt, structure=[], device="cpu", versions=versions(),
        precision={"requested": "fp32", "autocast": None, "why": "imported weights are evaluated in fp32"},
        params=counts, imported={"path": str(folder.resolve()), "base": model.source, "format": fmt,
                                 "files": {os.path.relpath(f, folder): _sha256(f)
                                           for f in _read_files(folder, fmt, found)}})
    writer = RunWriter(runs_dir or DEFAULT_RUNS_DIR, name or f"import-{folder.name}", config)
    try:
        if fmt == "peft":
            writer.copy_adapter(folder, [*ADAPTER_FILES, *(["README.md"] if (folder / "README.md").is_file() else [])])
        else:
            writer.save_tensors("weights.safetensors", changed)
        for event, payload in curves(state):
            writer.log(event, payload)
        writer.finish("completed", None, pooling=model.pooling, **facts, **measured)
    except BaseException:
        writer.discard()  # a record half made is no record
        raise
    model.history.append({"name": writer.name, "path": str(writer.path.resolve())})
    return Run(writer.path, model=model)


def _counts(model: Model, folder: Path, changed: Optional[dict]) -> dict:
    """The record's ``params``: what the import changed (the adapter's tensors, or the tensors
    that differ from the base) of the parameters the model holds."""
    if changed is None:
        from safetensors import safe_open
        with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
            trained = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    else:
        trained = sum(t.numel() for t in changed.values())
    total = sum(p.numel() for p in model.hf.parameters())
    return {"trainable": int(trained), "total": int(total), "percent": 100.0 * trained / total if total else 0.0}

