"""Several processes, one run: what the engine needs from them, through accelerate.

Launched by ``torchrun`` or ``accelerate launch`` (which set ``WORLD_SIZE``, ``RANK``,
...), :func:`world` starts accelerate's ``Accelerator`` (gloo on the CPU, NCCL on GPUs;
DDP, or FSDP when accelerate's config asks for it) and the engine then:

* draws the same global batches on every process and keeps its share of each
  (``TrainConfig.batch_size`` is the global batch);
* wraps the task module with ``accelerator.prepare_model`` (gradients are averaged);
* averages the logged loss across processes and merges the evaluation metrics;
* writes the run record from the main process only.

A plain ``python`` process is a world of one and none of this happens.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn


@dataclass
class World:
    """This process's place among the processes training one run."""

    rank: int = 0
    size: int = 1
    accelerator: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def device(self) -> Optional[torch.device]:
        return None if self.accelerator is None else self.accelerator.device

    def wrap(self, module: nn.Module) -> nn.Module:
        """The module every process steps through (DDP / FSDP as accelerate is configured)."""
        if not self.distributed:
            return module
        return self.accelerator.prepare_model(module)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over the processes (a no-op for one)."""
        if not self.distributed:
            return value
        value = value.detach().clone()
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.SUM)
        return value / self.size

    def merge(self, metrics):
        """One metric accumulator holding every process's examples."""
        if not self.distributed:
            return metrics
        parts: list = [None] * self.size
        torch.distributed.all_gather_object(parts, metrics)
        merged = parts[0]
        for other in parts[1:]:
            merged.merge(other)
        return merged

    def share(self, obj: Any) -> Any:
        """The main process's ``obj`` on every process (e.g. the run's name)."""
        if not self.distributed:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def world(device: Optional[str] = None) -> World:
    """The current world: one process, or (``WORLD_SIZE`` > 1) the launched group."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    from accelerate import Accelerator
    cpu = (device or "").startswith("cpu") or not torch.cuda.is_available()
    acc = Accelerator(cpu=cpu)
    return World(rank=acc.process_index, size=acc.num_processes, accelerator=acc)
