"""Cost of creating one evaluation-ready CycleQD child: genome path vs the dense checkpoint path.

Every CycleQD generation turns two archived parents into a child whose weights sit in the resident
inference model, ready to be evaluated. This script measures that step two ways on the same random
Llama with SmolLM2-135M's shape (about 135M float32 parameters, tied embeddings), built locally:

genome path (this package)
    ``sample`` two parents from a :class:`~cycleqd.search.archive.TaskArchive` with elite sampling,
    ``load_parents`` (their genomes, from a run directory, as the loop does), ``crossover`` and
    ``mutate`` (SVD mutation) in coefficient space, ``save`` the child genome (fsynced), and
    ``materialise`` it into the resident model (``theta = base + sum_e U_e diag(c_e) V_e^T``).

dense path (the official CycleQD code's straightforward approach)
    ``sample`` the same way, ``load_parents`` (two full safetensors checkpoints), ``crossover``
    ``child = base + (w1 tau1 + w2 tau2) / (w1 + w2)`` in float32, ``mutate`` by adding
    ``U diag(u s) V^T`` of the active expert's task vector to every 2-D tensor (the expert's SVD is
    precomputed and not timed: it is taken from the basis build, truncated to the rank that holds
    all non-negligible singular values, which favours the dense path), ``save`` the child checkpoint
    (``save_file``, no fsync; the fsync cost is reported apart as ``save_fsync_extra``) and
    ``materialise`` it (``load_file`` + ``load_state_dict`` into the resident model).

Both paths draw from the same per-generation random streams, so they build the same child; the
first (untimed) repetition checks that the two resident models agree.

Two expert kinds: ``full`` (base + dense Gaussian noise on every tensor: full-rank task vectors,
the genome path's worst case) and ``lora`` (base + rank-16 ``B @ A`` on every 2-D tensor, small
dense noise on 1-D tensors: the package's default expert kind). Basis building (one SVD per expert
and tensor) is a one-off cost per run and is reported apart. For the full-rank case the script
also splits the genome path's materialise time into its parts (scaling ``U * c``, the product,
adding the base, the copy into the model) and sweeps basis truncation by kept energy
(``build_basis(energy=...)``), reporting materialise time and an expert's relative reconstruction
error, plus two implementation variants the package could adopt (a fused ``addmm`` straight into
the parameter, and bfloat16 products).

Files are written to a temporary folder and read back while still in the page cache, which is the
dense path's best case. Output: one JSON line on stdout; progress goes to stderr.

Usage::

    python benchmarks/child_creation.py [--reps 5] [--layers 30] [--children 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from cycleqd.merging.basis import ExpertBasis, build_basis
from cycleqd.merging.crossover import crossover
from cycleqd.merging.genome import Genome, expert_genome, task_vector
from cycleqd.merging.materialise import Materialiser, resolve_tensor
from cycleqd.merging.mutation import svd_mutation
from cycleqd.merging.sources import SafetensorsSource
from cycleqd.search.archive import TaskArchive
from cycleqd.search.loop import generation_rngs
from cycleqd.search.sampling import sample_parents
from cycleqd.search.store import RunStore

TASKS = ("code", "os", "db")
W_MAX = 0.1
CROSSOVER_MEAN, CROSSOVER_STD = 1.0, 0.01
LORA_RANK = 16
RELATIVE_SCALE = 1e-3  # ||tau|| / ||theta|| per tensor, about what a fine-tune moves
STARTED = time.perf_counter()

StateDict = dict[str, torch.Tensor]


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


class Laps:
    """Consecutive step timings: ``lap(step)`` records the time since the previous lap."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.times[step] = self.times.get(step, 0.0) + now - self._last
        self._last = now


def medians(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-key medians; ``total`` is the median of per-run totals, not a sum of medians."""
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["total"] = statistics.median(sum(r.values()) for r in runs)
    return {k: round(v, 4) for k, v in out.items()}


def median_seconds(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 4)


# -- models and experts ------------------------------------------------------------------------


def smollm2_config(layers: int) -> LlamaConfig:
    """SmolLM2-135M's shape (hub-free): 576 wide, 30 layers, GQA 9/3, 49152 tokens, tied."""
    return LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
    )


