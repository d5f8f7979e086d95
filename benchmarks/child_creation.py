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
    precomputed and not timed: the factors of the basis under test are reused, which favours the
    dense path), ``save`` the child checkpoint (``save_file``, no fsync; the fsync is reported apart
    as ``save_fsync_extra``) and ``materialise`` it (``load_file`` + ``load_state_dict``).

Both paths draw from the same per-generation random streams, so they build the same child; an
untimed warm-up child checks that the two resident models agree (``paths_agree_rel_err``).

Two expert kinds: ``full`` (base + dense Gaussian noise on every tensor: full-rank task vectors,
the genome path's worst case) and ``lora`` (base + rank-16 ``B @ A`` on every 2-D tensor, small
dense noise on 1-D tensors: the package's default expert kind). Task vectors are 1e-3 of the
weights' norm, like a fine-tune. Bases are built with the package's defaults; for ``lora`` the
kept rank is checked against the true one (16 per expert and tensor) and the spectrum of one
task vector is reported: the float32 rounding of ``expert - base`` puts its "zero" singular values
near 5e-6 of the largest, so ``rtol`` must sit above that (1e-6 kept every direction). Basis
building (one SVD per expert and tensor) is a one-off cost per run, reported apart.

For the full-rank case the script also splits the genome path's materialise time into its parts
(scaling ``U * c``, the product, adding the base, the copy into the model) and sweeps truncation
by kept energy (``energy`` of ``build_basis``), reporting materialise time and an expert's relative
reconstruction error, plus two variants the package could adopt (a fused ``addmm`` written
straight into the parameter, and bfloat16 products). Truncated bases are cut from the full one
with the package's own ``keep_rank`` (what ``build_basis(energy=..., rtol=...)`` computes, checked
against it on a few tensors), which saves a second SVD pass.

Files are read back while still in the page cache, the dense path's best case. MKL/OpenMP threads
spin-wait: if another process shares the cores, SVDs and products can slow down ten-fold, so run it
on a quiet machine (or with ``OMP_WAIT_POLICY=PASSIVE``); the load averages are reported. Output:
one JSON line on stdout; progress goes to stderr.

Usage::

    python benchmarks/child_creation.py [--reps 5] [--layers 30] [--children 3]
"""

from __future__ import annotations

import argparse
import gc
import inspect
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
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from cycleqd.merging.basis import ExpertBasis, MatrixBasis, build_basis, keep_rank
from cycleqd.merging.crossover import crossover
from cycleqd.merging.genome import Genome, expert_genome, task_vector
from cycleqd.merging.materialise import Materialiser, resolve_tensor
from cycleqd.merging.mutation import svd_mutation
from cycleqd.merging.sources import DictSource, SafetensorsSource
from cycleqd.search.archive import TaskArchive
from cycleqd.search.loop import generation_rngs
from cycleqd.search.sampling import sample_parents
from cycleqd.search.store import RunStore

TASKS = ("code", "os", "db")
W_MAX = 0.1
CROSSOVER_MEAN, CROSSOVER_STD = 1.0, 0.01
LORA_RANK = 16
DEFAULT_RTOL: float = inspect.signature(build_basis).parameters["rtol"].default
RELATIVE_SCALE = 1e-3  # ||tau|| / ||theta|| per tensor, about what a fine-tune moves
ENERGIES = (1.0, 0.99, 0.9)
STARTED = time.perf_counter()

StateDict = dict[str, torch.Tensor]
Json = dict[str, Any]


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
    """Per-step medians; ``total`` is the median of per-run totals, not a sum of medians."""
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


def rank_total(basis: ExpertBasis) -> int:
    return sum(m.rank for m in basis.matrices.values())


def truncate_basis(
    basis: ExpertBasis, *, energy: float = 1.0, rtol: float = DEFAULT_RTOL
) -> ExpertBasis:
    """The basis ``build_basis(energy=energy, rtol=rtol)`` would give, cut from a wider one.

    ``build_basis`` keeps, per expert, the prefix of singular directions ``keep_rank`` selects;
    applying ``keep_rank`` to the kept prefix of a basis built with a smaller ``rtol`` and
    ``energy=1`` selects the same prefix, without a second SVD pass.
    """
    out = ExpertBasis(experts=list(basis.experts), vectors=basis.vectors)
    for name, m in basis.matrices.items():
        keep = []
        for e in range(len(basis.experts)):
            sl = m.slice(e)
            r = keep_rank(m.S[sl], energy=energy, rtol=rtol)
            keep.append(torch.arange(sl.start, sl.start + r))
        index = torch.cat(keep)
        offsets = [0]
        for k in keep:
            offsets.append(offsets[-1] + len(k))
        out.matrices[name] = MatrixBasis(
            shape=m.shape,
            U=m.U[:, index].contiguous(),
            S=m.S[index].contiguous(),
            Vh=m.Vh[index].contiguous(),
            offsets=offsets,
        )
    return out


def restrict_genome(genome: Genome, wide: ExpertBasis, narrow: ExpertBasis) -> Genome:
    """A genome's coefficients on the singular directions a truncated basis keeps."""
    coeffs = dict(genome.coeffs)
    for name, m in narrow.matrices.items():
        f = wide.matrices[name]
        c = genome.coeffs[name]
        parts = [
            c[f.offsets[e] : f.offsets[e] + m.offsets[e + 1] - m.offsets[e]]
            for e in range(len(narrow.experts))
        ]
        coeffs[name] = torch.cat(parts)
    return Genome(coeffs=coeffs, dense=dict(genome.dense))


