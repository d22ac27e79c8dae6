"""The one path for every peft method (LoRA, IA3, ...): wrap, count, find, and measure adapters.

Nothing here recognises an adapter by the spelling of a parameter name. peft's own
structure says what is what: an adapted layer is a ``BaseTunerLayer`` that names
its adapter tensors in ``adapter_layer_names`` (``("lora_A", "lora_B", ...)``,
``("ia3_l",)``) and keeps the original layer as ``get_base_layer()``; a head that
trains in full is an ``AuxiliaryTrainingWrapper`` (``ModulesToSaveWrapper``) that holds
the ``original_module`` and a trained copy. The effective change of an adapted
layer is measured with peft's own ``merge`` on a float64 copy of the layer, so it
is exact for any method (LoRA's ``scale * B @ A``, IA3's ``W * (l - 1)``).

    peft_model = wrap(model.hf, config)               # peft.get_peft_model, errors in words
    count(model.hf, config)                           # exact trainable / total, nothing built
    layout = Layout.of(model.hf)                      # raw name -> canonical name and role
    effective_deltas(model.hf)                        # {canonical weight name: delta (float64)}
"""
from __future__ import annotations

import contextlib
import copy
import re
import warnings
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from tunekit.architectures import adaptable_types
from tunekit.config import ConfigError

BASE, ADAPTER, COPY, ORIGINAL = "base", "adapter", "trained_copy", "original"


def _tuner_types() -> tuple[type, type]:
    from peft.tuners.tuners_utils import BaseTunerLayer
    try:
        from peft.utils.other import AuxiliaryTrainingWrapper as Wrapper
    except ImportError:  # older peft
        from peft.utils.other import ModulesToSaveWrapper as Wrapper
    return BaseTunerLayer, Wrapper


@dataclass
class Layout:
    """Where each parameter of a (possibly peft-injected) Hugging Face model belongs.

    ``roles[raw name] = (canonical name, role)`` with role ``"base"`` (a parameter of the
    plain model; ``canonical`` is its name there), ``"adapter"`` (an adapter tensor;
    canonical is the adapted layer's weight name), ``"trained_copy"`` (the copy of a
    fully trained module, e.g. the head; canonical is the original's name) or
    ``"original"`` (the untouched original of such a module).
    """

    roles: dict[str, tuple[str, str]]

    @classmethod
    def of(cls, hf: nn.Module) -> "Layout":
        tuner, wrapper = _tuner_types()
        rules: dict[str, tuple[str, str]] = {}  # raw prefix -> (canonical prefix, role)
        for path, mod in hf.named_modules():
            pre = f"{path}." if path else ""
            if isinstance(mod, tuner):
                rules[f"{pre}base_layer."] = (pre, BASE)
                for attr in tuple(mod.adapter_layer_names) + tuple(getattr(mod, "other_param_names", ())):
                    rules[f"{pre}{attr}."] = (f"{pre}weight", ADAPTER)
            elif isinstance(mod, wrapper):
                rules[f"{pre}original_module."] = (pre, ORIGINAL)
                for attr in mod.adapter_layer_names:
                    held = getattr(mod, attr, None)
                    if isinstance(held, (nn.ModuleDict, nn.ParameterDict, dict)):  # one copy per adapter
                        for adapter in held:
                            rules[f"{pre}{attr}.{adapter}."] = (pre, COPY)
                    else:  # e.g. trainable tokens: an adapter tensor of its own
                        rules[f"{pre}{attr}."] = (pre.rstrip(".") + ".weight", ADAPTER)
        ordered = sorted(rules.items(), key=lambda kv: -len(kv[0]))
        roles = {}
        for name, _ in hf.named_parameters():
            for prefix, (canon, role) in ordered:
                if name.startswith(prefix):
                    roles[name] = (canon if role == ADAPTER else canon + name[len(prefix):], role)
                    break
            else:
                roles[name] = (name, BASE)
        return cls(roles)

    def canonical(self, name: str) -> str:
        return self.roles[name][0] if name in self.roles else name

    def role(self, name: str) -> str:
        return self.roles[name][1] if name in self.roles else BASE

    def names(self, *roles: str) -> list[str]:
        return [n for n, (_, r) in self.roles.items() if r in roles]


