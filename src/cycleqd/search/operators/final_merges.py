"""Final merges of each archive's best elite: ``softmax`` (the paper's), ``ties``, ``assemble``.

See :mod:`cycleqd.merging.aggregate` for what each computes and why.
"""

from __future__ import annotations

from pydantic import Field

from cycleqd.merging.aggregate import assemble_genome, final_genome, softmax_weights, ties_genome
from cycleqd.merging.genome import Genome
from cycleqd.schema import StrictModel
from cycleqd.search.archive import Elite
from cycleqd.search.operators.base import FINAL_MERGES, Finishing, NoParams, operator


class SoftmaxParams(StrictModel):
    temperature: float = Field(
        default=1.0, gt=0.0, description="softmax temperature over the elites' qualities"
    )


class TiesParams(StrictModel):
    density: float = Field(
        default=0.5, gt=0.0, le=1.0, description="share of each task vector TIES keeps"
    )


@operator(FINAL_MERGES, "softmax", SoftmaxParams)
def softmax(
    bests: list[Elite], params: SoftmaxParams, ctx: Finishing
) -> tuple[Genome, list[float] | None]:
    """``theta_base + sum_k beta_k tau_k``, ``beta = softmax(quality / temperature)``."""
    qualities = [b.quality for b in bests]
    genome = final_genome([ctx.load(b.id) for b in bests], qualities, params.temperature)
    return genome, softmax_weights(qualities, params.temperature)


@operator(FINAL_MERGES, "ties", TiesParams)
def ties(
    bests: list[Elite], params: TiesParams, ctx: Finishing
) -> tuple[Genome, list[float] | None]:
    """mergekit's TIES over the distinct best elites' task vectors (each votes once)."""
    distinct = sorted({b.id for b in bests})
    genome = ties_genome(
        ctx.basis,
        [ctx.load(i) for i in distinct],
        density=params.density,
        combine=ctx.combine,
        combine_density=ctx.combine_density,
    )
    return genome, None


@operator(FINAL_MERGES, "assemble", NoParams)
def assemble(
    bests: list[Elite], params: NoParams, ctx: Finishing
) -> tuple[Genome, list[float] | None]:
    """Each expert's slice, in full, from the best elite of its task's archive."""
    loaded = {i: ctx.load(i) for i in {b.id for b in bests}}
    genome = assemble_genome(ctx.basis, [loaded[b.id] for b in bests], list(ctx.task_experts))
    return genome, None
