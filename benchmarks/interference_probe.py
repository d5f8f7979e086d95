"""How much do the experts' task vectors interfere, and does a decorrelated basis help?

Scores fixed merges in genome space on the demo's *validation* splits (never test): each expert's
own genome, ``lambda * (sum of the three experts' genomes)`` for a few ``lambda`` and the TIES
merge of the three (``search.final_merge: ties`` at a few densities), once in the
plain SVD basis and once in the decorrelated TSV basis (``basis.kind: tsv``). Every group is
evaluated in shared forward passes. This is what the ``cpu`` preset's basis and operators were
chosen on; it prints one JSON line with every score and each TSV expert's relative error.

Usage::

    python benchmarks/interference_probe.py [--preset cpu] [--n-val N] [--lambdas 1.0 0.7 0.5]
        [--ties-densities 0.5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--n-val", type=int, default=None)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[1.0, 0.7, 0.5])
    parser.add_argument("--kinds", nargs="+", default=["svd", "tsv"])
    parser.add_argument("--ties-densities", type=float, nargs="*", default=[0.5])
    args = parser.parse_args()

    from demo_inputs import say, validation_config

    from cycleqd.merging.aggregate import ties_genome
    from cycleqd.merging.genome import combine, expert_genome
    from cycleqd.search.executors.serial import GroupEvaluator
    from cycleqd.search.run import Session

    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="cqd-probe-") as tmp:
        for kind in args.kinds:
            config, preset = validation_config(
                Path(tmp), preset=args.preset, n_val=args.n_val, basis_kind=kind
            )
            session = Session(config)
            basis = session.basis
            names = [f"expert-{e}" for e in basis.experts]
            genomes = [expert_genome(basis, e) for e in range(len(basis.experts))]
            for lam in args.lambdas:
                names.append(f"sum x {lam}")
                genomes.append(combine(genomes[: len(basis.experts)], [lam] * len(basis.experts)))
            for density in args.ties_densities:
                names.append(f"ties {density}")
                genomes.append(ties_genome(basis, genomes[: len(basis.experts)], density=density))
            started = time.perf_counter()
            results = GroupEvaluator(
                session.materialiser, session.engine, session.tasks, mode="on"
            ).evaluate(genomes)
            say(f"{kind}: {len(genomes)} models in {time.perf_counter() - started:.0f}s")
            out[kind] = {
                "fidelity": basis.fidelity,
                "scores": {
                    n: {t: round(r.quality, 4) for t, r in res.items()}
                    for n, res in zip(names, results, strict=True)
                },
            }
            for n, res in zip(names, results, strict=True):
                avg = sum(r.quality for r in res.values()) / len(res)
                out[kind]["scores"][n]["average"] = round(avg, 4)
            del session
    print(
        json.dumps(
            {
                "benchmark": "interference_probe",
                "preset": preset.name,
                "n_val": preset.n_val,
                "split": "validation",
                **out,
            }
        )
    )


if __name__ == "__main__":
    main()