# -- a case: base, experts on disk, the package's basis -----------------------------------------


@dataclass
class Case:
    kind: str
    root: Path
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
    log(f"{kind}: experts written; building the basis (package defaults)")
    start = time.perf_counter()
    basis = build_basis(base_src, expert_srcs)
    build_seconds = time.perf_counter() - start
    log(f"{kind}: basis built in {build_seconds:.1f}s, rank total {rank_total(basis)}")
    return Case(
        kind=kind,
        root=root,
        base=base,
        base_src=base_src,
        expert_srcs=expert_srcs,
        basis=basis,
        build_seconds=build_seconds,
        checkpoint_bytes=base_file.stat().st_size,
    )


def check_truncation(case: Case, *, energy: float, rtol: float) -> bool:
    """``truncate_basis`` agrees with ``build_basis(energy, rtol)`` on a few tensors."""
    names = [n for n in case.basis.matrices if ".layers.0." in n][:2]
    base = DictSource({n: case.base[n] for n in names})
    experts = {e: DictSource({n: src.get(n) for n in names}) for e, src in case.expert_srcs.items()}
    built = build_basis(base, experts, energy=energy, rtol=rtol)
    cut = truncate_basis(case.basis, energy=energy, rtol=rtol)
    return all(
        built.matrices[n].offsets == cut.matrices[n].offsets
        and torch.allclose(built.matrices[n].S, cut.matrices[n].S, rtol=1e-4)
        for n in names
    )


# -- archives and the population the parents come from ------------------------------------------


@dataclass
class Population:
    basis: ExpertBasis
    materialiser: Materialiser
    store: RunStore
    archives: list[TaskArchive]
    dense_paths: dict[str, Path]
    folder: Path


def seed_population(
    case: Case, basis: ExpertBasis, model: nn.Module, folder: Path, children: int, seed: int
) -> Population:
    """Archives seeded with the experts plus a few children bred in genome space.

    Scores are synthetic (each expert strong on its own task); every individual is stored as a
    genome in a run directory (genome path) and as a full checkpoint (dense path).
    """
    materialiser = Materialiser(basis, case.base_src, model, torch.device("cpu"))
    store = RunStore(folder / "run")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed + 2)
    scores: dict[str, dict[str, float]] = {}
    dense_paths: dict[str, Path] = {}
    genomes: dict[str, Genome] = {}
    for e, name in enumerate(TASKS):
        ident = f"expert-{name}"
        genomes[ident] = expert_genome(basis, e)
        dense_paths[ident] = case.root / ident / "model.safetensors"
        scores[ident] = {t: (0.6 if t == name else 0.2) + rng.uniform(0, 0.05) for t in TASKS}
    for i in range(children):
        ids = list(genomes)
        a, b = rng.choice(len(ids), size=2, replace=False)
        child, _ = crossover(genomes[ids[int(a)]], genomes[ids[int(b)]], gen)
        child = svd_mutation(child, basis, i % len(TASKS), gen, w_max=W_MAX)
        ident = f"bred{i:03d}"
        genomes[ident] = child
        dense_paths[ident] = folder / "dense" / f"{ident}.safetensors"
        dense_paths[ident].parent.mkdir(parents=True, exist_ok=True)
        save_file(materialiser.weights(child), str(dense_paths[ident]))
        scores[ident] = {t: rng.uniform(0.15, 0.65) for t in TASKS}
    for ident, genome in genomes.items():
        store.save_individual(ident, genome)
    archives = []
    for task in TASKS:
        bc_tasks = [t for t in TASKS if t != task]
        archive = TaskArchive(task=task, bc_tasks=bc_tasks, ranges=[(0.0, 1.0)] * 2, bins=[15, 15])
        for ident, s in scores.items():
            archive.add(ident, {k: float(v) for k, v in s.items()})
        archives.append(archive)
    return Population(basis, materialiser, store, archives, dense_paths, folder)


