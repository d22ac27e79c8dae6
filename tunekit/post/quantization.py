"""Quantization with torchao: int8 after training, or trained for (QAT).

    tk.quantize(run)                                   # int8 dynamic activations, int8 weights
    tk.quantize(run, method="int8-weight")             # int8 weights, float activations
    tk.quantize(run, method="intx-dynamic", bits=4)    # 2..8-bit weights, int8 activations
    qat = tk.train(model, data, strategy=tk.QAT(bits=8))   # fake-quantized while training
    tk.quantize(qat)                                   # converts with the scheme it trained for

The Linear layers of the transformer blocks are quantized (``torchao.quantization.quantize_``);
embeddings, norms and the head stay in float. The record holds the quantized model as
one safetensors file (torchao's tensors flattened into int8 data, scales and zero points,
with the metadata to rebuild them: no pickle), so ``size_mb`` is that file's size.

Honest numbers: the methods and what they cost are measured, not assumed. In eager
mode on a CPU, int8 matrix products can be *slower* than fp32 (the activations are
quantized on the fly and the kernels are not fused without ``torch.compile``); the
record's ``latency_ms`` is whatever this machine measured. torchao stores 2..7-bit
weights one value per byte (``IntxUnpackedToInt8Tensor``), so their file is no smaller
than int8; the accuracy is what changes.

``torch.ao.quantization`` is deprecated and not used.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any, Optional

import torch
from torch import nn

from tunekit.config import ConfigError
from tunekit.post.base import before_and_after, copy_model, derived_record, save_model_tensors, source
from tunekit.runs import Run

TORCHAO_PIN = "torchao==0.18.0"
METHODS = ("int8-dynamic", "int8-weight", "intx-dynamic")
BITS = range(2, 9)


def torchao_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("torchao") is not None


@contextlib.contextmanager
def _quiet_torchao():
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


def _torchao():
    if not torchao_available():
        raise ConfigError(f"quantization needs torchao, which is not installed: pip install {TORCHAO_PIN}")
    with _quiet_torchao():
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
    _torchao()
    return 8


def config_for(method: str, bits: int):
    """The torchao config of ``method``."""
    q = _torchao()
    if method == "int8-dynamic":
        return q.Int8DynamicActivationInt8WeightConfig()
    if method == "int8-weight":
        return q.Int8WeightOnlyConfig()
    from torchao.quantization.granularity import PerAxis
    return q.Int8DynamicActivationIntxWeightConfig(weight_dtype=getattr(torch, f"int{bits}"),
                                                   weight_granularity=PerAxis(0))


def target_layers(model) -> list[str]:
    """Names of the ``nn.Linear`` layers inside the transformer blocks (what is quantized)."""
    prefix = model.backbone.blocks_prefix
    return [n for n, m in model.hf.named_modules() if isinstance(m, nn.Linear) and (n + ".").startswith(prefix)]


def _filter(names: set[str]):
    return lambda mod, fqn: isinstance(mod, nn.Linear) and fqn in names


def apply(model, method: str, bits: int, layers: Optional[list[str]] = None) -> list[str]:
    """Quantize ``model``'s block Linear layers in place (on the CPU); the names quantized."""
    layers = layers if layers is not None else target_layers(model)
    if not layers:
        raise ConfigError(f"{type(model.hf).__name__} has no nn.Linear layers in its blocks to quantize "
                          "(GPT-2 keeps its projections as transformers' Conv1D, which torchao does not take)")
    q = _torchao()
    model.to("cpu")
    with _quiet_torchao():
        q.quantize_(model.hf, config_for(method, bits), filter_fn=_filter(set(layers)))
    return layers


def flatten(state: dict) -> tuple[dict, dict]:
    """torchao tensors as plain tensors + safetensors metadata (torchao's own format)."""
    with _quiet_torchao():
        from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict
    tensors, metadata = flatten_tensor_state_dict(state)
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata


