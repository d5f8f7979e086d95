"""Intervals and paired tests against hand computations."""

from __future__ import annotations

import math

import pytest

from cycleqd.report.stats import bootstrap_average, mcnemar_exact, paired_comparison, wilson


def test_wilson_matches_the_formula_and_stays_in_range() -> None:
    # 7 of 24: p = 0.2917; hand: centre (p + z^2/2n) / (1 + z^2/n), half width as below
    z, n, p = 1.959963984540054, 24, 7 / 24
    centre = (p + z * z / 48) / (1 + z * z / 24)
    half = z * math.sqrt(p * (1 - p) / 24 + z * z / (4 * 24 * 24)) / (1 + z * z / 24)
    low, high = wilson(7, n)
    assert low == pytest.approx(centre - half) and high == pytest.approx(centre + half)
    assert low == pytest.approx(0.1491, abs=1e-4) and high == pytest.approx(0.4917, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert wilson(0, 10)[1] > 0.2  # zero successes of ten is no proof of a zero rate
    assert wilson(3, 0) == (0.0, 1.0)


def test_mcnemar_exact_by_hand() -> None:
    # b=1, c=6: 2 * P(X <= 1), X ~ Bin(7, 0.5) = 2 * (1 + 7) / 128
    assert mcnemar_exact(1, 6) == pytest.approx(16 / 128)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    per_task = {"a": [1, 0, 1, 1, 0, 1], "b": [0, 0, 1, 0]}
    one = bootstrap_average(per_task, seed=3)
    assert one == bootstrap_average(per_task, seed=3)
    mean = (4 / 6 + 1 / 4) / 2
    assert one[0] < mean < one[1]
    assert bootstrap_average({"a": [1, 1, 1]}) == (1.0, 1.0)


def test_paired_comparison_counts_discordant_samples() -> None:
    a = {"t": {"s1": 1.0, "s2": 1.0, "s3": 0.0, "s4": 1.0}, "u": {"x": 1.0, "y": 0.0}}
    b = {"t": {"s1": 0.0, "s2": 1.0, "s3": 0.0, "s4": 0.0, "s5": 1.0}, "u": {"x": 0.0, "y": 1.0}}
    out = paired_comparison(a, b, seed=0)
    assert out["per_task"] == {"t": 0.5, "u": 0.0}
    assert out["difference"] == 0.25
    assert (out["only_a_passed"], out["only_b_passed"]) == (3, 1)
    assert out["mcnemar_p"] == pytest.approx(mcnemar_exact(3, 1))
    assert out["unpaired_samples"] == 1
    low, high = out["interval"]
    assert low <= 0.25 <= high