# -- one child, two ways ------------------------------------------------------------------------


def genome_child(pop: Population, generation: int, seed: int) -> dict[str, float]:
    """The loop's steps for one generation, up to a child that is ready to evaluate."""
    q = generation % len(TASKS)
    sampling_rng, operator_rng = generation_rngs(seed, generation)
    laps = Laps()
    p1, p2 = sample_parents(pop.archives[q].elites(), sampling_rng, kind="elite")
    laps.lap("sample")
    g1, g2 = pop.store.load_individual(p1.id), pop.store.load_individual(p2.id)
    laps.lap("load_parents")
    child, _ = crossover(g1, g2, operator_rng, mean=CROSSOVER_MEAN, std=CROSSOVER_STD)
    laps.lap("crossover")
    child = svd_mutation(child, pop.basis, q, operator_rng, w_max=W_MAX)
    laps.lap("mutate")
    pop.store.save_individual(f"child{generation:06d}", child)
    laps.lap("save")
    pop.materialiser.load(child)
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
    for name in sorted(pop.basis.matrices):
        m = pop.basis.matrices[name]
        sl = m.slice(q)
        u_e, s_e, vh_e = m.U[:, sl], m.S[sl], m.Vh[sl]  # the active expert's cached SVD
        u = torch.rand(s_e.numel(), generator=operator_rng) * W_MAX
        child[name] += ((u_e * (u * s_e)) @ vh_e).reshape(child[name].shape)
    laps.lap("mutate")
    path = pop.folder / "dense-children" / f"child{generation:06d}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(child, str(path))
    laps.lap("save")
    del child
    result = model.load_state_dict(load_file(str(path)), strict=False)
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


def rel_change(model: nn.Module, reference: StateDict, base: StateDict) -> float:
    """Whole-model ``||w - ref|| / ||ref - base||``: an error relative to the task vector."""
    num = den = 0.0
    for name, w in model.state_dict().items():
        if name in base:
            num += float((w - reference[name]).square().sum())
            den += float((reference[name] - base[name]).square().sum())
    return math.sqrt(num / den)


def compare_paths(case: Case, pop: Population, model: nn.Module, reps: int, seed: int) -> Json:
    """Warm-up (untimed, checks both paths build the same child), then interleaved reps."""
    fsync_times: list[float] = []
    genome_child(pop, 0, seed)
    reference = snapshot(model)
    dense_child(case, pop, model, 0, seed, fsync_times)
    agreement = rel_change(model, reference, case.base)
    del reference
    genome_runs, dense_runs = [], []
    load_start = os.getloadavg()[0]
    for rep in range(1, reps + 1):
        genome_runs.append(genome_child(pop, rep, seed))
        dense_runs.append(dense_child(case, pop, model, rep, seed, fsync_times))
        log(
            f"  rep {rep}/{reps}: genome {sum(genome_runs[-1].values()):.3f}s, "
            f"dense {sum(dense_runs[-1].values()):.3f}s"
        )
    genome_bytes = pop.store.individual_path(f"child{reps:06d}").stat().st_size
    genome, dense = medians(genome_runs), medians(dense_runs)
    speedup = dense["total"] / genome["total"]
    dense["save_fsync_extra"] = round(statistics.median(fsync_times), 4)
    return {
        "genome": genome,
        "dense": dense,
        "speedup": round(speedup, 3),
        "genome_bytes": genome_bytes,
        "checkpoint_bytes": case.checkpoint_bytes,
        "bytes_ratio": genome_bytes / case.checkpoint_bytes,
        "basis_rank_total": rank_total(pop.basis),
        "basis_bytes": pop.basis.nbytes(),
        "paths_agree_rel_err": agreement,
        "elites_per_archive": [len(a.elites()) for a in pop.archives],
        "load_avg_reps": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }


# -- where the genome path's materialise time goes (full-rank case) -------------------------------


@torch.no_grad()
def profile_materialise(
    basis: ExpertBasis, base: StateDict, targets: StateDict, genome: Genome
) -> dict[str, float]:
    """The package's materialise loop (``task_vector`` + copy), each operation timed."""
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


