"""A batch's shared prefix, computed once for all of its micro-batches.

Why: ``max_batch_tokens`` splits a long batch into micro-batches so that one pass's activations
stay small (they set training's peak memory). Each micro-batch used to run the batch's shared
prefix again (550 of an os conversation's 680 tokens), so a smaller budget cost more compute:
at 1024 tokens the os expert's steps were 15% slower than at 1536 (docs/results.md). Here the
prefix runs once; its keys and values enter every micro-batch as leaf tensors, whose gradients
add up over the micro-batches, and one backward pass through the prefix then carries that sum
into the weights: the gradient of one pass over the whole batch, as before.

This needs a cache of plain full-attention layers (transformers' ``DynamicLayer``), whose keys
and values can be put back before each micro-batch. A model whose cache is anything else
(sliding windows, older transformers releases) runs the prefix in every micro-batch instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cycleqd.models.engine import returned_cache


def prefix_cache(model: torch.nn.Module, ids: torch.Tensor) -> Any:
    """The key/value cache of ``ids`` (one row of prefix tokens) from the model's body: the
    prefix needs no logits, and a call to the output head would keep its bf16 weight for the
    backward pass (57 MB for SmolLM2)."""
    body = getattr(model, "base_model", model)
    return returned_cache(body(input_ids=ids, use_cache=True))


@dataclass
class SharedPrefix:
    """The prefix's cache; ``computed`` are its keys and values as the prefix's graph made
    them, ``leaves`` what the micro-batches see (the same tensors when no gradient is needed).
    ``shared`` is False for a cache that cannot be reset: it then serves the first micro-batch
    alone, and each later one runs the prefix itself."""

    cache: Any
    computed: list[tuple[torch.Tensor, torch.Tensor]]
    leaves: list[tuple[torch.Tensor, torch.Tensor]]
    shared: bool = True
    served: int = 0

    def for_rows(self, rows: int) -> Any:
        """The cache holding the prefix for a micro-batch of ``rows`` rows (the cache the last
        micro-batch extended is reset first), or None where the micro-batch must run it."""
        self.served += 1
        if not self.shared:
            if self.served > 1:
                return None
        else:
            for layer, (keys, values) in zip(self.cache.layers, self.leaves, strict=True):
                layer.keys, layer.values = keys, values
        self.cache.batch_repeat_interleave(rows)
        return self.cache

    def backward(self) -> None:
        """Carry the gradients the micro-batches left on the leaves through the prefix."""
        outputs: list[torch.Tensor] = []
        gradients: list[torch.Tensor] = []
        for made, leaf in zip(self.computed, self.leaves, strict=True):
            for tensor, copy in zip(made, leaf, strict=True):
                if copy is not tensor and copy.grad is not None:
                    outputs.append(tensor)
                    gradients.append(copy.grad)
        if outputs:
            torch.autograd.backward(outputs, gradients)


def share_prefix(model: torch.nn.Module, ids: torch.Tensor) -> SharedPrefix:
    """Run the prefix ``ids`` once for several micro-batches (see :class:`SharedPrefix`)."""
    cache = prefix_cache(model, ids)
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer).__name__ != "DynamicLayer" for layer in layers):
        return SharedPrefix(cache, [], [], shared=False)
    computed = [(layer.keys, layer.values) for layer in layers]
    if not torch.is_grad_enabled():
        return SharedPrefix(cache, computed, computed)
    leaves = [(k.detach().requires_grad_(), v.detach().requires_grad_()) for k, v in computed]
    return SharedPrefix(cache, computed, leaves)
