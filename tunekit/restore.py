"""A model rebuilt from a run record: the model side of records, so that records stay data.

    model = restore.load_model(run)              # what run.load_model() hands over to
    start = restore.load_start(run)              # the model as the run started
    restore.export(run, "folder")                # a plain Hugging Face folder

A record's weights apply to its *base*: its parent's result (adapters merged) or, for a
record with no parent, the pretrained checkpoint it names, with the record's structural
steps replayed (:mod:`tunekit.structure`: blocks kept, heads or neurons removed, a new head).
The weights are then applied by the loader of the record's ``format`` (:data:`LOADERS`):
``peft`` (an adapter folder), ``safetensors`` (the trained tensors) or ``torchao`` (quantized
tensors). Records of tunekit 0.1 named parameters as peft does; :func:`canonical_name` reads
those names back.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch

from tunekit import adapters, quantizers
from tunekit.adapters import checkpointing_notice_quiet
from tunekit.cards import write_card
from tunekit.config import ConfigError, RunRecordError
from tunekit.models import Model
from tunekit.models import load_model as load_pretrained
from tunekit.runtime import pick_device
from tunekit.structure import apply_steps, describe_in_config

_LEGACY_PEFT_NOISE = re.compile(r"^base_model\.model\.|\.base_layer(?=\.)|\.lora_[A-Za-z_]+\.[^.]+(?=\.)"
                                r"|\.modules_to_save\.[^.]+(?=\.)|\.original_module(?=\.)")


def canonical_name(param_name: str) -> str:
    """A parameter name as tunekit 0.1 wrote it into records (``PeftModel`` names such as
    ``base_model.model.bert...query.lora_A.default.weight``), back to the plain model's.

    Only for reading old records: live models name their parameters through
    :attr:`Backbone.layout`, which reads peft's structure instead of the spelling."""
    return _LEGACY_PEFT_NOISE.sub("", param_name)


