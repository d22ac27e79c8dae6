"""The GPU-only branches of the engine, tested on the CPU by faking what CUDA reports."""
import pytest
import torch

from tunekit import runtime
from tunekit.config import ConfigError


def test_device_preference_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.pick_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert runtime.pick_device() == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert runtime.pick_device() == torch.device("cpu")
    assert runtime.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="MPS is not available"):
        runtime.pick_device("mps")


def test_bf16_autocast_on_cuda_only_by_default():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert runtime.autocast_dtype(cuda, "auto") is torch.bfloat16
    assert runtime.autocast_dtype(cpu, "auto") is None
    assert runtime.autocast_dtype(cuda, "fp32") is None
    assert runtime.autocast_dtype(cpu, "bf16") is torch.bfloat16


def test_peak_memory_reads_cuda_max_allocated_on_a_gpu(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: calls.append("reset"))
    values = iter([100 * 2**20, 300 * 2**20, 200 * 2**20])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: next(values))
    mem = runtime.PeakMemory(torch.device("cuda"))
    mem.sample()
    mem.sample()
    assert calls == ["reset"] and mem.kind == "cuda_max_allocated" and mem.peak_mb == 300.0


def test_peak_memory_on_cpu_is_the_process_rss():
    mem = runtime.PeakMemory(torch.device("cpu"))
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB
    before = mem.peak_mb
    mem.sample()
    assert mem.kind == "process_rss" and mem.peak_mb >= before and mem.peak_mb > 64
    del block


def test_adamw_is_fused_on_cuda_only():
    p = torch.nn.Parameter(torch.zeros(3))
    assert runtime.adamw([{"params": [p]}], 1e-3, torch.device("cpu")).defaults["fused"] in (None, False)
    try:
        opt = runtime.adamw([{"params": [p]}], 1e-3, torch.device("cuda"))
    except RuntimeError as e:  # an older torch without a CPU fused kernel refuses CPU tensors
        pytest.skip(f"fused AdamW cannot be built on CPU tensors here: {e}")
    assert opt.defaults["fused"] is True
