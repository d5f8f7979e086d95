"""How alike two segmentation tasks are, and how well a merge of their experts keeps both.

The paper (Kuroki et al., SAM experts) found merging easier the more alike the tasks. To check it
here each pair of tasks gets two similarity measures, defined before looking at any merge:

- ``label_iou``: task-design similarity, the Jaccard index (torchmetrics) between the two tasks'
  target maps on the same scenes of the general distribution: how much of what one task asks to
  segment the other asks too (``red``/``warm`` share the red objects; ``circles``/``squares``
  share nothing);
- ``cosine``: cosine similarity of the two experts' task vectors (expert minus base, all
  floating-point weights concatenated): how alike the fine-tunings were.

and each pair's merge is scored by ``retention``: the mean over the two tasks of the merge's test
mIoU divided by that task's expert's, and ``gain_kept``: the mean over the two tasks of
``(merge - base) / (expert - base)``, the share of the expert's improvement over the base that
survives (less flattered than ``retention`` by the base's already decent mIoU).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import torch
from torchmetrics.functional.classification import binary_jaccard_index

from cycleqd.vision.scenes import SceneSet


def pairs(tasks: list[str]) -> list[tuple[str, str]]:
    return list(combinations(tasks, 2))


def label_iou(scenes: SceneSet, a: str, b: str) -> float:
    """Jaccard index of tasks ``a`` and ``b``'s target maps over all pixels of ``scenes``."""
    return float(binary_jaccard_index(scenes.targets(a), scenes.targets(b)))


def task_vector_cosine(
    base: Mapping[str, torch.Tensor],
    expert_a: Mapping[str, torch.Tensor],
    expert_b: Mapping[str, torch.Tensor],
) -> float:
    """Cosine of the two experts' task vectors over every floating-point tensor of the base."""
    names = sorted(n for n, t in base.items() if t.is_floating_point())
    ta = torch.cat([(expert_a[n].float() - base[n].float()).reshape(-1) for n in names])
    tb = torch.cat([(expert_b[n].float() - base[n].float()).reshape(-1) for n in names])
    return float(torch.nn.functional.cosine_similarity(ta, tb, dim=0))


def retention(
    merge: Mapping[str, float], experts: Mapping[str, float], base: Mapping[str, float]
) -> dict[str, float]:
    """``retention`` and ``gain_kept`` of a merge on the tasks of ``merge`` (see module doc)."""
    tasks = list(merge)
    kept = [merge[t] / experts[t] if experts[t] > 0 else 0.0 for t in tasks]
    gains = [
        (merge[t] - base[t]) / (experts[t] - base[t]) if experts[t] > base[t] else float("nan")
        for t in tasks
    ]
    return {"retention": sum(kept) / len(kept), "gain_kept": sum(gains) / len(gains)}


def rank_correlation(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho (scipy); ``None`` when undefined (fewer than 3 points, a constant)."""
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    rho = spearmanr(x, y).statistic
    return None if rho != rho else float(rho)