@torch.no_grad()
def expert_rel_error(case: Case, basis: ExpertBasis, expert: int) -> float:
    """``||tau_hat - tau|| / ||tau||`` over the whole model, for one expert's own genome."""
    src = case.expert_srcs[TASKS[expert]]
    num = den = 0.0
    for name in basis.names:
        tau = src.get(name).float() - case.base[name]
        if name in basis.matrices:
            m = basis.matrices[name]
            sl = m.slice(expert)
            est = ((m.U[:, sl] * m.S[sl]) @ m.Vh[sl]).reshape(m.shape)
        else:
            est = basis.vectors[name].taus[expert].reshape(tau.shape)
        num += float((est - tau).square().sum())
        den += float(tau.square().sum())
    return math.sqrt(num / den)


def variants(
    case: Case, basis: ExpertBasis, model: nn.Module, genome: Genome, reps: int, *, bf16: bool
) -> Json:
    """The package's materialise split into parts, and the suggested variants against it."""
    targets = {name: resolve_tensor(model, name) for name in basis.names}
    out: Json = {"materialise_parts": profile_materialise(basis, case.base, targets, genome)}
    reference = snapshot(model)
    out["fused_addmm_materialise"] = median_seconds(
        lambda: fused_load(basis, case.base, targets, genome), reps
    )
    out["fused_addmm_rel_err"] = rel_change(model, reference, case.base)
    if bf16:
        load16 = bf16_loader(basis, case.base, targets)
        out["bf16_materialise"] = median_seconds(lambda: load16(genome), reps)
        out["bf16_rel_err"] = rel_change(model, reference, case.base)
    return out


