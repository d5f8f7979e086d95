"""Parent selection from an archive.

Elite sampling (CycleQD): an elite's probability is proportional to
``prod_j (alpha_low + norm(f_j) * (alpha_high - alpha_low))`` over its quality and BC scores, each
min-max normalised over the archive. It prefers elites that are good on every task while keeping
every elite reachable. Uniform sampling is the paper's ablation.
"""

from __future__ import annotations

import numpy as np

from cycleqd.search.archive import Elite


def elite_probabilities(
    elites: list[Elite], *, alpha_low: float = 0.5, alpha_high: float = 0.8
) -> np.ndarray:
    """Sampling probabilities of ``elites`` under the paper's formula."""
    scores = np.array([[e.quality, *e.bcs] for e in elites], dtype=np.float64)
    low, high = scores.min(0), scores.max(0)
    span = high - low
    # A score every elite shares carries no preference: it contributes the same factor to all.
    norm = np.where(span > 0, (scores - low) / np.where(span > 0, span, 1.0), 1.0)
    weights = np.prod(alpha_low + norm * (alpha_high - alpha_low), axis=1)
    return weights / weights.sum()


def sample_parents(
    elites: list[Elite],
    rng: np.random.Generator,
    *,
    kind: str = "elite",
    alpha_low: float = 0.5,
    alpha_high: float = 0.8,
) -> tuple[Elite, Elite]:
    """Two distinct parents (the same one twice only if the archive holds a single elite)."""
    if not elites:
        raise ValueError("cannot sample parents from an empty archive")
    if len(elites) == 1:
        return elites[0], elites[0]
    if kind == "elite":
        p = elite_probabilities(elites, alpha_low=alpha_low, alpha_high=alpha_high)
    elif kind == "random":
        p = None
    else:
        raise ValueError(f"unknown sampler {kind!r}")
    i, j = rng.choice(len(elites), size=2, replace=False, p=p)
    return elites[int(i)], elites[int(j)]