def checkpoint_state(model: nn.Module) -> StateDict:
    """The model's tensors as a checkpoint stores them: tied tensors once, contiguous copies."""
    seen: set[int] = set()
    out: StateDict = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        out[name] = tensor.detach().clone().contiguous()
    return out


def write_checkpoint(state: StateDict, folder: Path, config: LlamaConfig) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    config.to_json_file(str(folder / "config.json"))
    return folder / "model.safetensors"


def expert_state(base: StateDict, kind: str, gen: torch.Generator) -> StateDict:
    """``base + tau``: dense noise (``full``) or rank-16 ``B @ A`` per 2-D tensor (``lora``)."""
    out: StateDict = {}
    for name, theta in base.items():
        if kind == "lora" and theta.dim() >= 2:
            b = torch.randn(theta.shape[0], LORA_RANK, generator=gen)
            a = torch.randn(LORA_RANK, theta[0].numel(), generator=gen)
            tau = (b @ a).reshape(theta.shape)
        else:
            tau = torch.randn(theta.shape, generator=gen)
        tau *= RELATIVE_SCALE * theta.norm() / tau.norm()
        out[name] = theta + tau
    return out


# -- the case: base, experts, basis, archives, population ---------------------------------------


@dataclass
class Case:
    kind: str
    root: Path
    config: LlamaConfig
    base: StateDict
    base_src: SafetensorsSource
    expert_srcs: dict[str, SafetensorsSource]
    basis: ExpertBasis
    build_seconds: float
    checkpoint_bytes: int


def make_case(kind: str, root: Path, model: nn.Module, config: LlamaConfig, seed: int) -> Case:
    base = checkpoint_state(model)
    base_file = write_checkpoint(base, root / "base", config)
    gen = torch.Generator().manual_seed(seed + 1)
    for name in TASKS:
        state = expert_state(base, kind, gen)
        write_checkpoint(state, root / f"expert-{name}", config)
        del state
    base_src = SafetensorsSource(root / "base")
    expert_srcs = {name: SafetensorsSource(root / f"expert-{name}") for name in TASKS}
    log(f"{kind}: experts written; building the basis")
    start = time.perf_counter()
    basis = build_basis(base_src, expert_srcs)
    build_seconds = time.perf_counter() - start
    log(f"{kind}: basis built in {build_seconds:.1f}s, rank {rank_total(basis)}")
    return Case(
        kind=kind,
        root=root,
        config=config,
        base=base,
        base_src=base_src,
        expert_srcs=expert_srcs,
        basis=basis,
        build_seconds=build_seconds,
        checkpoint_bytes=base_file.stat().st_size,
    )


def rank_total(basis: ExpertBasis) -> int:
    return sum(m.rank for m in basis.matrices.values())


@dataclass
class Population:
    store: RunStore
    archives: list[TaskArchive]
    dense_paths: dict[str, Path]


def seed_population(case: Case, materialiser: Materialiser, children: int, seed: int) -> Population:
    """Archives seeded with the experts plus a few children bred in genome space.

    Scores are synthetic (each expert strong on its own task); every individual is stored as a
    genome in a run directory (genome path) and as a full checkpoint (dense path).
    """
    store = RunStore(case.root / "run")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed + 2)
    scores: dict[str, dict[str, float]] = {}
    dense_paths: dict[str, Path] = {}
    genomes: dict[str, Genome] = {}
    for e, name in enumerate(TASKS):
        ident = f"expert-{name}"
        genomes[ident] = expert_genome(case.basis, e)
        dense_paths[ident] = case.root / ident / "model.safetensors"
        scores[ident] = {
            t: (0.6 if t == name else 0.2) + float(rng.uniform(0, 0.05)) for t in TASKS
        }
    for i in range(children):
        ids = list(genomes)
        a, b = rng.choice(len(ids), size=2, replace=False)
        child, _ = crossover(genomes[ids[int(a)]], genomes[ids[int(b)]], gen)
        child = svd_mutation(child, case.basis, i % len(TASKS), gen, w_max=W_MAX)
        ident = f"seed{i:03d}"
        genomes[ident] = child
        dense_paths[ident] = case.root / "dense" / f"{ident}.safetensors"
        dense_paths[ident].parent.mkdir(parents=True, exist_ok=True)
        save_file(materialiser.weights(child), str(dense_paths[ident]))
        scores[ident] = {t: float(rng.uniform(0.15, 0.65)) for t in TASKS}
    for ident, genome in genomes.items():
        store.save_individual(ident, genome)
    archives = []
    for task in TASKS:
        bc_tasks = [t for t in TASKS if t != task]
        archive = TaskArchive(task=task, bc_tasks=bc_tasks, ranges=[(0.0, 1.0)] * 2, bins=[15, 15])
        for ident, s in scores.items():
            archive.add(ident, s)
        archives.append(archive)
    return Population(store=store, archives=archives, dense_paths=dense_paths)


