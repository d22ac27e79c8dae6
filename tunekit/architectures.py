"""What tunekit knows about transformer families: canonical module labels and adaptable layers.

Every family names the same parts differently (BERT's ``attention.self.query``,
DistilBERT's ``attention.q_lin``, DeBERTa-v2's ``attention.self.query_proj``, Llama's
``self_attn.q_proj``, GPT-2's fused ``attn.c_attn``). The instruments put runs of any
family on one axis, so each module inside a block gets one *label*:

    query key value qkv attn_out attn_norm cross_query cross_key cross_value cross_out cross_norm
    gate intermediate output out_norm

``qkv`` is a fused query/key/value projection (GPT-2); the ``cross_`` labels are a decoder
block's attention over the encoder's output (BART's ``encoder_attn``, T5's ``EncDecAttention``). A module that no table
knows keeps its path inside the block (``mixer.in_proj``), so nothing is hidden.

:data:`ADAPTABLE` lists the layer types that peft's LoRA and IA3 wrap: ``nn.Linear``
and transformers' ``Conv1D`` (GPT-2 keeps its projections as ``Conv1D``, weight
``[in, out]``). No torch import at module level: plots read the labels too.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from tunekit.config import ConfigError

if TYPE_CHECKING:
    from torch import nn

# path inside a block -> label
MODULE_LABELS: dict[str, str] = {
    # BERT, RoBERTa, ELECTRA (and XLM-R, CamemBERT ...)
    "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
    "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "intermediate", "output.dense": "output", "output.LayerNorm": "out_norm",
    # DeBERTa-v2 / v3
    "attention.self.query_proj": "query", "attention.self.key_proj": "key",
    "attention.self.value_proj": "value",
    # DistilBERT
    "attention.q_lin": "query", "attention.k_lin": "key", "attention.v_lin": "value",
    "attention.out_lin": "attn_out", "sa_layer_norm": "attn_norm", "ffn.lin1": "intermediate",
    "ffn.lin2": "output", "output_layer_norm": "out_norm",
    # Llama, Qwen2, Mistral, Gemma ...
    "self_attn.q_proj": "query", "self_attn.k_proj": "key", "self_attn.v_proj": "value",
    "self_attn.o_proj": "attn_out", "input_layernorm": "attn_norm", "mlp.gate_proj": "gate",
    "mlp.up_proj": "intermediate", "mlp.down_proj": "output", "post_attention_layernorm": "out_norm",
    # GPT-2
    "attn.c_attn": "qkv", "attn.c_proj": "attn_out", "ln_1": "attn_norm", "mlp.c_fc": "intermediate",
    "mlp.c_proj": "output", "ln_2": "out_norm",
    # BART, Marian, mBART, Pegasus (encoder and decoder blocks; the decoder's encoder_attn is cross-attention)
    "self_attn.out_proj": "attn_out", "self_attn_layer_norm": "attn_norm",
    "encoder_attn.q_proj": "cross_query", "encoder_attn.k_proj": "cross_key", "encoder_attn.v_proj": "cross_value",
    "encoder_attn.out_proj": "cross_out", "encoder_attn_layer_norm": "cross_norm",
    "fc1": "intermediate", "fc2": "output", "final_layer_norm": "out_norm",
    # T5, mT5 (layer.0 self-attention; the decoder's layer.1 is cross-attention, its layer.2 the feed-forward)
    "layer.0.SelfAttention.q": "query", "layer.0.SelfAttention.k": "key", "layer.0.SelfAttention.v": "value",
    "layer.0.SelfAttention.o": "attn_out", "layer.0.layer_norm": "attn_norm",
    "layer.1.EncDecAttention.q": "cross_query", "layer.1.EncDecAttention.k": "cross_key",
    "layer.1.EncDecAttention.v": "cross_value", "layer.1.EncDecAttention.o": "cross_out",
    "layer.1.DenseReluDense.wi": "intermediate", "layer.1.DenseReluDense.wo": "output",
    "layer.1.DenseReluDense.wi_0": "gate", "layer.1.DenseReluDense.wi_1": "intermediate",
    "layer.2.DenseReluDense.wi": "intermediate", "layer.2.DenseReluDense.wo": "output",
    "layer.2.DenseReluDense.wi_0": "gate", "layer.2.DenseReluDense.wi_1": "intermediate",
}

#: the order of labels on every axis (unknown paths go after these)
LABEL_ORDER = ("query", "key", "value", "qkv", "attn_out", "attn_norm", "cross_query", "cross_key", "cross_value",
               "cross_out", "cross_norm", "gate", "intermediate", "output", "out_norm")


def module_label(path: str) -> str:
    """The canonical label of a module given its path inside a block (``attention.q_lin`` ->
    ``query``); an unknown path is returned as it is."""
    return MODULE_LABELS.get(path, path)


def adaptable_types() -> tuple[type, ...]:
    """Layer types that peft's LoRA and IA3 adapt: Linear and transformers' Conv1D."""
    from torch import nn
    types: list[type] = [nn.Linear]
    try:
        from transformers.pytorch_utils import Conv1D
        types.append(Conv1D)
    except ImportError:  # pragma: no cover - transformers always has it
        pass
    return tuple(types)


def in_out(module) -> tuple[int, int]:
    """(input features, output features) of an adaptable layer (Conv1D stores its weight
    transposed, ``[in, out]``)."""
    from torch import nn
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    w = module.weight
    return int(w.shape[0]), int(w.shape[1])


def default_targets(model_type: str, table: dict, block_paths: list[str],
                    labels: tuple[str, ...]) -> Optional[list[str]]:
    """Default target-module names for a peft method: peft's own per-architecture ``table``
    where it has the model type, else the modules whose canonical label is in ``labels``
    (e.g. ``("query", "value")`` for LoRA), found among ``block_paths`` (paths of adaptable
    layers inside a block). None when neither finds anything."""
    if model_type in table:
        return list(table[model_type])
    found = sorted({p for p in block_paths if module_label(p) in labels})
    return found or None


def find_blocks(base_model) -> tuple[str, "nn.ModuleList"]:
    """``(path, ModuleList)`` of a base model's transformer blocks: the longest list of modules
    of one type (``encoder.layer`` for BERT, ``layers`` for Llama, ``h`` for GPT-2). The one way
    tunekit finds the blocks; :class:`~tunekit.backbone.Backbone` keeps what it finds."""
    from torch import nn
    best = None
    for name, mod in base_model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and len({type(m) for m in mod}) == 1:
            if best is None or len(mod) > len(best[1]):
                best = (name, mod)
    if best is None:
        raise ConfigError(f"cannot find the transformer blocks of {type(base_model).__name__}")
    return best


def block_layers(block, labels: Optional[tuple[str, ...]] = None, types: Optional[tuple[type, ...]] = None) -> list:
    """``(path inside the block, layer)`` of the layers of ``block`` of ``types`` (default: the
    adaptable ones, Linear and Conv1D) whose canonical label is in ``labels`` (default: all)."""
    types = types or adaptable_types()
    return [(p, m) for p, m in block.named_modules()
            if isinstance(m, types) and (labels is None or module_label(p) in labels)]
