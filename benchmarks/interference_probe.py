"""How much do the experts' task vectors interfere, and does a decorrelated basis help?

Scores fixed merges in genome space on the demo's *validation* splits (never test): each expert's
own genome, ``lambda * (sum of the three experts' genomes)`` for a few ``lambda``, sums with one
scale per expert (``--scales 1,1,0.5``: code, os, db in the demo's order), the TIES merge of the
three (``search.final_merge: ties`` at a few densities) and any merged model directory given
with ``--models`` (its difference from the base as a dense genome, e.g. the demo's mergekit TIES
baseline, to compare it with the in-genome TIES on the same samples), the TIES merge scaled as a
whole (``--ties-lambdas 1.3``) and the TIES merge of the experts each scaled first
(``--ties-scales 1,1.5,1``: does the merge's interference trade one skill for another, or can
a scale lift all three?), RegMean (Jin et al., ICLR 2023: per linear layer the weights that
best reproduce every expert's outputs on its own inputs, ``--regmean 0.9`` for the share of the
input Gram's off-diagonal kept; the Grams are each expert's mean over its own validation
conversations, the ones it produced when scored here), once in the plain SVD basis
and once in the decorrelated TSV basis (``basis.kind: tsv``). Models are evaluated one at a time
(``--population on`` shares forward passes). This is what the ``cpu`` preset's basis and
operators were chosen on; it prints one JSON line with every score and each TSV expert's
relative error.

Usage::

    python benchmarks/interference_probe.py [--preset cpu] [--n-val N] [--lambdas 1.0 0.7 0.5]
        [--scales 1,1,0.5 ...] [--ties-densities 0.5] [--ties-lambdas 1.3 ...]
        [--ties-scales 1,1.5,1 ...] [--regmean 0.9 ...] [--models DIR ...] [--no-experts]
        [--kinds svd tsv]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from demo_inputs import say


def per_expert(
    parser: argparse.ArgumentParser, option: str, text: str, experts: list[str]
) -> list[float]:
    """``1,1.5,1`` as one float per expert, or a usage error naming the option."""
    scales = [float(x) for x in text.split(",")]
    if len(scales) != len(experts):
        parser.error(f"{option} {text}: {len(experts)} values needed ({', '.join(experts)})")
    return scales


def conversations(records: list[dict]) -> list[list[dict[str, str]]]:
    """The chats of a task's records: agent transcripts as they are, a code answer as one turn."""
    chats = []
    for r in records:
        if "messages" in r:
            chats.append(r["messages"])
        else:
            turns = [("user", r["prompt"]), ("assistant", r["output"])]
            chats.append([{"role": role, "content": text} for role, text in turns])
    return chats


def input_grams(model_dir: Path, chats: list[list[dict[str, str]]]) -> dict[str, torch.Tensor]:
    """Mean ``x x^T`` of the inputs of every linear layer in the blocks (one token, one row)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sums: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {}

    def record(name: str) -> Any:
        def hook(_module, inputs, _output) -> None:
            x = inputs[0].reshape(-1, inputs[0].shape[-1])
            sums[name] = sums.get(name, 0) + x.T @ x
            rows[name] = rows.get(name, 0) + x.shape[0]

        return hook

    hooks = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".layers." in name
    ]
    with torch.no_grad():
        for chat in chats:
            ids = tokenizer.apply_chat_template(chat, return_tensors="pt", return_dict=True)
            model(input_ids=ids["input_ids"])
    for h in hooks:
        h.remove()
    return {f"{name}.weight": sums[name] / rows[name] for name in sums}


def regmean_genome(
    basis: Any,
    base: Any,
    experts: list[Any],  # the experts' weight sources, in the basis's order
    grams: list[dict[str, torch.Tensor]],
    alpha: float,
    zero: dict[str, torch.Tensor],
) -> Any:
    """RegMean of the experts as a dense genome: ``(sum_e dW_e G_e)(sum_e G_e)^-1`` per linear
    layer (``G_e`` with its off-diagonal scaled by ``alpha``), the task vectors' sum elsewhere."""
    from cycleqd.merging.genome import Genome

    dense = {}
    for name in basis.names:
        deltas = [e.get(name).double() - base.get(name).double() for e in experts]
        if name not in grams[0]:
            dense[name] = sum(deltas).float()
            continue
        gs = []
        for g in (x[name].double() for x in grams):
            diagonal = torch.diag(torch.diag(g))
            gs.append(alpha * g + (1 - alpha) * diagonal)
        weighted = sum(d @ g for d, g in zip(deltas, gs, strict=True))
        dense[name] = torch.linalg.solve(sum(gs), weighted.T).T.float()  # the Grams are symmetric
    return Genome(coeffs=dict(zero), dense=dense)


def score(
    evaluator: Any,
    models: list[Any],
    names: list[str],
    results: list[Any],
    population: str,
    label: str,
    t0: float,
) -> None:
    """Evaluate ``models`` (named by the next entries of ``names``) into ``results``; log each."""
    groups = [models] if population == "on" else [[g] for g in models]
    for group in groups:
        results.extend(evaluator.evaluate(group))
        done = names[len(results) - len(group) : len(results)]
        for n, r in zip(done, results[-len(group) :], strict=True):
            scores = {t: round(x.quality, 4) for t, x in r.items()}
            say(f"{label}{n}: {scores} ({time.perf_counter() - t0:.0f}s)")


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
    parser.add_argument(
        "--regmean", type=float, nargs="*", default=[], help="RegMean off-diagonal shares: 0.9"
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
    if args.regmean and args.no_experts:
        parser.error("--regmean needs the experts scored (their conversations give the Grams)")

    from demo_inputs import validation_config

    from cycleqd.merging.aggregate import ties_genome
    from cycleqd.merging.genome import Genome, combine, expert_genome
    from cycleqd.merging.sources import SafetensorsSource
    from cycleqd.search.executors.serial import GroupEvaluator
    from cycleqd.search.session import Session

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
            results: list = []
            label = f"{kind} "
            score(evaluator, genomes, names, results, args.population, label, started)
            if args.regmean:  # after the experts: their own conversations give the Grams
                paths = {e.name: Path(e.path) for e in config.experts}
                grams = []
                served = dict(zip(session.task_experts, session.tasks, strict=True))
                for e, name in enumerate(basis.experts):
                    if e not in served:
                        parser.error(f"--regmean: expert {name} serves no task")
                    task = served[e].name  # the expert's own task: its conversations there
                    chats = conversations(results[e][task].records)
                    grams.append(input_grams(paths[name], chats))
                    say(f"{kind} grams of expert {name}: {len(chats)} {task} conversations")
                extra = []
                for alpha in args.regmean:
                    names.append(f"regmean {alpha}")
                    extra.append(
                        regmean_genome(
                            basis,
                            base,
                            [session.experts[n] for n in basis.experts],  # their loaded files
                            grams,
                            alpha,
                            zero,
                        )
                    )
                genomes.extend(extra)
                score(evaluator, extra, names, results, args.population, label, started)
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
