"""torchao's side of quantization: its configs and the layer swaps, below models and strategies.

* :func:`apply` quantizes a model's block Linear layers in place (``quantize_``);
* :func:`prepare_qat` swaps them for fake-quantized ones (quantization-aware training);
* :func:`flatten` / :func:`load_tensors` turn torchao's tensors into plain safetensors
  tensors plus metadata (no pickle) and back.

Only ``nn.Linear`` layers inside the transformer blocks are touched; embeddings, norms and
the head stay in float. torchao is imported when first used: a clear error names the pin
when it is not installed. The operation that writes a ``quantize`` record is
:func:`tunekit.post.quantization.quantize`.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from tunekit.config import ConfigError

TORCHAO_PIN = "torchao==0.18.0"
METHODS = ("int8-dynamic", "int8-weight", "intx-dynamic")
BITS = range(2, 9)


def torchao_available() -> bool:
    return importlib.util.find_spec("torchao") is not None


@contextlib.contextmanager
def quiet_torchao():
    """torchao's import logs one line per CUDA extension it cannot load on a CPU build of torch."""
    log = logging.getLogger("torchao")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def torchao():
    """``torchao.quantization``, imported quietly; a ConfigError naming the pin when torchao is
    not installed (lazy: torchao takes seconds to import and only quantization needs it)."""
    if not torchao_available():
        raise ConfigError(f"quantization needs torchao, which is not installed: pip install {TORCHAO_PIN}")
    with quiet_torchao():
        import torchao.quantization as q
    return q


def check(method: str, bits: Optional[int]) -> int:
    """Validate ``method`` and ``bits``; the weight bit width."""
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS} (got {method!r})")
    if method == "intx-dynamic":
        bits = 8 if bits is None else bits
        if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BITS:
            raise ConfigError(f"bits must be an integer in 2..8 for method='intx-dynamic' (got {bits!r})")
        return bits
    if bits not in (None, 8):
        raise ConfigError(f"method={method!r} quantizes to 8 bits (got bits={bits!r}); "
                          "use method='intx-dynamic' for 2..7 bits")
    torchao()
    return 8


def config_for(method: str, bits: int):
    """The torchao config of ``method``."""
    q = torchao()
    if method == "int8-dynamic":
        return q.Int8DynamicActivationInt8WeightConfig()
    if method == "int8-weight":
        return q.Int8WeightOnlyConfig()
    from torchao.quantization.granularity import PerAxis
    return q.Int8DynamicActivationIntxWeightConfig(weight_dtype=getattr(torch, f"int{bits}"),
                                                   weight_granularity=PerAxis(0))


def target_layers(model) -> list[str]:
    """Names of the ``nn.Linear`` layers inside the transformer blocks (what is quantized)."""
    return [name for name, _ in model.backbone.block_layers(types=(nn.Linear,))]


def _filter(names: set[str]):
    return lambda mod, fqn: isinstance(mod, nn.Linear) and fqn in names


def apply(model, method: str, bits: int, layers: Optional[list[str]] = None) -> list[str]:
    """Quantize ``model``'s block Linear layers in place (on the CPU); the names quantized."""
    layers = layers if layers is not None else target_layers(model)
    if not layers:
        raise ConfigError(f"{type(model.hf).__name__} has no nn.Linear layers in its blocks to quantize "
                          "(GPT-2 keeps its projections as transformers' Conv1D, which torchao does not take)")
    q = torchao()
    model.to("cpu")
    with quiet_torchao():
        q.quantize_(model.hf, config_for(method, bits), filter_fn=_filter(set(layers)))
    return layers


def flatten(state: dict) -> tuple[dict, dict]:
    """torchao tensors as plain tensors + safetensors metadata (torchao's own format)."""
    with quiet_torchao():
        from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict
    tensors, metadata = flatten_tensor_state_dict(state)
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata


def load_tensors(model, method: str, bits: int, layers: Optional[list[str]], path: Path):
    """Quantize ``model`` as ``method`` / ``bits`` did (the same ``layers``), then load the
    quantized tensors (data, scales, zero points) that :func:`flatten` wrote to ``path``."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    apply(model, method, bits, layers)
    with safe_open(str(path), "pt") as fh:
        metadata = fh.metadata()
    with quiet_torchao():
        from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict
        state, leftover = unflatten_tensor_state_dict(load_file(str(path)), metadata)
    if leftover:
        raise ConfigError(f"{path} holds tensors torchao could not rebuild: {sorted(leftover)[:3]}")
    result = model.hf.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys:
        raise ConfigError(f"{path} holds tensors the model lacks: {result.unexpected_keys[:3]}")
    model.hf.tie_weights()
    return model


# ----- quantization-aware training ---------------------------------------------------------------------
def prepare_qat(model, bits: int) -> list[str]:
    """Swap the block Linear layers for torchao's fake-quantized ones (``QATConfig`` prepare
    step, the scheme of ``intx-dynamic`` at ``bits``): training then sees the rounding the
    converted model will have. Parameter names do not change."""
    layers = target_layers(model)
    if not layers:
        raise ConfigError(f"{type(model.hf).__name__} has no nn.Linear layers in its blocks to fake-quantize")
    q = torchao()
    with quiet_torchao():
        from torchao.quantization.qat import QATConfig
        q.quantize_(model.hf, QATConfig(config_for("intx-dynamic", bits), step="prepare"),
                    filter_fn=_filter(set(layers)))
    return layers
