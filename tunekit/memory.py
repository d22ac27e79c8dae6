"""Training memory, measured per run and broken down.

* weights, gradients and optimizer state: the bytes of the tensors themselves (every
  storage counted once);
* activations: what autograd keeps for the backward pass of a training step, counted by
  a saved-tensors hook (each storage once; parameters, counted under weights, left out);
* on CUDA, also the allocator's peak (``torch.cuda.max_memory_allocated``), which is the
  run's ``peak_memory_mb`` there. On other devices ``peak_memory_mb`` is the sum of the
  measured parts (plus a frozen-prefix cache, when there is one).

The process's resident set size is not a per-run number (it holds the interpreter, every
library, and every earlier run in the same kernel) and is not used.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

MB = 2**20


def _storage_bytes(tensors: Iterable[torch.Tensor], skip: Optional[set] = None) -> int:
    seen, total = set(skip or ()), 0
    for t in tensors:
        if t is None or t.device.type == "meta":
            continue
        s = t.untyped_storage()
        key = (s.data_ptr(), t.device)
        if key in seen:
            continue
        seen.add(key)
        total += s.nbytes()
    return total


def weight_bytes(module: nn.Module) -> int:
    return _storage_bytes(list(module.parameters()) + list(module.buffers()))


def gradient_bytes(module: nn.Module) -> int:
    return _storage_bytes(p.grad for p in module.parameters() if p.grad is not None)


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    return _storage_bytes(v for state in optimizer.state.values() for v in state.values()
                          if isinstance(v, torch.Tensor))


class ActivationMeter:
    """``with ActivationMeter(module) as m: loss = f(batch)`` -> ``m.bytes``: the tensors
    autograd saved for backward during the block, each storage once, parameters excluded."""

    def __init__(self, module: nn.Module):
        self._skip = {(p.untyped_storage().data_ptr(), p.device) for p in module.parameters()}
        self._seen: set = set()
        self.bytes = 0

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            s = t.untyped_storage()
            key = (s.data_ptr(), t.device)
            if key not in self._skip and key not in self._seen:
                self._seen.add(key)
                self.bytes += s.nbytes()
        return t

    def __enter__(self) -> "ActivationMeter":
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)


def breakdown(module: nn.Module, optimizer: torch.optim.Optimizer, activation_bytes: int,
              gradient_bytes_: int, device: torch.device, cache_mb: float = 0.0) -> dict:
    """The run's memory record: MB of weights, gradients, optimizer state, activations (one
    training step), the frozen-prefix cache, their total, and on CUDA the allocator's peak."""
    parts = {"weights_mb": weight_bytes(module) / MB, "gradients_mb": gradient_bytes_ / MB,
             "optimizer_mb": optimizer_bytes(optimizer) / MB, "activations_mb": activation_bytes / MB,
             "cache_mb": cache_mb}
    out = {k: round(v, 2) for k, v in parts.items()}
    out["total_mb"] = round(sum(parts.values()), 2)
    if device.type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / MB, 2)
    return out