# -- one child, two ways ------------------------------------------------------------------------


def genome_child(
    case: Case, pop: Population, materialiser: Materialiser, generation: int, seed: int
) -> dict[str, float]:
    q = generation % len(TASKS)
    sampling_rng, operator_rng = generation_rngs(seed, generation)
    laps = Laps()
    p1, p2 = sample_parents(pop.archives[q].elites(), sampling_rng, kind="elite")
    laps.lap("sample")
    g1, g2 = pop.store.load_individual(p1.id), pop.store.load_individual(p2.id)
    laps.lap("load_parents")
    child, _ = crossover(g1, g2, operator_rng, mean=CROSSOVER_MEAN, std=CROSSOVER_STD)
    laps.lap("crossover")
    child = svd_mutation(child, case.basis, q, operator_rng, w_max=W_MAX)
    laps.lap("mutate")
    child_id = f"bench{generation:06d}"
    pop.store.save_individual(child_id, child)
    laps.lap("save")
    materialiser.load(child)
    laps.lap("materialise")
    return laps.times


def dense_child(
    case: Case,
    pop: Population,
    model: nn.Module,
    generation: int,
    seed: int,
    fsync_times: list[float],
) -> dict[str, float]:
    """The official code's way, on full float32 state dicts, with the expert SVD precomputed."""
    q = generation % len(TASKS)
    sampling_rng, operator_rng = generation_rngs(seed, generation)
    basis = case.basis
    laps = Laps()
    p1, p2 = sample_parents(pop.archives[q].elites(), sampling_rng, kind="elite")
    laps.lap("sample")
    theta1 = load_file(str(pop.dense_paths[p1.id]))
    theta2 = load_file(str(pop.dense_paths[p2.id]))
    laps.lap("load_parents")
    w = torch.normal(CROSSOVER_MEAN, CROSSOVER_STD, size=(2,), generator=operator_rng)
    w1, w2 = float(w[0]), float(w[1])
    child: StateDict = {}
    for name, theta0 in case.base.items():
        tau1 = theta1[name] - theta0
        tau2 = theta2[name] - theta0
        child[name] = theta0 + (w1 * tau1 + w2 * tau2) / (w1 + w2)
    del theta1, theta2
    laps.lap("crossover")
    for name in sorted(basis.matrices):
        m = basis.matrices[name]
        sl = m.slice(q)
        u_e, s_e, vh_e = m.U[:, sl], m.S[sl], m.Vh[sl]  # the cached SVD of the active expert
        u = torch.rand(s_e.numel(), generator=operator_rng) * W_MAX
        child[name] += ((u_e * (u * s_e)) @ vh_e).reshape(child[name].shape)
    laps.lap("mutate")
    path = case.root / "dense-children" / f"bench{generation:06d}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(child, str(path))
    laps.lap("save")
    del child
    loaded = load_file(str(path))
    result = model.load_state_dict(loaded, strict=False)
    laps.lap("materialise")
    if result.unexpected_keys or any(k != "lm_head.weight" for k in result.missing_keys):
        raise RuntimeError(f"checkpoint does not fit the model: {result}")
    start = time.perf_counter()
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())
    fsync_times.append(time.perf_counter() - start)
    path.unlink()
    return laps.times