# ----- reading a record's files: every damage a RunRecordError that names the file ---------------------------
def read_tensors(f: Path, floating: bool = True) -> dict:
    """The tensors of the safetensors file ``f`` of a record. A file that is missing, truncated
    or not safetensors, or (``floating``) that holds a tensor that is not floating point (a
    trained tensor always is), is a RunRecordError that names it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        state = load_file(str(f))
    except FileNotFoundError:
        raise RunRecordError(f"{f} is missing") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:  # safetensors says "header too large" ...
        raise RunRecordError(f"{f} is damaged: it cannot be read as safetensors ({str(e)[:200]})") from None
    if floating:
        odd = next((n for n, v in state.items() if not v.is_floating_point()), None)
        if odd is not None:
            raise RunRecordError(f"{f} is damaged: {odd} holds {state[odd].dtype} values, not floating point")
    return state


def read_adapter_config(folder: Path) -> dict:
    """A record's ``adapter/adapter_config.json``, checked to be a JSON object (peft reads the
    rest), or a RunRecordError that names it."""
    import json
    f = folder / "adapter_config.json"
    try:
        config = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunRecordError(f"{f} is missing") from None
    except (ValueError, RecursionError) as e:  # bad JSON or UTF-8
        raise RunRecordError(f"{f} is damaged: {str(e)[:200]}") from None
    if not isinstance(config, dict):
        raise RunRecordError(f"{f} is damaged: not a JSON object")
    return config


# ----- the weights, by record format ----------------------------------------------------------------
def _load_peft(run, model: Model) -> Model:
    folder = run.path / "adapter"
    if not (folder / "adapter_model.safetensors").is_file():
        pickled = [p.name for p in folder.glob("*.bin")] if folder.is_dir() else []
        held = f"holds {pickled[0]}, a pickle, which tunekit never loads (records hold safetensors only)" if pickled \
            else "has no adapter_model.safetensors"
        raise RunRecordError(f"{folder}: the record's adapter {held}")
    return attach_adapter(model, folder)


def attach_adapter(model: Model, folder: Path) -> Model:
    """The peft adapter folder ``folder`` (adapter_config.json + adapter_model.safetensors)
    loaded onto ``model`` by peft itself; ``model`` carries it from now on. A config peft
    cannot build, or tensors that do not fit the model, are a RunRecordError that names the
    file (a record's adapter, or an adapter made elsewhere: :func:`tunekit.imports.import_run`)."""
    from peft import PeftModel  # lazy: peft's import takes seconds, and only adapter records need it
    read_adapter_config(folder)
    read_tensors(folder / "adapter_model.safetensors")
    try:
        with checkpointing_notice_quiet():
            peft_model = PeftModel.from_pretrained(model.hf, str(folder))
    except RuntimeError as e:  # load_state_dict: a tensor of another shape
        raise RunRecordError(f"{folder / 'adapter_model.safetensors'} does not fit the model it applies to: "
                             f"{' '.join(str(e).split())[:300]}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as e:  # peft refuses what the config says
        raise RunRecordError(f"{folder / 'adapter_config.json'}: peft cannot build the adapter it describes on "
                             f"{type(model.hf).__name__} ({type(e).__name__}: {str(e)[:200]})") from None
    model.attach(peft_model)
    return model


def _load_safetensors(run, model: Model) -> Model:
    state = read_tensors(run.path / "weights.safetensors")
    params = dict(model.hf.named_parameters())
    missing = set(state) - set(params)
    if missing:
        raise RunRecordError(f"{run.path}/weights.safetensors has tensors the model lacks: {sorted(missing)[:5]}")
    mismatched = [n for n, v in state.items() if params[n].shape != v.shape]
    if mismatched:
        raise RunRecordError(f"{run.path}/weights.safetensors does not fit the model it applies to "
                             f"({mismatched[0]} and {len(mismatched) - 1} more have other shapes)")
    model.hf.load_state_dict(state, strict=False)
    return model


def _load_torchao(run, model: Model) -> Model:
    op = run.strategy
    return quantizers.load_tensors(model, op["method"], int(op["bits"]), op.get("layers"),
                                   run.path / "weights.safetensors")


LOADERS: dict[str, Callable] = {"peft": _load_peft, "safetensors": _load_safetensors, "torchao": _load_torchao}
"""Weights loaders by record ``format``: ``loader(run, model)`` applies the record's weights to
``model`` (its parent's result, structure replayed) and returns the model."""


def loader(fmt: str) -> Callable:
    """The weights loader of record format ``fmt``."""
    if fmt not in LOADERS:
        raise RunRecordError(f"unknown record format {fmt!r}; known: {sorted(LOADERS)} (written by a newer tunekit?)")
    return LOADERS[fmt]


# ----- rebuilding ---------------------------------------------------------------------------------------
def _to_device(model: Model, device: Optional[str]) -> Model:
    return model.to(pick_device(device)) if device else model


def pretrained(run) -> Model:
    """The pretrained checkpoint a record with no parent started from, with its head seeded
    as the model's was (records before tunekit kept that seed: the run's seed, as they loaded it)."""
    m = run.model_entry()
    seed = m.get("seed", run.seed)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise RunRecordError(f"{run.path / 'config.json'}: model.seed must be an integer >= 0 (got {seed!r})")
    if run.task == "classification":
        return load_pretrained(run.model_source, label_names=m["label_names"], seed=seed,
                               pooling=m.get("pooling"))
    options = m.get("task_options") if isinstance(m.get("task_options"), dict) else {}
    try:
        return load_pretrained(run.model_source, task=run.task, seed=seed, **options)
    except TypeError as e:  # an option this tunekit does not know (a newer record?)
        raise RunRecordError(f"{run.path / 'config.json'}: model.task_options {options!r} do not fit task "
                             f"{run.task!r}: {e}") from None


def base(run) -> Model:
    """The model a record's weights apply to: its parent's result (adapters merged) or the
    pretrained checkpoint, with the record's structural steps replayed."""
    parents = run.ancestors()  # each found, and no cycle (else a RunRecordError naming the files)
    model = load_model(parents[0], merged=True) if parents else pretrained(run)
    if run.structure:
        try:
            apply_steps(model, run.structure)
        except (ConfigError, KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
            raise RunRecordError(f"{run.path / 'config.json'} is damaged: its 'structure' cannot be replayed on the "
                                 f"model it started from ({type(e).__name__}: {str(e)[:200]})") from None
        model.structure = []  # they belong to this record now
    return model


def load_model(run, device: Optional[str] = None, merged: bool = False, step: Optional[int] = None) -> Model:
    """Rebuild a record's trained model: its base with the record's weights applied by the
    loader of its ``format``. ``merged=True`` folds an adapter into the weights (a plain
    model, no peft layers). ``step``: the model at one of the run's ``snapshot_steps``
    (0 is its start, the last its end)."""
    if step is not None:
        return _load_snapshot(run, step, device, merged)
    fmt = run.format
    if fmt is None:
        saved = run.summary.get("weights")  # where a training run said it saved them
        if isinstance(saved, str) and saved and not (run.path / saved).exists():
            raise RunRecordError(f"{run.path / saved} is missing: summary.json says the run saved its weights "
                                 "there")
        raise RunRecordError(f"{run.path} holds no weights (saved with save_weights=False, "
                             f"or the run {run.status} before any were written)")
    model = base(run)
    model = loader(fmt)(run, model) or model
    if merged and model.peft is not None:
        model.replace_hf(adapters.merge_and_unload(model.peft))
    if run.task == "classification":
        model.module.pooling = run.pooling or "model"
    model.history.append({"name": run.name, "path": str(run.path.resolve())})
    model.module.eval()
    return _to_device(model, device)


def _load_snapshot(run, step: int, device: Optional[str], merged: bool) -> Model:
    """The model after ``step`` of the run: its start, its end, or the end with the trained
    tensors of the snapshot kept at that step put back."""
    steps = run.snapshot_steps
    if not steps:
        raise ConfigError(f"run {run.name!r} kept no snapshots (train it with snapshots=k to read it at k "
                          f"points); load_model() without step= gives its end")
    if isinstance(step, bool) or step not in steps:
        raise ConfigError(f"step must be one of run {run.name!r}'s snapshot steps {steps} (got {step!r})")
    if step == 0:
        return load_start(run, device)
    model = load_model(run, merged=False)
    if step != steps[-1]:
        file = run.path / next(s["file"] for s in run.summary["snapshots"] if s["step"] == step)
        if not file.is_file():
            raise RunRecordError(f"{file} is missing: summary.json says the run kept its step {step} there")
        tensors = read_tensors(file)
        params = model.snapshot_parameters()
        if model.peft is not None and any(n in params and params[n].shape != v.shape for n, v in tensors.items()):
            model = _adapter_as_trained(run)  # AdaLoRA reloads at its final ranks; it trained at its first
            params = model.snapshot_parameters()
        with torch.no_grad():
            for name, value in tensors.items():
                target = params.get(name)
                if target is None or target.shape != value.shape:
                    found = "none" if target is None else f"one of {list(target.shape)}"
                    raise RunRecordError(f"{file} does not fit the run's reloaded model: {name} is "
                                         f"{list(value.shape)}, the model has {found}")
                target.copy_(value)
    if merged and model.peft is not None:
        model.replace_hf(adapters.merge_and_unload(model.peft))
    return _to_device(model, device)


def _adapter_as_trained(run) -> Model:
    """The record's model with its adapter built from its config as training built it: at its
    starting shapes (AdaLoRA at ``init_r``, without the final rank pattern peft resizes to)."""
    from peft import PeftConfig
    config = PeftConfig.from_pretrained(str(run.path / "adapter"))
    if getattr(config, "rank_pattern", None) is not None:
        config.rank_pattern = None
    config.inference_mode = False
    model = base(run)
    model.attach(adapters.wrap(model.hf, config))
    if run.task == "classification":
        model.module.pooling = run.pooling or "model"
    model.history.append({"name": run.name, "path": str(run.path.resolve())})
    model.module.eval()
    return model


def initial_tensors(run) -> dict:
    """Starting values (canonical names) of the trained tensors that the parent (or the
    checkpoint) does not hold: the new head. Records of tunekit 0.1 named them as peft
    does; those names are read back, and LoRA's own start values are left out."""
    f = run.path / "initial.safetensors"
    if not f.is_file():
        return {}
    return {canonical_name(n): v for n, v in read_tensors(f).items() if ".lora_" not in n}


def load_start(run, device: Optional[str] = None) -> Model:
    """The model as it was when a record's run started (eval mode): its base with the
    record's ``initial.safetensors`` applied."""
    model = base(run)
    params = dict(model.hf.named_parameters())
    with torch.no_grad():
        for name, value in initial_tensors(run).items():
            target = params.get(name)
            if target is not None and target.shape != value.shape:
                raise RunRecordError(f"{run.path / 'initial.safetensors'} does not fit the model it applies to "
                                     f"({name} is {list(value.shape)}, the model's {list(target.shape)})")
            if target is not None:
                target.copy_(value)
    if run.task == "classification" and run.pooling:
        model.module.pooling = run.pooling
    model.module.eval()
    return _to_device(model, device)


def export(run, folder: str | os.PathLike) -> Path:
    """Write a record's trained model as a plain Hugging Face folder that needs no tunekit: its
    weights (an adapter merged in), the tokenizer and a model card (README.md) whose snippet
    reproduces tunekit's logits. ``folder`` must not exist or be empty."""
    folder = Path(folder).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"export folder {str(folder)!r} exists and is not empty")
    if run.format == "torchao":
        raise ConfigError(f"{run.name} is quantized with torchao; plain transformers cannot rebuild its "
                          f"int8 tensors from a folder, so it is not exported. Its weights are in "
                          f"{run.path / 'weights.safetensors'} (tk.load_run(path).load_model() reloads "
                          "them); export the float run it came from instead")
    model = load_model(run, merged=True)
    describe_in_config(model, run.structure)  # new shapes into the config, or a clear refusal
    # Written beside the folder, then renamed into place: an export that fails part-way (the
    # card, a full disk) leaves no half-written folder.
    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.export-", dir=folder.parent))
        model.hf.save_pretrained(str(tmp))
        model.tokenizer.save_pretrained(str(tmp))
        write_card(run, tmp, adapter=False)
        if folder.is_dir():
            folder.rmdir()  # empty (checked above)
        os.replace(tmp, folder)
        tmp = None
    except OSError as e:
        raise ConfigError(f"export folder {str(folder)!r} cannot be written: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