def effective_state(hf: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter of the plain model, by canonical name, at its *effective* value: an
    adapted layer's weight (and bias) with the adapter merged in (float64, exact), a fully
    trained module's trained copy, anything else as it is (not copied)."""
    layout = Layout.of(hf)
    params = dict(hf.named_parameters())
    out = {layout.canonical(n): params[n].detach() for n in layout.names(BASE)}
    for n in layout.names(COPY):  # a fully trained module: its trained copy
        out[layout.canonical(n)] = params[n].detach()
    for name, (_, merged) in _merged_layers(hf).items():
        for key, value in merged.items():
            out[f"{name}.{key}"] = value
    return out


def effective_deltas(hf: nn.Module) -> dict[str, torch.Tensor]:
    """``{canonical parameter name: merged - original}`` (float64) for every parameter that an
    adapter changes, measured with peft's ``merge`` on a float64 copy of each adapted layer."""
    out = {}
    for name, (base, merged) in _merged_layers(hf).items():
        for key, value in merged.items():
            out[f"{name}.{key}"] = value - base[key]
    return out


def _merged_layers(hf: nn.Module) -> dict[str, tuple[dict, dict]]:
    """``{layer path: (original params, merged params)}`` (float64) of each adapted layer."""
    tuner, _ = _tuner_types()
    out = {}
    with torch.no_grad():
        for path, mod in hf.named_modules():
            if not isinstance(mod, tuner):
                continue
            layer = copy.deepcopy(mod).to(device="cpu", dtype=torch.float64)
            base_layer = layer.get_base_layer()
            before = {k: v.detach().clone() for k, v in base_layer.named_parameters(recurse=False)}
            adapters = [a for a in layer.active_adapters if a not in layer.merged_adapters]
            if adapters:
                layer.merge(adapter_names=adapters)
            after = {k: v.detach().clone() for k, v in layer.get_base_layer().named_parameters(recurse=False)}
            out[path] = (before, after)
            del layer
    return out


# ----- building ----------------------------------------------------------------------------------
_NOT_FOUND = re.compile(r"[Tt]arget modules? .* not found|not found in the base model")


@contextlib.contextmanager
def checkpointing_notice_quiet():
    """Drop transformers' notice that ``is_gradient_checkpointing`` is deprecated, which peft
    (wrapping a model) and ``copy.deepcopy`` (reading every property) raise where tunekit never
    names it, peft's "Unsupported layer type" for a norm layer that LayerNorm tuning wraps, its
    note that AdaLoRA's rank pattern names no layer, and its save's alarm at a matrix AdaLoRA cut
    to rank 0; filtered by their exact text only, so every other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        # LayerNorm tuning wraps norm layers, which peft's in/out size lookup does not know (it needs none)
        warnings.filterwarnings("ignore", message=r"Unsupported layer type '<class '[\w.]*(LayerNorm|RMSNorm)'>'",
                                category=UserWarning)
        # AdaLoRA's rank pattern names its singular-value vectors (lora_E), which peft's LoRA check of
        # rank_pattern keys reads as layer names; peft resizes the adapter from it all the same
        warnings.filterwarnings("ignore", message=r"The following rank_pattern keys did not match any targeted "
                                r"module and were ignored: \[('[\w.]*\.lora_E'(, )?)+\]", category=RuntimeWarning)
        # and a matrix AdaLoRA cut to rank 0 is saved as a zero-sized tensor, which peft's save takes for an
        # unsharded DeepSpeed / FSDP tensor: only zero-sized ones are let pass (a 1-D one still warns; past
        # three, peft names the first three and counts the rest, "(+3 more)")
        warnings.filterwarnings("ignore", message=r"Adapter '[^']+': \d+ LoRA tensor\(s\) have invalid shape: "
                                r"([\w.]+:\((0, \d+|\d+, 0)\)(, )?)+( \(\+\d+ more\))?\. A 1-D or zero-sized")
        yield


def wrap(hf: nn.Module, config) -> nn.Module:
    """``peft.get_peft_model(hf, config)``: injects the adapter into ``hf`` (in place, as peft
    does) and returns the ``PeftModel``. peft's errors come back as ConfigError."""
    from peft import get_peft_model
    try:
        with checkpointing_notice_quiet():
            return get_peft_model(hf, config)
    except ValueError as e:
        raise ConfigError(f"{type(config).__name__}: peft cannot adapt {type(hf).__name__}: {e}") from e


def merge_and_unload(peft_model) -> nn.Module:
    """The plain model with the adapter folded in (peft's ``merge_and_unload``) and every
    fully trained module (the new head) as its trained copy. peft leaves the head wrapped
    for some methods (LayerNorm tuning), which would save it under names transformers
    does not know; such wrappers are replaced here by the copy that trained."""
    _, wrapper = _tuner_types()
    if getattr(peft_model.active_peft_config, "is_prompt_learning", False):
        raise ConfigError(f"a {peft_model.active_peft_config.peft_type.value.lower().replace('_', ' ')} adapter "
                          "cannot be folded into the weights: its learned virtual tokens are inputs the model "
                          "reads before the text, not a change of any weight; use the record's adapter/ folder "
                          "with peft (its card's snippet), or train a weight adapter (LoRA) to export or "
                          "post-train")
    with checkpointing_notice_quiet():
        hf = peft_model.merge_and_unload()
    for name, module in list(hf.named_modules()):
        if isinstance(module, wrapper) and name:
            parent, _, child = name.rpartition(".")
            active = module.active_adapter
            active = active[0] if isinstance(active, (list, tuple)) else active
            trained = module.modules_to_save[active] if active in getattr(module, "modules_to_save", {}) \
                else module.original_module
            setattr(hf.get_submodule(parent) if parent else hf, child, trained)
    return hf


class VirtualTokens(nn.Module):
    """The learned virtual tokens of a prompt-learning adapter, as a part of tunekit's task module:
    ``forward(batch_size)`` gives what peft's own forward would put before the text: for prompt
    tuning (``kind == "embeddings"``) their embeddings ``[batch, tokens, hidden]``; for prefix
    tuning (``kind == "past"``) every layer's keys and values, as a cache of past tokens. It
    holds peft's prompt encoder (so the task module's parameters, device moves and DDP include
    it) and asks the ``PeftModel`` for the prompt."""

    def __init__(self, peft_model):
        super().__init__()
        self.encoder = peft_model.prompt_encoder
        self._peft = (peft_model,)  # a tuple: not registered twice as a submodule
        self.kind = "past" if peft_model.active_peft_config.peft_type.value == "PREFIX_TUNING" else "embeddings"

    @property
    def count(self) -> int:
        """How many virtual tokens."""
        return int(self._peft[0].active_peft_config.num_virtual_tokens)

    def forward(self, batch_size: int) -> torch.Tensor:
        return self._peft[0].get_prompt(batch_size=batch_size)


def _as_autocast(module, args, output):
    """A layer's output in the autocast dtype while autocast is on, as a plain Linear's is."""
    if isinstance(output, torch.Tensor) and output.dtype == torch.float32:
        device = output.device.type
        if torch.is_autocast_enabled(device):
            return output.to(torch.get_autocast_dtype(device))
    return output


def match_linear_dtype(peft_model) -> None:
    """Make every adapted Linear (or Conv1D) layer of ``peft_model`` give its output in the dtype a
    plain Linear gives under autocast. peft's VeRA and LoHa add a float32 product to the bf16
    result, so their layers return float32 where their neighbours return bf16; DeBERTa-v2 then
    fills a bf16 score with float32's minimum and fails ("cannot be converted to type
    c10::BFloat16"). LoRA's layers already cast back (a no-op there); norm layers (LayerNorm
    tuning) are left as they are (autocast keeps norms in float32)."""
    tuner, _ = _tuner_types()
    linear = adaptable_types()
    for module in peft_model.modules():
        if isinstance(module, tuner) and isinstance(module.get_base_layer(), linear) \
                and not getattr(module, "_tunekit_dtype_hook", False):
            module.register_forward_hook(_as_autocast)
            module._tunekit_dtype_hook = True


def virtual_tokens(peft_model) -> "VirtualTokens | None":
    """The virtual tokens of ``peft_model`` when its adapter is prompt tuning (which adds no
    layer: it prepends learned embeddings to the input), else None."""
    config = peft_model.active_peft_config
    if not getattr(config, "is_prompt_learning", False):
        return None
    return VirtualTokens(peft_model)


def count(hf: nn.Module, config) -> dict:
    """Exact trainable / total parameters that ``config`` gives ``hf``, as peft counts them
    (``get_nb_trainable_parameters``), from a skeleton on the meta device: nothing is
    allocated and ``hf`` is not touched."""
    # building draws random initial values (on the meta device, but from the CPU generator):
    # counting must not move the seeded random stream that training then uses
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        skeleton = type(hf)(copy.deepcopy(hf.config))
        peft_model = wrap(skeleton, copy.deepcopy(config))
    trainable, total = peft_model.get_nb_trainable_parameters()
    return counts(trainable, total)


def quantized(tensor) -> bool:
    """True for a quantized weight (a torchao tensor subclass that dequantizes), not a plain one."""
    data = getattr(tensor, "data", tensor)
    return type(data) not in (torch.Tensor, nn.Parameter) and hasattr(data, "dequantize")


def counts(trainable: int, total: int) -> dict:
    """``{"trainable", "total", "percent"}``: how every parameter count in tunekit is given."""
    return {"trainable": int(trainable), "total": int(total),
            "percent": 100.0 * trainable / total if total else 0.0}


def adaptable_layers(hf: nn.Module, under: str) -> dict[str, nn.Module]:
    """Layers peft can adapt (Linear, Conv1D) whose name starts with ``under``."""
    types = adaptable_types()
    return {n: m for n, m in hf.named_modules() if isinstance(m, types) and n.startswith(under)}


def match(names: Iterable[str], targets: Iterable[str]) -> dict[str, list[str]]:
    """``{target: [layer names it selects]}``, as peft matches a list: the name itself or a
    ``.``-separated suffix of it."""
    names = list(names)
    return {t: [n for n in names if n == t or n.endswith("." + t)] for t in targets}