def snapshot(model: nn.Module) -> StateDict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_rel_diff(model: nn.Module, reference: StateDict, base: StateDict) -> float:
    """Largest per-tensor ``||w - ref|| / ||ref - base||`` (relative to the task vector)."""
    worst = 0.0
    for name, w in model.state_dict().items():
        if name not in base:
            continue
        tau = (reference[name] - base[name]).norm()
        worst = max(worst, float((w - reference[name]).norm() / tau))
    return worst


def compare_paths(
    case: Case, pop: Population, model: nn.Module, materialiser: Materialiser, reps: int, seed: int
) -> dict[str, object]:
    """Warm-up (untimed, also checks both paths build the same child), then interleaved reps."""
    log(f"{case.kind}: warm-up and equivalence check")
    fsync_times: list[float] = []
    genome_child(case, pop, materialiser, 0, seed)
    reference = snapshot(model)
    dense_child(case, pop, model, 0, seed, fsync_times)
    agreement = max_rel_diff(model, reference, case.base)
    del reference
    genome_runs, dense_runs = [], []
    for rep in range(1, reps + 1):
        genome_runs.append(genome_child(case, pop, materialiser, rep, seed))
        dense_runs.append(dense_child(case, pop, model, rep, seed, fsync_times))
        log(
            f"{case.kind}: rep {rep}/{reps} genome {sum(genome_runs[-1].values()):.3f}s "
            f"dense {sum(dense_runs[-1].values()):.3f}s"
        )
    genome_file = pop.store.individual_path(f"bench{reps:06d}")
    genome_bytes = genome_file.stat().st_size
    dense = medians(dense_runs)
    dense["save_fsync_extra"] = round(statistics.median(fsync_times[1:] or fsync_times), 4)
    return {
        "genome": medians(genome_runs),
        "dense": dense,
        "speedup": round(medians(dense_runs)["total"] / medians(genome_runs)["total"], 3),
        "genome_bytes": genome_bytes,
        "checkpoint_bytes": case.checkpoint_bytes,
        "bytes_ratio": genome_bytes / case.checkpoint_bytes,
        "paths_agree_rel_err": agreement,
        "elites_per_archive": [len(a.elites()) for a in pop.archives],
    }


# -- where the genome path's materialise time goes (full-rank case) -------------------------------


@torch.no_grad()
def profile_materialise(
    basis: ExpertBasis, base: StateDict, targets: StateDict, genome: Genome
) -> dict[str, float]:
    """The package's materialise loop (``task_vector`` + copy), with each operation timed."""
    t = dict.fromkeys(("scale_U", "matmul", "add_base", "copy", "vectors"), 0.0)
    for name in basis.names:
        start = time.perf_counter()
        if name in basis.matrices:
            m = basis.matrices[name]
            scaled = m.U * genome.coeffs[name]
            t1 = time.perf_counter()
            delta = (scaled @ m.Vh).reshape(m.shape)
            t2 = time.perf_counter()
            theta = base[name] + delta
            t3 = time.perf_counter()
            t["scale_U"] += t1 - start
            t["matmul"] += t2 - t1
            t["add_base"] += t3 - t2
        else:
            theta = base[name] + task_vector(basis, genome, name)
            t3 = time.perf_counter()
            t["vectors"] += t3 - start
        targets[name].data.copy_(theta)
        t["copy"] += time.perf_counter() - t3
    return {k: round(v, 4) for k, v in t.items()}


@torch.no_grad()
def fused_load(basis: ExpertBasis, base: StateDict, targets: StateDict, genome: Genome) -> None:
    """A suggested materialise: scale the smaller factor and ``addmm`` into the parameter."""
    for name in basis.names:
        target = targets[name].data
        if name in basis.matrices:
            m = basis.matrices[name]
            c = genome.coeffs[name]
            out = target.view(target.shape[0], -1)
            theta0 = base[name].view(out.shape)
            if m.U.shape[0] >= m.Vh.shape[1]:
                torch.addmm(theta0, m.U, c[:, None] * m.Vh, out=out)
            else:
                torch.addmm(theta0, m.U * c, m.Vh, out=out)
        else:
            v = basis.vectors[name]
            torch.add(base[name], (genome.coeffs[name] @ v.taus).view(target.shape), out=target)
        if name in genome.dense:
            target.add_(genome.dense[name])


