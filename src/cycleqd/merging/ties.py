"""TIES-merging of task vectors of one tensor, by mergekit's own ``ties`` method, in memory.

TIES (Yadav et al., NeurIPS 2023): each task vector keeps its largest ``density`` share of
entries, a sign is elected per entry (the sign of the sum), and only the entries agreeing with it
are averaged. Used twice: to merge the archives' best elites into the final model
(``search.final_merge: ties``) and to turn one genome's per-expert parts into its task vector
(``basis.combine: ties``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_SHARED = ("int8_mask", "normalize", "rescale", "lambda")


def ties_combine(parts: Sequence[torch.Tensor], *, density: float = 0.5) -> torch.Tensor:
    """TIES merge of ``parts`` (task vectors of one tensor, equal weights; mergekit's defaults
    otherwise), float32 on the CPU. One part alone comes back unchanged (TIES of one vector would
    only trim it)."""
    if not parts:
        raise ValueError("ties_combine needs at least one task vector")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"TIES density must lie in (0, 1], got {density}")
    taus = [p.float().cpu() for p in parts]
    if len(taus) == 1:
        return taus[0]
    from cycleqd.merging.baselines import mergekit_module

    method = mergekit_module("merge_methods.registry").get("ties")
    group_of = mergekit_module("merge_methods.base").TensorGroup.from_tensors
    shared = {p.name: p.default for p in method.spec.parameters if p.name in _SHARED}
    group = group_of([torch.zeros_like(taus[0]), *taus], base_index=0)
    ids = [entry.id for entry in group.non_base]
    return method.merge_group(
        group,
        weight=dict.fromkeys(ids, 1.0),
        density=dict.fromkeys(ids, density),
        **shared,
    )
