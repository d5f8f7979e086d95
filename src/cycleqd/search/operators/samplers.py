"""Parent samplers: ``elite`` (the paper's elite sampling) and ``random`` (its ablation)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from cycleqd.schema import StrictModel
from cycleqd.search.archive import Elite
from cycleqd.search.operators.base import SAMPLERS, NoParams, operator
from cycleqd.search.sampling import sample_parents


class EliteParams(StrictModel):
    """``prod_j (alpha_low + norm(f_j) * (alpha_high - alpha_low))`` over quality and BCs."""

    alpha_low: float = Field(default=0.5, ge=0.0, description="factor of the lowest score")
    alpha_high: float = Field(default=0.8, ge=0.0, description="factor of the highest score")


@operator(SAMPLERS, "elite", EliteParams)
def elite(
    elites: list[Elite], rng: np.random.Generator, params: EliteParams
) -> tuple[Elite, Elite]:
    """The paper's elite sampling: elites good on every task are drawn more often."""
    return sample_parents(
        elites, rng, kind="elite", alpha_low=params.alpha_low, alpha_high=params.alpha_high
    )


@operator(SAMPLERS, "random", NoParams)
def uniform(elites: list[Elite], rng: np.random.Generator, params: NoParams) -> tuple[Elite, Elite]:
    """The paper's ablation: two distinct elites, uniformly."""
    return sample_parents(elites, rng, kind="random")
