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

from typing import Any, Optional

import torch

from tunekit.config import plain_arguments
from tunekit.post.base import before_and_after, copy_model, derived_record, model_tensors, source
from tunekit.quantizers import METHODS, apply, check  # noqa: F401 - METHODS: this module's API too
from tunekit.runs import Run, load_run


@plain_arguments
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
    modules = dict(model.hf.named_modules())
    layers = apply(model, method, bits)
    quantized_params = sum(modules[n].weight.numel() for n in layers)  # counted in float, before the swap
    operation = {"name": "quantize", "method": method, "bits": bits, "layers": layers,
                 "trained_for": "qat" if qat_bits is not None else None}
    label = method if method != "intx-dynamic" else f"intx{bits}-dynamic"
    with derived_record(src, model, "quantize", label, operation, fmt="torchao", name=name,
                        runs_dir=runs_dir) as writer:
        writer.save_tensors("weights.safetensors", *model_tensors(model))
        before, after = before_and_after(reference, model, src)
        diff = float((_outputs(src, model) - float_outputs).abs().max())
        writer.update(**after, before=before, max_logit_diff=diff, quantized_layers=len(layers),
                      quantized_params=quantized_params)
    return Run(writer.path)


def source_run(run: Any) -> Optional[Run]:
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


