"""LoRA adapters through peft, saved as the adapter itself or merged into plain weights.

LoRA is the default because it trains a fraction of the parameters (fast on a CPU, no optimizer
state for the full model) and gives low-rank task vectors, whose bases come exactly from the
adapter's factors (``merging/adapters.py``). ``save: merged`` writes a full checkpoint instead,
for tools that take no adapters.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model

ALL_LINEAR = "all-linear"


def add_lora(
    model: torch.nn.Module,
    *,
    r: int,
    alpha: float,
    dropout: float,
    target_modules: Sequence[str] | str = ALL_LINEAR,
) -> PeftModel:
    """Wrap ``model`` with trainable LoRA adapters; everything else is frozen.

    ``all-linear`` targets every linear projection of the transformer blocks (attention and MLP)
    and never the output head.
    """
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    if isinstance(targets, list) and targets == [ALL_LINEAR]:
        targets = ALL_LINEAR
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none"
    )
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in 5.x
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, config)


def cast_frozen_weights(model: PeftModel, dtype: torch.dtype) -> int:
    """Store the frozen weights under the adapters in ``dtype``; returns how many were cast.

    Why: under bf16 autocast every linear layer casts its float32 weight to bf16 on every
    forward pass (about 0.5 GB read and written per pass for a 135M model), though the weights
    never change. Kept in bf16 they are cast once, and the matmuls see exactly the values they
    saw before, so training is unchanged, bit for bit. The adapters, embeddings and norms stay
    float32; :func:`restore_frozen_weights` puts the exact weights back before a merge.
    """
    from peft.tuners.lora import LoraLayer

    cast = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            weight = module.get_base_layer().weight
            if weight.dtype != dtype:
                weight.data = weight.data.to(dtype)
                cast += 1
    # The float32 parameters left (embeddings, norms) are views of the checkpoint's file
    # mapping, which keeps every page of it that was read resident (the cast read the whole
    # file: 0.5 GB for SmolLM2). Copied out, the mapping closes and only they stay.
    for param in model.parameters():
        if not param.requires_grad and param.dtype != dtype:
            param.data = param.data.clone()
    return cast


def restore_frozen_weights(model: PeftModel, original: torch.nn.Module) -> int:
    """Put ``original``'s weights (the base freshly loaded) back under ``model``'s adapters, so a
    merge adds the adapters to the exact base, not to its bf16 rounding; returns how many."""
    from peft.tuners.lora import LoraLayer

    modules = dict(original.named_modules())
    restored = 0
    for name, module in model.get_base_model().named_modules():
        if isinstance(module, LoraLayer):
            module.get_base_layer().weight.data = modules[name].weight.data
            restored += 1
    return restored


def merge_lora(model: PeftModel) -> torch.nn.Module:
    """The base architecture with ``W + (alpha / r) B A`` folded into each adapted weight."""
    return model.merge_and_unload()
