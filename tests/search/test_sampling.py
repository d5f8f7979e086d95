"""Elite sampling: the paper's formula and the distribution it induces."""

from __future__ import annotations

import numpy as np
import pytest

from cycleqd.search.archive import Elite
from cycleqd.search.sampling import elite_probabilities, sample_parents


def elites() -> list[Elite]:
    return [
        Elite("a", 0.2, (0.1, 0.5), (0, 0)),
        Elite("b", 0.6, (0.3, 0.5), (1, 0)),
        Elite("c", 1.0, (0.5, 0.5), (2, 0)),
        Elite("d", 0.6, (0.5, 0.5), (3, 0)),
    ]


def test_probabilities_match_hand_computation() -> None:
    # quality normalised: a 0, b 0.5, c 1, d 0.5; bc1: a 0, b 0.5, c 1, d 1; bc2 constant
    factor = {0.0: 0.5, 0.5: 0.65, 1.0: 0.8}
    raw = np.array(
        [
            factor[0] * factor[0],
            factor[0.5] * factor[0.5],
            factor[1] * factor[1],
            factor[0.5] * factor[1],
        ]
    )
    expected = raw / raw.sum()
    assert np.allclose(elite_probabilities(elites()), expected)


def test_empirical_distribution_of_parents() -> None:
    rng = np.random.default_rng(0)
    p = elite_probabilities(elites())
    n = 20000
    first = [sample_parents(elites(), rng)[0].id for _ in range(n)]
    freq = np.array([first.count(x) for x in "abcd"]) / n
    assert np.allclose(freq, p, atol=0.015)
    # the two parents always differ when the archive has more than one elite
    pairs = [sample_parents(elites(), rng) for _ in range(200)]
    assert all(p1.id != p2.id for p1, p2 in pairs)


def test_random_sampler_is_uniform() -> None:
    rng = np.random.default_rng(1)
    first = [sample_parents(elites(), rng, kind="random")[0].id for _ in range(8000)]
    freq = np.array([first.count(x) for x in "abcd"]) / 8000
    assert np.allclose(freq, 0.25, atol=0.02)


def test_single_elite_is_both_parents_and_empty_raises() -> None:
    one = elites()[:1]
    p1, p2 = sample_parents(one, np.random.default_rng(0))
    assert p1 is p2
    with pytest.raises(ValueError):
        sample_parents([], np.random.default_rng(0))