def energy_sweep(case: Case, pop: Population, model: nn.Module, reps: int, seed: int) -> Json:
    """Materialise cost and fidelity against truncating the full-rank bases by kept energy."""
    targets = {name: resolve_tensor(model, name) for name in case.basis.names}
    sampling_rng, operator_rng = generation_rngs(seed, 10_000)
    p1, p2 = sample_parents(pop.archives[0].elites(), sampling_rng, kind="elite")
    parents = pop.store.load_individual(p1.id), pop.store.load_individual(p2.id)
    child, _ = crossover(*parents, operator_rng)
    child = svd_mutation(child, case.basis, 0, operator_rng, w_max=W_MAX)
    pop.materialiser.load(child)
    full_child = snapshot(model)
    out: Json = {"child": [p1.id, p2.id], "truncation_matches_build_basis": {}}
    load_start = os.getloadavg()[0]
    for energy in ENERGIES:
        log(f"full: energy {energy}")
        row: Json = {}
        if energy == 1.0:
            basis, mat, genome = case.basis, pop.materialiser, child
        else:
            basis = truncate_basis(case.basis, energy=energy)
            out["truncation_matches_build_basis"][str(energy)] = check_truncation(
                case, energy=energy, rtol=DEFAULT_RTOL
            )
            mat = Materialiser(basis, case.base_src, model, torch.device("cpu"))
            genome = restrict_genome(child, case.basis, basis)
        row["rank_total"] = rank_total(basis)
        row["basis_bytes"] = basis.nbytes()
        row["materialise"] = median_seconds(lambda m=mat, g=genome: m.load(g), reps)
        mat.load(genome)
        row["child_rel_err_vs_full_basis"] = rel_change(model, full_child, case.base)
        if energy == 1.0:
            row.update(variants(case, basis, model, genome, reps, bf16=True))
        else:
            row["materialise_parts"] = profile_materialise(basis, case.base, targets, genome)
        row["expert_rel_err"] = expert_rel_error(case, basis, 0)
        out[str(energy)] = row
        del basis, mat, genome
        gc.collect()
    out["load_avg"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    return out


# -- driver -------------------------------------------------------------------------------------


def fresh_model(config: LlamaConfig, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.requires_grad_(False)
    return model


def run_full(root: Path, args: argparse.Namespace, config: LlamaConfig) -> tuple[Json, Json]:
    model = fresh_model(config, args.seed)
    case = make_case("full", root / "full", model, config, args.seed)
    log(f"full: seeding archives with {args.children} bred children")
    pop = seed_population(case, case.basis, model, case.root / "pop", args.children, args.seed)
    log("full: children (warm-up + reps)")
    result = compare_paths(case, pop, model, args.reps, args.seed)
    result["basis_build_seconds"] = round(case.build_seconds, 2)
    result["params"] = sum(p.numel() for p in model.parameters())
    sweep: Json = {}
    if not args.no_sweep:
        sweep = energy_sweep(case, pop, model, max(1, min(args.reps, 3)), args.seed)
    shutil.rmtree(case.root, ignore_errors=True)
    return result, sweep


def lora_spectrum(case: Case) -> Json:
    """Singular values of one expert task vector around the true rank, relative to the largest."""
    name = next(n for n in case.basis.matrices if n.endswith("layers.0.self_attn.q_proj.weight"))
    tau = case.expert_srcs[TASKS[0]].get(name) - case.base[name]
    s = torch.linalg.svdvals(tau)
    rel = (s / s[0]).tolist()
    return {
        "tensor": name,
        f"s{LORA_RANK - 1}/s0": rel[LORA_RANK - 1],
        f"s{LORA_RANK}/s0": rel[LORA_RANK],
        "rtol": DEFAULT_RTOL,
    }


def run_lora(root: Path, args: argparse.Namespace, config: LlamaConfig) -> Json:
    model = fresh_model(config, args.seed)
    case = make_case("lora", root / "lora", model, config, args.seed)
    log(f"lora: seeding archives with {args.children} bred children")
    pop = seed_population(case, case.basis, model, case.root / "pop", args.children, args.seed)
    log("lora: children (warm-up + reps)")
    result = compare_paths(case, pop, model, args.reps, args.seed)
    result["basis_build_seconds"] = round(case.build_seconds, 2)
    result["rtol"] = DEFAULT_RTOL
    result["expected_rank_total"] = LORA_RANK * len(TASKS) * len(case.basis.matrices)
    result["spectrum"] = lora_spectrum(case)
    child = pop.store.load_individual(f"child{args.reps:06d}")
    pop.materialiser.load(child)
    reps = max(1, min(args.reps, 3))
    result["materialise_variants"] = variants(case, case.basis, model, child, reps, bf16=True)
    shutil.rmtree(case.root, ignore_errors=True)
    return result


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


CASE_KEYS = (
    "genome",
    "dense",
    "speedup",
    "genome_bytes",
    "checkpoint_bytes",
    "bytes_ratio",
    "basis_rank_total",
    "basis_bytes",
    "paths_agree_rel_err",
    "elites_per_archive",
    "load_avg_reps",
)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed children per path and case")
    parser.add_argument("--layers", type=int, default=30, help="decoder layers (SmolLM2: 30)")
    parser.add_argument("--children", type=int, default=3, help="bred children in the archives")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-sweep", action="store_true", help="skip the full-rank energy sweep")
    parser.add_argument("--tmp", type=Path, default=None, help="scratch parent folder")
    args = parser.parse_args(argv)

    config = smollm2_config(args.layers)
    load_start = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="cycleqd-bench-", dir=args.tmp))
    log(f"scratch folder {root}; torch threads {torch.get_num_threads()}; load {load_start}")
    try:
        full, sweep = run_full(root, args, config)
        gc.collect()
        lora = run_lora(root, args, config)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def case_out(r: Json, *extra: str) -> Json:
        return {k: r[k] for k in (*CASE_KEYS, *extra)}

    out: Json = {
        "speedup_full": full["speedup"],
        "speedup_lora": lora["speedup"],
        "bytes_ratio": lora["bytes_ratio"],
        "bytes_ratio_full": full["bytes_ratio"],
        "targets": {"bytes_ratio<=": 0.01, "speedup_lora>=": 5, "speedup_full>=": 0.5},
        "full": case_out(full),
        "lora": case_out(lora, "rtol", "expected_rank_total", "spectrum", "materialise_variants"),
        "params": full["params"],
        "layers": args.layers,
        "basis_build_seconds": {
            "full": full["basis_build_seconds"],
            "lora": lora["basis_build_seconds"],
        },
        "basis_rank_total": {
            "full": full["basis_rank_total"],
            "lora": lora["basis_rank_total"],
        },
        "full_energy_sweep": sweep,
        "reps": args.reps,
        "device": f"cpu ({cpu_name()})",
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "torch": torch.__version__,
        "load_avg_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "script_seconds": round(time.perf_counter() - STARTED, 1),
        "notes": (
            "medians over reps after one untimed warm-up child per path; dense mutation reuses "
            "the active expert's SVD factors from the basis under test (precomputed, not "
            "timed); dense save has no fsync (save_fsync_extra, not in total) while genome save "
            "fsyncs; files are read back from the page cache and load_file memory-maps them "
            "(zero-copy), so the dense path's reads cost almost nothing here"
        ),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