@torch.no_grad()
def bf16_loader(
    basis: ExpertBasis, base: StateDict, targets: StateDict
) -> Callable[[Genome], None]:
    """A suggested materialise with bfloat16 factors and products (float32 base and sum)."""
    factors = {
        name: (m.U.to(torch.bfloat16), m.Vh.to(torch.bfloat16))
        for name, m in basis.matrices.items()
    }

    @torch.no_grad()
    def load(genome: Genome) -> None:
        for name in basis.names:
            target = targets[name].data
            if name in factors:
                u, vh = factors[name]
                c = genome.coeffs[name].to(torch.bfloat16)
                delta = u @ (c[:, None] * vh) if u.shape[0] >= vh.shape[1] else (u * c) @ vh
                torch.add(base[name], delta.view(target.shape), out=target)
            else:
                v = basis.vectors[name]
                torch.add(base[name], (genome.coeffs[name] @ v.taus).view(target.shape), out=target)

    return load


def restrict_genome(genome: Genome, full: ExpertBasis, truncated: ExpertBasis) -> Genome:
    """The genome's coefficients on the singular directions a truncated basis keeps."""
    coeffs = dict(genome.coeffs)
    for name, m in truncated.matrices.items():
        f = full.matrices[name]
        c = genome.coeffs[name]
        parts = [
            c[f.offsets[e] : f.offsets[e] + m.offsets[e + 1] - m.offsets[e]]
            for e in range(len(truncated.experts))
        ]
        coeffs[name] = torch.cat(parts)
    return Genome(coeffs=coeffs, dense=dict(genome.dense))


@torch.no_grad()
def expert_rel_error(case: Case, basis: ExpertBasis, expert: int) -> float:
    """``||tau_hat - tau|| / ||tau||`` over the whole model for one expert's own genome."""
    genome = expert_genome(basis, expert)
    src = case.expert_srcs[TASKS[expert]]
    num = den = 0.0
    for name in basis.names:
        tau = src.get(name).float() - case.base[name]
        num += float((task_vector(basis, genome, name) - tau).square().sum())
        den += float(tau.square().sum())
    return math.sqrt(num / den)


def rel_change(model: nn.Module, reference: StateDict, base: StateDict) -> float:
    """Whole-model ``||w - ref|| / ||ref - base||``."""
    num = den = 0.0
    for name, w in model.state_dict().items():
        if name in base:
            num += float((w - reference[name]).square().sum())
            den += float((reference[name] - base[name]).square().sum())
    return math.sqrt(num / den)


def energy_sweep(
    case: Case, model: nn.Module, materialiser: Materialiser, pop: Population, reps: int, seed: int
) -> dict[str, object]:
    """Materialise cost and fidelity against truncating the bases by kept energy."""
    targets = {name: resolve_tensor(model, name) for name in case.basis.names}
    sampling_rng, operator_rng = generation_rngs(seed, 10_000)
    p1, p2 = sample_parents(pop.archives[0].elites(), sampling_rng, kind="elite")
    child, _ = crossover(
        pop.store.load_individual(p1.id), pop.store.load_individual(p2.id), operator_rng
    )
    child = svd_mutation(child, case.basis, 0, operator_rng, w_max=W_MAX)
    materialiser.load(child)
    full_child = snapshot(model)
    out: dict[str, object] = {}
    for energy in (1.0, 0.99, 0.9):
        log(f"full: energy {energy}")
        row: dict[str, object] = {}
        if energy == 1.0:
            basis, mat, genome = case.basis, materialiser, child
        else:
            start = time.perf_counter()
            basis = build_basis(case.base_src, case.expert_srcs, energy=energy)
            row["basis_build_seconds"] = round(time.perf_counter() - start, 2)
            mat = Materialiser(basis, case.base_src, model, torch.device("cpu"))
            genome = restrict_genome(child, case.basis, basis)
        row["rank_total"] = rank_total(basis)
        row["basis_bytes"] = basis.nbytes()
        row["materialise"] = median_seconds(lambda m=mat, g=genome: m.load(g), reps)
        row["materialise_parts"] = profile_materialise(basis, case.base, targets, genome)
        mat.load(genome)
        reference = snapshot(model)
        row["fused_addmm_materialise"] = median_seconds(
            lambda b=basis, g=genome: fused_load(b, case.base, targets, g), reps
        )
        row["fused_addmm_rel_err"] = rel_change(model, reference, case.base)
        if energy == 1.0:
            load16 = bf16_loader(basis, case.base, targets)
            row["bf16_materialise"] = median_seconds(lambda g=genome: load16(g), reps)
            row["bf16_rel_err"] = rel_change(model, reference, case.base)
            del load16
        else:
            mat.load(genome)
            row["child_rel_err_vs_full_basis"] = rel_change(model, full_child, case.base)
        del reference
        row["expert_rel_err"] = expert_rel_error(case, basis, 0)
        out[str(energy)] = row
        if energy != 1.0:
            del basis, mat
        gc.collect()
    return out