def quantize(run: Any, method: Optional[str] = None, bits: Optional[int] = None, *, data: Any = None,
             name: Optional[str] = None, runs_dir: Optional[str] = None) -> Run:
    """Quantize a run's model (or a pretrained model) and write a ``quantize`` record.

    Args:
        run: a :class:`~tunekit.runs.Run`, its directory, or a model from ``tk.load_model``.
        method: ``"int8-dynamic"`` (default; torchao's int8 dynamic-activation, int8-weight
            config), ``"int8-weight"`` (weights only) or ``"intx-dynamic"`` (``bits``-bit
            weights, int8 activations; what :class:`~tunekit.strategies.QAT` trains for, and
            the default for a QAT run).
        bits: weight bits for ``"intx-dynamic"``, 2..8 (default 8, or the QAT run's).
        data, name, runs_dir: as in :func:`tunekit.post.pruning`.

    Returns the record, with metrics, ``size_mb`` and ``latency_ms`` measured on the CPU
    before (``summary["before"]``) and after, and ``max_logit_diff``: the largest absolute
    difference between the float and the quantized model's outputs on one batch.
    """
    qat_bits = None
    if isinstance(run, Run) or not hasattr(run, "module"):
        opened = source_run(run)
        if opened is not None and opened.strategy.get("name") == "qat":
            qat_bits = int(opened.strategy.get("bits", 8))
    if method is None:
        method = "intx-dynamic" if qat_bits is not None else "int8-dynamic"
        bits = qat_bits if bits is None and qat_bits is not None else bits
    bits = check(method, bits)
    src = source(run, data)
    reference = copy_model(src.model)
    float_outputs = _outputs(src)
    model = src.model
    layers = apply(model, method, bits)
    operation = {"name": "quantize", "method": method, "bits": bits, "layers": layers,
                 "trained_for": "qat" if qat_bits is not None else None}
    label = method if method != "intx-dynamic" else f"intx{bits}-dynamic"
    with derived_record(src, model, "quantize", label, operation, fmt="torchao", name=name,
                        runs_dir=runs_dir) as writer:
        save_model_tensors(model, writer.path / "weights.safetensors")
        before, after = before_and_after(reference, model, src)
        diff = float((_outputs(src, model) - float_outputs).abs().max())
        writer.update(**after, before=before, max_logit_diff=diff, quantized_layers=len(layers))
    return Run(writer.path)


def source_run(run: Any) -> Optional[Run]:
    from tunekit.runs import load_run
    try:
        return run if isinstance(run, Run) else load_run(run)
    except Exception:  # noqa: BLE001 - source() gives the real error
        return None


@torch.no_grad()
def _outputs(src, model=None) -> torch.Tensor:
    model = model or src.model
    texts = src.data.validation["text"].tolist()[:16] or src.data.train["text"].tolist()[:16]
    enc = model.tokenize(texts, src.train.get("max_length") or 128)
    model.module.eval()
    return model.module({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}).logits.float()


def load_quantized(run: Run, model):
    """The ``torchao`` format's loader: quantize the parent's model the same way, then load
    the record's quantized tensors (data, scales, zero points) into it."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    op = run.strategy
    apply(model, op["method"], int(op["bits"]), op.get("layers"))
    f = run.path / "weights.safetensors"
    with safe_open(str(f), "pt") as fh:
        metadata = fh.metadata()
    with _quiet_torchao():
        from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict
        state, leftover = unflatten_tensor_state_dict(load_file(str(f)), metadata)
    if leftover:
        raise ConfigError(f"{f} holds tensors torchao could not rebuild: {sorted(leftover)[:3]}")
    result = model.hf.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys:
        raise ConfigError(f"{f} holds tensors the model lacks: {result.unexpected_keys[:3]}")
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
    q = _torchao()
    with _quiet_torchao():
        from torchao.quantization.qat import QATConfig
        q.quantize_(model.hf, QATConfig(config_for("intx-dynamic", bits), step="prepare"),
                    filter_fn=_filter(set(layers)))
    return layers
