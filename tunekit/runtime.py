"""The machine side of training: device choice, mixed precision, learning-rate
schedules, peak memory and package versions."""
from __future__ import annotations

import platform
from importlib import metadata
from typing import Optional

import torch

from tunekit import __version__
from tunekit.config import ConfigError
from tunekit.metrics import macro_f1  # noqa: F401 - it lived here before tunekit.metrics

TRAIN_DEVICES = ("cpu", "cuda", "mps")


def pick_device(requested: Optional[str] = None) -> torch.device:
    """cuda, then mps, then cpu, unless ``requested`` names one (which must exist here).

    Checked before anything is written, so that a missing backend (``"xpu"``, ``"cuda:5"`` on
    a one-GPU machine, ``"meta"``) is a :class:`ConfigError` naming ``device``, not a run
    left half-written."""
    if requested:
        try:
            dev = torch.device(requested)
        except (RuntimeError, TypeError, ValueError):
            raise ConfigError(f"device must be one of {list(TRAIN_DEVICES)}, optionally with an index such "
                              f"as 'cuda:0' (got {requested!r})") from None
        if dev.type not in TRAIN_DEVICES:
            raise ConfigError(f"device {requested!r}: tunekit trains on {list(TRAIN_DEVICES)} only")
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"device {requested!r} was requested but CUDA is not available")
            count = torch.cuda.device_count()
            if dev.index is not None and dev.index >= count:
                raise ConfigError(f"device {requested!r}: this machine has {count} CUDA device(s), "
                                  f"cuda:0 to cuda:{count - 1}")
        if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                      and torch.backends.mps.is_available()):
            raise ConfigError(f"device {requested!r} was requested but MPS is not available")
        if dev.type == "cpu" and dev.index not in (None, 0):
            raise ConfigError(f"device {requested!r}: use 'cpu' (there is one CPU device)")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX tiles or AVX-512-BF16)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        return any(getattr(torch.cpu, f)() for f in probes if hasattr(torch.cpu, f))
    except Exception:  # noqa: BLE001 - an old or unusual build: say no
        return False


def choose_precision(device: torch.device, precision: str) -> tuple[Optional[torch.dtype], str]:
    """The autocast dtype for ``precision`` on ``device`` (None: plain fp32) and why.

    ``"auto"`` picks bf16 autocast on CUDA and on a CPU with bf16 matrix units (AMX or
    AVX-512-BF16), fp32 elsewhere; the weights and the optimizer stay in fp32 either way."""
    if precision == "fp32":
        return None, "fp32 (asked for)"
    if precision == "bf16":
        return torch.bfloat16, "bf16 autocast (asked for)"
    if device.type == "cuda":
        return torch.bfloat16, "bf16 autocast (auto: CUDA)"
    if device.type == "cpu" and cpu_has_bf16_matmul():
        return torch.bfloat16, "bf16 autocast (auto: the CPU has AMX / AVX-512-BF16)"
    return None, f"fp32 (auto: no bf16 matrix units on {device.type})"


def autocast_dtype(device: torch.device, precision: str) -> Optional[torch.dtype]:
    """The autocast dtype :func:`choose_precision` picks (None: fp32)."""
    return choose_precision(device, precision)[0]


def adamw(param_groups: list[dict], lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the given (trainable-only) parameter groups; the fused kernel wherever torch
    has one for the device (CUDA, CPU, MPS), the default otherwise."""
    try:
        return torch.optim.AdamW(param_groups, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(param_groups, lr=lr)


def versions() -> dict:
    """The versions that a record keeps: tunekit, torch, transformers, peft, Python (and torchao)."""
    import peft  # lazy: peft and transformers take seconds to import; only a record being written needs this
    import transformers

    out = {"tunekit": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
           "peft": peft.__version__, "python": platform.python_version()}
    try:  # read from the package metadata: importing torchao is slow and not needed to say which
        out["torchao"] = metadata.version("torchao")
    except metadata.PackageNotFoundError:
        pass
    return out


def training_memory_estimate(counts: dict, bytes_per_value: int = 4) -> dict:
    """A lower bound on training memory from parameter counts (before anything trains):
    the weights, plus a gradient and AdamW's two moments for every trainable parameter.
    Activations come on top and grow with batch size and sequence length.

    ``counts``: ``{"trainable": int, "total": int}`` (what ``Strategy.count`` returns)."""
    weights = counts["total"] * bytes_per_value
    grads = counts["trainable"] * bytes_per_value
    adam = counts["trainable"] * 2 * 4  # AdamW keeps two float32 moments
    mb = lambda b: round(b / 2**20, 1)  # noqa: E731
    return {"weights_mb": mb(weights), "gradients_mb": mb(grads), "optimizer_mb": mb(adam),
            "total_mb": mb(weights + grads + adam)}
