"""The machine side of training: device choice, mixed precision, learning-rate
schedules, peak memory and package versions."""
from __future__ import annotations

import math
from typing import Optional

import torch

from tunekit.config import ConfigError
from tunekit.metrics import macro_f1  # noqa: F401 - it lived here before tunekit.metrics


def pick_device(requested: Optional[str] = None) -> torch.device:
    """cuda, then mps, then cpu, unless ``requested`` names one (which must exist)."""
    if requested:
        dev = torch.device(requested)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {requested!r} was requested but CUDA is not available")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError(f"device {requested!r} was requested but MPS is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: torch.device, precision: str) -> Optional[torch.dtype]:
    """bf16 autocast on CUDA ('auto' or 'bf16'); bf16 on CPU only if asked; else None (fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def adamw(param_groups: list[dict], lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the given (trainable-only) parameter groups; the fused kernel on CUDA."""
    if device.type == "cuda":
        return torch.optim.AdamW(param_groups, lr=lr, fused=True)
    return torch.optim.AdamW(param_groups, lr=lr)


def lr_factor(step: int, total: int, warmup: float, schedule: str) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based) of ``total``."""
    warm = int(round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


class PeakMemory:
    """Peak memory: CUDA max-allocated on a GPU, else the process's resident set size."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.kind = "cuda_max_allocated"
        else:
            import psutil
            self._proc = psutil.Process()
            self.kind = "process_rss"
        self.sample()

    def sample(self) -> None:
        if self.device.type == "cuda":
            self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device))
        else:
            self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


def versions() -> dict:
    import platform

    import peft
    import transformers

    from tunekit import __version__
    return {"tunekit": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version()}


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
