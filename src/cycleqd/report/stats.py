"""Intervals and paired comparisons for scores on small test sets.

A task score here is a mean of per-sample pass/fail outcomes on a few dozen samples, so a reader
needs its uncertainty next to it: Wilson's interval for one task (well behaved at 0 and 1, unlike
the normal approximation), a seeded bootstrap for the average over tasks, and, for "is CycleQD
better than that baseline", a paired comparison on the same samples (paired bootstrap of the
difference of averages, and an exact McNemar test on the discordant samples).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import binomtest

Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default); ``(0, 1)`` when ``n`` is 0."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes <= 0 else max(0.0, centre - half)  # exact at the ends, not 1e-17
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return (low, high)


def bootstrap_average(
    per_task: Mapping[str, Sequence[float]], *, seed: int = 0, draws: int = 2000
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean over tasks of each task's mean score.

    Samples are redrawn within each task (tasks keep their sizes), as a new test set would be.
    """
    rng = np.random.default_rng(seed)
    means = np.zeros(draws)
    for scores in per_task.values():
        x = np.asarray(scores, dtype=float)
        idx = rng.integers(0, len(x), size=(draws, len(x)))
        means += x[idx].mean(axis=1)
    means /= len(per_task)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``b`` samples only A passed, ``c`` only B passed.

    The exact test is a binomial test of ``b`` out of the ``b + c`` discordant samples at 1/2.
    """
    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, 0.5).pvalue)


def paired_comparison(
    a: Mapping[str, Mapping[str, float]],
    b: Mapping[str, Mapping[str, float]],
    *,
    seed: int = 0,
    draws: int = 2000,
) -> dict[str, object]:
    """A against B on the same samples: ``{task: {sample_id: score}}`` for each model.

    Returns the difference of averages (A - B) with its 95% paired-bootstrap interval, per-task
    differences, how many samples each model alone passed, and the exact McNemar p-value on those.
    Samples missing from either side are left out (and counted).
    """
    rng = np.random.default_rng(seed)
    diffs = np.zeros(draws)
    per_task: dict[str, float] = {}
    only_a = only_b = missing = 0
    for task in a:
        ids = sorted(set(a[task]) & set(b.get(task, {})))
        missing += len(set(a[task]) ^ set(b.get(task, {})))
        xa = np.array([a[task][i] for i in ids], dtype=float)
        xb = np.array([b[task][i] for i in ids], dtype=float)
        d = xa - xb
        per_task[task] = float(d.mean()) if len(d) else 0.0
        if len(d):
            idx = rng.integers(0, len(d), size=(draws, len(d)))
            diffs += d[idx].mean(axis=1)
        only_a += int(((xa >= 0.5) & (xb < 0.5)).sum())
        only_b += int(((xb >= 0.5) & (xa < 0.5)).sum())
    diffs /= max(1, len(a))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {
        "difference": sum(per_task.values()) / max(1, len(per_task)),
        "interval": [float(low), float(high)],
        "per_task": per_task,
        "only_a_passed": only_a,
        "only_b_passed": only_b,
        "mcnemar_p": mcnemar_exact(only_a, only_b),
        "unpaired_samples": missing,
    }
