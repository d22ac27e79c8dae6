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


def test_auto_precision_is_bf16_on_cuda_and_on_cpus_with_bf16_matrix_units(monkeypatch):
    cuda, cpu, mps = torch.device("cuda"), torch.device("cpu"), torch.device("mps")
    assert runtime.autocast_dtype(cuda, "auto") is torch.bfloat16
    assert runtime.autocast_dtype(cuda, "fp32") is None
    assert runtime.autocast_dtype(cpu, "bf16") is torch.bfloat16
    assert runtime.autocast_dtype(mps, "auto") is None
    monkeypatch.setattr(runtime, "cpu_has_bf16_matmul", lambda: True)
    dtype, why = runtime.choose_precision(cpu, "auto")
    assert dtype is torch.bfloat16 and "AMX" in why
    monkeypatch.setattr(runtime, "cpu_has_bf16_matmul", lambda: False)
    dtype, why = runtime.choose_precision(cpu, "auto")
    assert dtype is None and why.startswith("fp32")


def test_cpu_bf16_detection_reads_torch():
    expected = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert runtime.cpu_has_bf16_matmul() is bool(expected)


def test_the_run_memory_on_a_gpu_quotes_the_allocator_peak(monkeypatch):
    from tunekit import memory
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 300 * 2**20)
    net = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(net.parameters())
    mem = memory.breakdown(net, opt, 2**20, 0, torch.device("cuda"))
    assert mem["cuda_peak_mb"] == 300.0 and mem["activations_mb"] == 1.0
    assert "cuda_peak_mb" not in memory.breakdown(net, opt, 0, 0, torch.device("cpu"))


def test_adamw_is_fused_on_the_cpu_too():
    p = torch.nn.Parameter(torch.zeros(3))
    assert runtime.adamw([{"params": [p]}], 1e-3, torch.device("cpu")).defaults["fused"] is True