# -- driver -------------------------------------------------------------------------------------


def run_case(
    kind: str, root: Path, args: argparse.Namespace, config: LlamaConfig
) -> tuple[dict[str, object], dict[str, object] | None]:
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config).eval()
    model.requires_grad_(False)
    case = make_case(kind, root / kind, model, config, args.seed)
    materialiser = Materialiser(case.basis, case.base_src, model, torch.device("cpu"))
    log(f"{kind}: seeding archives with {args.children} bred children")
    pop = seed_population(case, materialiser, args.children, args.seed)
    result = compare_paths(case, pop, model, materialiser, args.reps, args.seed)
    result["basis_build_seconds"] = round(case.build_seconds, 2)
    result["basis_rank_total"] = rank_total(case.basis)
    result["basis_bytes"] = case.basis.nbytes()
    result["params"] = sum(p.numel() for p in model.parameters())
    sweep = None
    if kind == "full" and not args.no_sweep:
        sweep = energy_sweep(case, model, materialiser, pop, max(1, min(args.reps, 2)), args.seed)
    shutil.rmtree(case.root, ignore_errors=True)
    del case, materialiser, pop, model
    gc.collect()
    return result, sweep


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed children per path and case")
    parser.add_argument("--layers", type=int, default=30, help="decoder layers (SmolLM2: 30)")
    parser.add_argument("--children", type=int, default=3, help="bred children in the archives")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-sweep", action="store_true", help="skip the energy sweep")
    parser.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: /tmp)")
    args = parser.parse_args(argv)

    config = smollm2_config(args.layers)
    root = Path(tempfile.mkdtemp(prefix="cycleqd-bench-", dir=args.tmp))
    log(f"scratch folder {root}; torch threads {torch.get_num_threads()}")
    try:
        full, sweep = run_case("full", root, args, config)
        lora, _ = run_case("lora", root, args, config)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def case_out(r: dict[str, object]) -> dict[str, object]:
        keys = (
            "genome",
            "dense",
            "speedup",
            "genome_bytes",
            "checkpoint_bytes",
            "paths_agree_rel_err",
            "elites_per_archive",
            "basis_bytes",
        )
        return {k: r[k] for k in keys}

    out = {
        "speedup_full": full["speedup"],
        "speedup_lora": lora["speedup"],
        "bytes_ratio": lora["bytes_ratio"],
        "bytes_ratio_full": full["bytes_ratio"],
        "targets": {"bytes_ratio<=": 0.01, "speedup_lora>=": 5, "speedup_full>=": 0.5},
        "full": case_out(full),
        "lora": case_out(lora),
        "params": full["params"],
        "layers": args.layers,
        "basis_build_seconds": {
            "full": full["basis_build_seconds"],
            "lora": lora["basis_build_seconds"],
        },
        "basis_rank_total": {"full": full["basis_rank_total"], "lora": lora["basis_rank_total"]},
        "full_energy_sweep": sweep,
        "reps": args.reps,
        "device": f"cpu ({cpu_name()})",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "script_seconds": round(time.perf_counter() - STARTED, 1),
        "notes": (
            "medians over reps after one untimed warm-up child; dense mutation uses the active "
            "expert's SVD precomputed (not timed), truncated to its non-negligible rank; dense "
            "save has no fsync (save_fsync_extra is that cost, not in total); genome save "
            "fsyncs; files are read back from the page cache"
        ),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
