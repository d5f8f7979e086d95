"""How much do the experts' task vectors interfere, and does a decorrelated basis help?

Scores fixed merges in genome space on the demo's *validation* splits (never test): each expert's
own genome, ``lambda * (sum of the three experts' genomes)`` for a few ``lambda``, sums with one
scale per expert (``--scales 1,1,0.5``: code, os, db in the demo's order), the TIES merge of the
three (``search.final_merge: ties`` at a few densities) and any merged model directory given
with ``--models`` (its difference from the base as a dense genome, e.g. the demo's mergekit TIES
baseline, to compare it with the in-genome TIES on the same samples), the TIES merge scaled as a
whole (``--ties-lambdas 1.3``) and the TIES merge of the experts each scaled first
(``--ties-scales 1,1.5,1``: does the merge's interference trade one skill for another, or can
a scale lift all three?), once in the plain SVD basis
and once in the decorrelated TSV basis (``basis.kind: tsv``). Models are evaluated one at a time
(``--population on`` shares forward passes). This is what the ``cpu`` preset's basis and
operators were chosen on; it prints one JSON line with every score and each TSV expert's
relative error.

Usage::

    python benchmarks/interference_probe.py [--preset cpu] [--n-val N] [--lambdas 1.0 0.7 0.5]
        [--scales 1,1,0.5 ...] [--ties-densities 0.5] [--ties-lambdas 1.3 ...]
        [--ties-scales 1,1.5,1 ...] [--models DIR ...] [--no-experts] [--kinds svd tsv]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch


def per_expert(
    parser: argparse.ArgumentParser, option: str, text: str, experts: list[str]
) -> list[float]:
    """``1,1.5,1`` as one float per expert, or a usage error naming the option."""
    scales = [float(x) for x in text.split(",")]
    if len(scales) != len(experts):
        parser.error(f"{option} {text}: {len(experts)} values needed ({', '.join(experts)})")
    return scales


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--n-val", type=int, default=None)
    parser.add_argument("--lambdas", type=float, nargs="*", default=[1.0, 0.7, 0.5])
    parser.add_argument("--kinds", nargs="+", default=["svd", "tsv"])
    parser.add_argument("--ties-densities", type=float, nargs="*", default=[0.5])
    parser.add_argument("--scales", nargs="*", default=[], help="one scale per expert: 1,1,0.5")
    parser.add_argument("--ties-lambdas", type=float, nargs="*", default=[])
    parser.add_argument(
        "--ties-scales", nargs="*", default=[], help="one scale per expert before TIES: 1,1.5,1"
    )
    parser.add_argument("--models", type=Path, nargs="*", default=[])
    parser.add_argument("--no-experts", action="store_true", help="skip the experts alone")
    parser.add_argument("--population", choices=["auto", "on", "off"], default="off")
    parser.add_argument(
        "--experts-cache",
        type=Path,
        default=None,
        help="experts' root (default: the demo's); missing experts are trained there",
    )
    parser.add_argument(
        "--train-lr", type=float, default=None, help="learning rate of experts trained here"
    )
    parser.add_argument(
        "--anchor-weight",
        type=float,
        default=None,
        help="experts trained here are anchored to the base on the other skills' data",
    )
    parser.add_argument(
        "--train-epochs", type=int, default=None, help="epochs of experts trained here"
    )
    args = parser.parse_args()

    from demo_inputs import say, validation_config

    from cycleqd.merging.aggregate import ties_genome
    from cycleqd.merging.genome import Genome, combine, expert_genome
    from cycleqd.merging.sources import SafetensorsSource
    from cycleqd.search.executors.serial import GroupEvaluator
    from cycleqd.search.run import Session

    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="cqd-probe-") as tmp:
        for kind in args.kinds:
            config, preset = validation_config(
                Path(tmp),
                preset=args.preset,
                n_val=args.n_val,
                basis_kind=kind,
                experts_cache=args.experts_cache,
                train_lr=args.train_lr,
                anchor_weight=args.anchor_weight,
                train_epochs=args.train_epochs,
            )
            session = Session(config)
            basis = session.basis
            k = len(basis.experts)
            experts = [expert_genome(basis, e) for e in range(k)]
            names = [f"expert-{e}" for e in basis.experts]
            genomes = list(experts)
            for lam in args.lambdas:
                names.append(f"sum x {lam}")
                genomes.append(combine(experts, [lam] * k))
            for text in args.scales:
                names.append(f"sum x ({text})")
                genomes.append(
                    combine(experts, per_expert(parser, "--scales", text, basis.experts))
                )
            for density in args.ties_densities:
                names.append(f"ties {density}")
                genomes.append(ties_genome(basis, experts, density=density))
            if args.ties_lambdas:  # the merge is computed only when it is scaled
                ties = ties_genome(basis, experts, density=0.5)
                for lam in args.ties_lambdas:
                    names.append(f"ties 0.5 x {lam}")
                    scaled = {n: v * lam for n, v in ties.dense.items()}
                    genomes.append(replace(ties, dense=scaled))
            for text in args.ties_scales:
                scaled = [
                    combine([g], [x])
                    for g, x in zip(
                        experts,
                        per_expert(parser, "--ties-scales", text, basis.experts),
                        strict=True,
                    )
                ]
                names.append(f"ties 0.5 of experts x ({text})")
                genomes.append(ties_genome(basis, scaled, density=0.5))
            base = session.base
            zero = {n: torch.zeros_like(c) for n, c in experts[0].coeffs.items()}
            for model in args.models:
                merged = SafetensorsSource(model)
                dense = {n: merged.get(n).float() - base.get(n).float() for n in basis.names}
                names.append(f"model {model}")
                genomes.append(Genome(coeffs=dict(zero), dense=dense))
            if args.no_experts:
                names, genomes = names[k:], genomes[k:]
            evaluator = GroupEvaluator(
                session.materialiser, session.engine, session.tasks, mode=args.population
            )
            started = time.perf_counter()
            results = []
            groups = [genomes] if args.population == "on" else [[g] for g in genomes]
            for group in groups:
                results.extend(evaluator.evaluate(group))
                done = names[len(results) - len(group) : len(results)]
                for n, r in zip(done, results[-len(group) :], strict=True):
                    scores = {t: round(x.quality, 4) for t, x in r.items()}
                    say(f"{kind} {n}: {scores} ({time.perf_counter() - started:.0f}s)")
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
