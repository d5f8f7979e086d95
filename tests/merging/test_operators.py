"""Crossover, mutation and the final merge, each checked against a hand computation in weight
space (dense task vectors and their SVDs), not against the genome arithmetic it implements."""

from __future__ import annotations

import pytest
import torch

from cycleqd.merging.aggregate import (
    assemble_genome,
    final_genome,
    softmax_weights,
    ties_genome,
)
from cycleqd.merging.basis import as_matrix, build_basis
from cycleqd.merging.crossover import crossover, layer_of
from cycleqd.merging.genome import combine, expert_genome, task_vector
from cycleqd.merging.mutation import gaussian_mutation, svd_mutation
from cycleqd.merging.sources import DictSource


def setup(n_experts: int = 3):
    gen = torch.Generator().manual_seed(0)
    base = {
        "layers.0.w": torch.randn(10, 7, generator=gen),
        "layers.1.w": torch.randn(7, 10, generator=gen),
        "layers.1.conv": torch.randn(4, 2, 3, 3, generator=gen),
        "norm": torch.randn(7, generator=gen),
    }
    experts = {
        f"x{e}": {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
        for e in range(n_experts)
    }
    basis = build_basis(DictSource(base), {k: DictSource(v) for k, v in experts.items()})
    taus = {e: {k: experts[e][k] - base[k] for k in base} for e in experts}
    return base, experts, taus, basis


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return bool((a - b).norm() <= tol * max(1.0, float(b.norm())))


def test_crossover_matches_weight_space_merge() -> None:
    _, _, taus, basis = setup()
    rng = torch.Generator().manual_seed(7)
    child, weights = crossover(expert_genome(basis, 0), expert_genome(basis, 2), rng, std=0.01)
    w = torch.normal(1.0, 0.01, size=(2,), generator=torch.Generator().manual_seed(7))
    w1, w2 = float(w[0]) / float(w[0] + w[1]), float(w[1]) / float(w[0] + w[1])
    assert abs(weights["model"][0] - w1) < 1e-6 and abs(weights["model"][1] - w2) < 1e-6
    for name in basis.names:
        expected = w1 * taus["x0"][name] + w2 * taus["x2"][name]
        assert close(task_vector(basis, child, name), expected), name


def test_per_expert_crossover_passes_a_skill_one_parent_carries_whole() -> None:
    _, _, taus, basis = setup()
    rng = torch.Generator().manual_seed(7)
    # two single-skill experts: the child carries both at full strength (linear halves them)
    child, _ = crossover(
        expert_genome(basis, 0), expert_genome(basis, 2), rng, kind="per_expert", basis=basis
    )
    for name in basis.names:
        assert close(task_vector(basis, child, name), taus["x0"][name] + taus["x2"][name]), name
    # an expert both parents carry is averaged, never grown: (x0 + x2) x x0 -> x0 + x2 again
    again, _ = crossover(child, expert_genome(basis, 0), rng, kind="per_expert", basis=basis)
    for name in basis.names:
        assert close(task_vector(basis, again, name), taus["x0"][name] + taus["x2"][name]), name


def test_per_expert_crossover_weights_a_shared_expert_by_its_strength_in_each_parent() -> None:
    _, _, _, basis = setup()
    rng = torch.Generator().manual_seed(3)
    full = expert_genome(basis, 1)
    half = combine([full], [0.5])
    child, weights = crossover(full, half, rng, std=0.0, kind="per_expert", basis=basis)
    assert weights["model"] == (0.5, 0.5)
    for name, m in basis.matrices.items():
        sl = m.slice(1)
        # weights 0.5 * 1 and 0.5 * 0.5 of the slice norm: (1 * 1 + 0.5 * 0.5) / 1.5 = 5/6
        assert torch.allclose(child.coeffs[name][sl], full.coeffs[name][sl] * 5 / 6, rtol=1e-5)
        assert child.coeffs[name][m.slice(0)].abs().max() == 0


def test_per_expert_crossover_needs_the_basis() -> None:
    _, _, _, basis = setup()
    with pytest.raises(ValueError, match="basis"):
        crossover(
            expert_genome(basis, 0), expert_genome(basis, 1), torch.Generator(), kind="per_expert"
        )


def test_per_layer_crossover_uses_one_weight_pair_per_layer() -> None:
    _, _, taus, basis = setup()
    child, weights = crossover(
        expert_genome(basis, 0),
        expert_genome(basis, 1),
        torch.Generator().manual_seed(3),
        std=0.3,
        per_layer=True,
    )
    assert set(weights) == {"0", "1", "other"}
    assert layer_of("layers.1.conv") == "1" and layer_of("norm") == "other"
    for name in basis.names:
        w1, w2 = weights[layer_of(name)]
        assert abs(w1 + w2 - 1) < 1e-9
        assert close(task_vector(basis, child, name), w1 * taus["x0"][name] + w2 * taus["x1"][name])
    assert weights["0"] != weights["1"]


def test_svd_mutation_matches_hand_svd() -> None:
    _, _, taus, basis = setup()
    parent = expert_genome(basis, 0)
    active = 1
    child = svd_mutation(parent, basis, active, torch.Generator().manual_seed(5), w_max=0.1)
    # the same uniform draws, in the operator's documented order (sorted 2-D tensor names)
    rng = torch.Generator().manual_seed(5)
    for name in sorted(basis.matrices):
        u_, s_, vh_ = torch.linalg.svd(as_matrix(taus["x1"][name]), full_matrices=False)
        r = basis.matrices[name].slice(active).stop - basis.matrices[name].slice(active).start
        u = torch.rand(r, generator=rng) * 0.1
        mutation = (u_[:, :r] * (u * s_[:r])) @ vh_[:r]
        expected = taus["x0"][name] + mutation.reshape(taus["x0"][name].shape)
        assert close(task_vector(basis, child, name), expected, 1e-4), name
        assert float(mutation.norm()) > 0
    # 1-D tensors are not mutated
    assert torch.equal(task_vector(basis, child, "norm"), task_vector(basis, parent, "norm"))


def test_signed_svd_mutation_can_shrink_directions() -> None:
    """u ~ U(-w_max, w_max): the same draws as the paper's, mapped to 2u - w_max."""
    _, _, taus, basis = setup()
    parent = expert_genome(basis, 1)
    child = svd_mutation(parent, basis, 1, torch.Generator().manual_seed(5), w_max=0.2, signed=True)
    rng = torch.Generator().manual_seed(5)
    shrunk = 0
    for name in sorted(basis.matrices):
        m = basis.matrices[name]
        sl = m.slice(1)
        u = torch.rand(sl.stop - sl.start, generator=rng) * 0.2 * 2 - 0.2
        u_, s_, vh_ = torch.linalg.svd(as_matrix(taus["x1"][name]), full_matrices=False)
        r = sl.stop - sl.start
        expected = (u_[:, :r] * ((1 + u) * s_[:r])) @ vh_[:r]
        assert close(task_vector(basis, child, name), expected.reshape(m.shape), 1e-4), name
        assert torch.allclose(child.coeffs[name][sl], (1 + u) * m.S[sl])
        shrunk += int((u < 0).sum())
    assert shrunk > 0  # some singular values went down, which the paper's draw never does


def test_gaussian_mutation_adds_dense_noise() -> None:
    _, _, taus, basis = setup()
    parent = expert_genome(basis, 2)
    child = gaussian_mutation(parent, basis, torch.Generator().manual_seed(1), std=0.01)
    noise = torch.randn(
        basis.matrices["layers.0.w"].shape, generator=torch.Generator().manual_seed(1)
    )
    delta = task_vector(basis, child, "layers.0.w") - taus["x2"]["layers.0.w"]
    assert close(delta, 0.01 * noise)
    assert set(child.dense) == set(basis.names)
    # a second mutation accumulates on the stored dense delta
    grand = gaussian_mutation(child, basis, torch.Generator().manual_seed(2), std=0.01)
    assert not torch.equal(grand.dense["norm"], child.dense["norm"])
    # crossover carries dense deltas linearly
    mixed, w = crossover(child, parent, torch.Generator().manual_seed(4), std=0.0)
    assert w["model"] == (0.5, 0.5)
    assert close(mixed.dense["norm"], 0.5 * child.dense["norm"])


def test_final_merge_is_softmax_weighted_task_arithmetic() -> None:
    _, _, taus, basis = setup()
    q = [0.2, 0.5, 0.9]
    beta = torch.softmax(torch.tensor(q, dtype=torch.float64) / 0.5, 0).tolist()
    assert softmax_weights(q, 0.5) == beta
    genome = final_genome([expert_genome(basis, e) for e in range(3)], q, temperature=0.5)
    for name in basis.names:
        expected = sum(b * taus[f"x{e}"][name] for e, b in enumerate(beta))
        assert close(task_vector(basis, genome, name), expected)


def test_assemble_takes_each_experts_slice_from_its_archives_best_elite() -> None:
    _, _, taus, basis = setup()
    x = [expert_genome(basis, e) for e in range(3)]
    # archive 1's best elite is a child carrying expert 0 at 0.5 and expert 1 at 1.2: only its
    # expert-1 part enters, so expert 0 comes once, from archive 0's elite (adding the elites
    # would give 1.5 tau_0)
    child = combine([x[0], x[1]], [0.5, 1.2])
    genome = assemble_genome(basis, [x[0], child, x[2]], [0, 1, 2])
    for name in basis.names:
        expected = taus["x0"][name] + 1.2 * taus["x1"][name] + taus["x2"][name]
        assert close(task_vector(basis, genome, name), expected), name
    # the experts themselves: task arithmetic at weight 1
    plain = assemble_genome(basis, x, [0, 1, 2])
    for name in basis.names:
        assert close(task_vector(basis, plain, name), sum(taus[f"x{e}"][name] for e in range(3)))


def test_assemble_averages_an_expert_served_twice_and_one_served_by_no_archive() -> None:
    _, _, taus, basis = setup()
    x = [expert_genome(basis, e) for e in range(3)]
    a = combine([x[0]], [0.8])
    b = combine([x[0], x[1]], [1.0, 0.6])
    # archives 0 and 1 both serve expert 0; expert 1 is served by none: the mean of its part
    # over the distinct elites (0, 0.6 and 0) -> 0.2
    genome = assemble_genome(basis, [a, b, x[2]], [0, 0, 2])
    for name in basis.names:
        expected = 0.9 * taus["x0"][name] + 0.2 * taus["x1"][name] + taus["x2"][name]
        assert close(task_vector(basis, genome, name), expected), name
    with pytest.raises(ValueError, match="one best elite per archive"):
        assemble_genome(basis, [a, b], [0, 1, 2])


def _ties_by_hand(taus: list[torch.Tensor], density: float) -> torch.Tensor:
    """TIES as its paper states it: keep each vector's top-k magnitudes, elect the sign of the
    summed trimmed vectors, average the entries whose sign agrees (zero where none does)."""
    trimmed = []
    for t in taus:
        k = int(density * t.numel())
        keep = torch.zeros(t.numel(), dtype=torch.bool)
        keep[t.abs().flatten().argsort(descending=True)[:k]] = True
        trimmed.append(t * keep.reshape(t.shape))
    stack = torch.stack(trimmed)
    elected = torch.where(stack.sum(0) >= 0, 1.0, -1.0)
    agree = (stack.sign() == elected).float()
    return (stack * agree).sum(0) / agree.sum(0).clamp(min=1)


def test_ties_final_merge_matches_hand_computation() -> None:
    _, _, _, basis = setup()
    elites = [expert_genome(basis, e) for e in range(3)]
    # an elite that is a mixture, so the merge is not only of the experts themselves
    elites[2] = combine([elites[0], elites[2]], [0.3, 1.0])
    genome = ties_genome(basis, elites, density=0.5)
    assert all(float(c.abs().sum()) == 0.0 for c in genome.coeffs.values())
    for name in basis.names:
        vectors = [task_vector(basis, g, name) for g in elites]
        assert close(task_vector(basis, genome, name), _ties_by_hand(vectors, 0.5), 1e-4), name


def test_ties_final_merge_of_one_elite_is_that_elite() -> None:
    _, _, _, basis = setup()
    elite = expert_genome(basis, 1)
    assert ties_genome(basis, [elite]) is elite
    with pytest.raises(ValueError, match="density"):
        ties_genome(basis, [elite, elite], density=0.0)


def test_ties_combine_merges_a_genomes_expert_parts_as_ties_does() -> None:
    base, _, taus, basis = setup()
    experts = [expert_genome(basis, e) for e in range(3)]
    scales = [1.0, 0.5, 0.7]
    genome = combine(experts, scales)
    for name in basis.names:
        parts = [s * taus[f"x{e}"][name] for e, s in enumerate(scales)]
        got = task_vector(basis, genome, name, combine="ties", density=0.5)
        assert close(got, _ties_by_hand(parts, 0.5), 1e-4), name
        # each expert's own genome is still that expert: one part is never trimmed
        alone = task_vector(basis, experts[1], name, combine="ties", density=0.5)
        assert close(alone, taus["x1"][name]), name
    # a child of two experts: only their parts take part in the election
    pair = combine([experts[0], experts[2]], [1.0, 1.0])
    for name in basis.names:
        parts = [taus["x0"][name], taus["x2"][name]]
        got = task_vector(basis, pair, name, combine="ties", density=0.5)
        assert close(got, _ties_by_hand(parts, 0.5), 1e-4), name
    # the dense delta is added after the merge; the materialiser writes the same weights
    noisy = gaussian_mutation(genome, basis, torch.Generator().manual_seed(1), std=1e-2)
    resident = torch.nn.Module()
    for i, (_, value) in enumerate(sorted(base.items())):
        resident.register_buffer(f"t{i}", value.clone())
    names = {name: f"t{i}" for i, name in enumerate(sorted(base))}
    renamed = DictSource({names[k]: v for k, v in base.items()})
    from cycleqd.merging.basis import ExpertBasis
    from cycleqd.merging.materialise import Materialiser

    moved = ExpertBasis(
        experts=basis.experts,
        matrices={names[k]: v for k, v in basis.matrices.items()},
        vectors={names[k]: v for k, v in basis.vectors.items()},
    )
    moved_genome = type(noisy)(
        coeffs={names[k]: v for k, v in noisy.coeffs.items()},
        dense={names[k]: v for k, v in noisy.dense.items()},
    )
    materialiser = Materialiser(
        moved, renamed, resident, torch.device("cpu"), combine="ties", density=0.5
    )
    materialiser.load(moved_genome)
    for name in basis.names:
        parts = [s * taus[f"x{e}"][name] for e, s in enumerate(scales)]
        expected = base[name] + _ties_by_hand(parts, 0.5) + noisy.dense[name]
        assert close(getattr(resident, names[name]), expected, 1e-4), name
    with pytest.raises(ValueError, match="combine"):
        task_vector(basis, genome, basis.names[0], combine="mean")  # type: ignore[arg-type]
