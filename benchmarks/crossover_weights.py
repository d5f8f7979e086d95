"""How much do per-layer crossover weights change a child? Measured on a finished run's genomes.

``search.crossover.per_layer`` draws the parents' weights ``w ~ N(mean, std)`` once per layer
instead of once for the model. This script crosses every pair of the run's stored genomes (the
experts and the archived elites) both ways from the same random stream and reports how far the
per-layer child lies from the model-wise one (``||c_layer - c_model|| / ||c_model||`` over all
coefficients) for each ``std``, next to the size of one SVD mutation step (``||u * s|| / ||c||``
on the active expert's slice, with the run's ``w_max`` and sign): a move much smaller than a
mutation step cannot change what the search finds. It builds the run's basis (one SVD per expert
and tensor) and evaluates nothing: about a minute for SmolLM2-135M on 2 CPU cores.

Usage::

    python benchmarks/crossover_weights.py RUN_DIR [--stds 0.01 0.1 0.3] [--kind per_expert]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

import torch

from cycleqd.merging.basis import ExpertBasis


def slice_mask(basis: ExpertBasis, expert: int, names: list[str]) -> torch.Tensor:
    """1 on expert ``expert``'s coefficients of every matrix (what SVD mutation moves), else 0."""
    parts = []
    for name in names:
        matrix = basis.matrices.get(name)
        if matrix is None:  # 1-D tensors: one scalar per expert, never mutated
            parts.append(torch.zeros(len(basis.experts)))
            continue
        part = torch.zeros(matrix.rank)
        part[matrix.slice(expert)] = 1.0
        parts.append(part)
    return torch.cat(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory (config.yaml, individuals/)")
    parser.add_argument("--stds", type=float, nargs="+", default=[0.01, 0.1, 0.3])
    parser.add_argument("--kind", choices=["linear", "per_expert"], default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from cycleqd.config import load_config
    from cycleqd.merging.crossover import crossover
    from cycleqd.merging.genome import Genome
    from cycleqd.merging.mutation import svd_mutation
    from cycleqd.search.session import Session

    config_path = args.run / "config.yaml"
    if not config_path.is_file():
        parser.error(f"{config_path}: no run config there")
    config = load_config(config_path)
    kind = args.kind or config.search.crossover.kind
    mean, mutation = config.search.crossover.params.mean, config.search.mutation.params
    session = Session(config, engine=False)
    basis = session.basis
    stored = sorted((args.run / "individuals").glob("*.safetensors"))
    genomes = {p.stem: Genome.load(p) for p in stored if p.stem != "final"}
    if len(genomes) < 2:
        parser.error(f"{args.run}/individuals: fewer than two genomes to cross")

    def flat(g: Genome) -> torch.Tensor:
        return torch.cat([g.coeffs[n].flatten() for n in sorted(g.coeffs)])

    out: dict[str, object] = {"benchmark": "crossover_weights", "run": str(args.run)}
    out["kind"], out["genomes"] = kind, sorted(genomes)
    rows = {}
    for std in args.stds:
        moved, steps = [], []
        for i, (a, b) in enumerate(itertools.combinations(sorted(genomes), 2)):
            crossed = {}
            for per_layer in (False, True):
                rng = torch.Generator().manual_seed(args.seed * 100_003 + i)
                child, _ = crossover(
                    genomes[a], genomes[b], rng, mean=mean, std=std, per_layer=per_layer,
                    kind=kind, basis=basis,
                )  # fmt: skip
                crossed[per_layer] = child, rng
            child, rng = crossed[False]  # rng as crossover left it: mutation draws next
            model, layer = flat(child), flat(crossed[True][0])
            if float(model.norm()) > 0:
                moved.append(float((layer - model).norm() / model.norm()))
            # one SVD mutation step of the model-wise child, for scale
            expert = i % len(basis.experts)
            mutated = svd_mutation(
                child, basis, expert, rng, w_max=mutation.w_max, signed=mutation.signed
            )
            mask = slice_mask(basis, expert, sorted(child.coeffs))
            c = model * mask
            if float(c.norm()) > 0:
                steps.append(float(((flat(mutated) - model) * mask).norm() / c.norm()))
        rows[str(std)] = {
            "pairs": len(moved),
            "per_layer_moves_child_rel_median": round(statistics.median(moved), 5),
            "per_layer_moves_child_rel_max": round(max(moved), 5),
            "mutation_step_rel_median": round(statistics.median(steps), 5) if steps else None,
        }
    out["by_std"] = rows
    print(json.dumps(out))


if __name__ == "__main__":
    main()
