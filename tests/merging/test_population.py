"""Population forward: K children in one batched forward equal K materialised children.

Checked in float32 on a tiny random Llama (linear and embedding weights, tied LM head) and on a
small CNN (convolution kernels and per-row biases), for LoRA-rank and energy-truncated bases, with
fallback children (a dense delta) mixed into the same group.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import lora_like_family
from torch import nn

from cycleqd.merging.basis import build_basis
from cycleqd.merging.genome import Genome, combine, expert_genome
from cycleqd.merging.materialise import Materialiser
from cycleqd.merging.mutation import gaussian_mutation, svd_mutation
from cycleqd.merging.population import PopulationForward
from cycleqd.merging.sources import DictSource, SafetensorsSource
from cycleqd.models.engine import HFEngine
from cycleqd.search.executors.serial import GroupEvaluator
from cycleqd.tasks.multiple_choice import MultipleChoiceParams, MultipleChoiceTask
from cycleqd.tasks.simple import ExactMatchParams, ExactMatchTask, LikelihoodTask, _Params


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> dict:
    return lora_like_family(tmp_path_factory.mktemp("pop"))


def children(basis, n: int, seed: int) -> list[Genome]:
    """Experts, crossovers of them and SVD-mutated children: what a search holds."""
    rng = torch.Generator().manual_seed(seed)
    experts = [expert_genome(basis, e) for e in range(len(basis.experts))]
    out = list(experts)
    while len(out) < n:
        i, j = torch.randint(0, len(experts), (2,), generator=rng).tolist()
        w = float(torch.rand(1, generator=rng))
        child = combine([out[i], out[j]], [w, 1 - w])
        out.append(svd_mutation(child, basis, len(out) % len(experts), rng, w_max=0.3))
    return out[:n]


def setup(family: dict, energy: float = 1.0):
    engine = HFEngine(family["base"], dtype="float32", batch_size=4, min_shared_prefix=3)
    base = SafetensorsSource(family["base"])
    experts = {k: SafetensorsSource(v) for k, v in family["experts"].items()}
    basis = build_basis(base, experts, energy=energy)
    mat = Materialiser(basis, base, engine.module, engine.device)
    return engine, basis, mat


@pytest.mark.parametrize("energy", [1.0, 0.8])
def test_batched_forward_equals_materialised_children(family: dict, energy: float) -> None:
    engine, basis, mat = setup(family, energy)
    if energy < 1.0:  # the truncation really dropped directions
        assert any(m.rank < 3 * len(basis.experts) for m in basis.matrices.values())
    genomes = children(basis, 5, seed=1)
    pop = PopulationForward(basis, mat, torch.float32)
    plan = pop.plan(genomes)
    assert plan.batched == list(range(5)) and not plan.fallback
    assert any("embed" in n for n in plan.row_tensors)  # the tied embedding varies per row
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 40, (10, 7), generator=gen)
    groups = torch.tensor([0, 1, 2, 3, 4, 4, 3, 2, 1, 0])
    with torch.no_grad(), pop.activate(genomes, plan), pop.rows(groups):
        batched = engine.module(input_ids=ids).logits
    for k, genome in enumerate(genomes):
        mat.load(genome)
        with torch.no_grad():
            ref = engine.module(input_ids=ids[groups == k]).logits
        assert torch.allclose(batched[groups == k], ref, atol=1e-5), k
    # the hooks are gone afterwards: a plain forward is the last materialised child
    with torch.no_grad():
        again = engine.module(input_ids=ids[groups == 4]).logits
    assert torch.allclose(again, ref, atol=1e-6)


def test_without_row_assignment_the_hooks_refuse(family: dict) -> None:
    _, basis, mat = setup(family)
    genomes = children(basis, 3, seed=2)
    pop = PopulationForward(basis, mat, torch.float32)
    plan = pop.plan(genomes)
    from cycleqd.errors import CycleQDError

    with pop.activate(genomes, plan), pytest.raises(CycleQDError, match="row assignment"):
        mat.module(input_ids=torch.tensor([[4, 5]]))
    with (
        pop.activate(genomes, plan),
        pop.rows(torch.tensor([0, 1])),
        pytest.raises(CycleQDError, match="received 1 rows"),
    ):
        mat.module(input_ids=torch.tensor([[4, 5]]))


def test_dense_children_fall_back_and_vary_nothing_else(family: dict) -> None:
    _, basis, mat = setup(family)
    genomes = children(basis, 4, seed=3)
    genomes[2] = gaussian_mutation(genomes[2], basis, torch.Generator().manual_seed(0), std=1e-3)
    plan = PopulationForward(basis, mat, torch.float32).plan(genomes)
    assert plan.batched == [0, 1, 3]
    assert plan.fallback == [2] and "dense delta" in plan.reasons[2]


def test_generation_and_scores_agree_with_one_child_at_a_time(family: dict, tmp_path: Path) -> None:
    """Whole tasks through the lockstep views: the same outputs and scores as materialised."""
    engine, basis, mat = setup(family)
    genomes = children(basis, 5, seed=4)
    genomes.append(gaussian_mutation(genomes[4], basis, torch.Generator().manual_seed(1), std=1e-3))
    data = tmp_path / "t.jsonl"
    # a long shared prompt prefix: the prefix cache is computed per child
    rows = [("the task is to copy: " + w + "=", w) for w in ("ab", "cde", "f", "ghij", "k")]
    data.write_text("".join(f'{{"prompt": "{p}", "target": "{t}"}}\n' for p, t in rows))
    tasks = [
        ExactMatchTask("em", ExactMatchParams(data=data, max_new_tokens=5)),
        LikelihoodTask("ll", _Params(data=data)),
    ]
    batched = GroupEvaluator(mat, engine, tasks, mode="on")
    got = batched.evaluate(genomes)
    assert batched.last_paths[:5] == ["batched(5)"] * 5
    assert batched.last_paths[5].startswith("materialised: dense delta")
    reference = GroupEvaluator(mat, engine, tasks, mode="off")
    want = reference.evaluate(genomes)
    assert all(p.startswith("materialised") for p in reference.last_paths)
    for g, w in zip(got, want, strict=True):
        assert [r["output"] for r in g["em"].records] == [r["output"] for r in w["em"].records]
        assert g["em"].quality == w["em"].quality
        assert g["ll"].quality == pytest.approx(w["ll"].quality, rel=1e-5)


def test_multiple_choice_scores_agree_with_one_child_at_a_time(
    family: dict, tmp_path: Path
) -> None:
    """Log-likelihoods of a population in shared passes (each question's context once per
    child, its choices against that child's cache) equal those of materialised children."""
    engine, basis, mat = setup(family)
    genomes = children(basis, 4, seed=6)
    data = tmp_path / "mc.jsonl"
    questions = [
        {
            "context": f"the task is to copy: {w}=",
            "choices": [w, w[::-1], "zz", "a b c"],
            "answer": 0,
        }
        for w in ("ab", "cde", "fgh")
    ]
    data.write_text("".join(json.dumps(q) + "\n" for q in questions))
    tasks = [MultipleChoiceTask("mc", MultipleChoiceParams(data=data))]
    batched = GroupEvaluator(mat, engine, tasks, mode="on")
    got = batched.evaluate(genomes)
    assert batched.last_paths == ["batched(4)"] * 4
    want = GroupEvaluator(mat, engine, tasks, mode="off").evaluate(genomes)
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g["mc"].records, w["mc"].records, strict=True):
            assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=1e-4)
        assert g["mc"].quality == w["mc"].quality
    # the children differ, so a mix-up of rows between children would show
    assert len({tuple(g["mc"].records[0]["loglikelihoods"]) for g in got}) == 4


def test_cost_model_is_measured_and_cached(family: dict) -> None:
    engine, basis, mat = setup(family)
    genomes = children(basis, 4, seed=5)
    evaluator = GroupEvaluator(mat, engine, [], mode="auto")
    plan = evaluator._plan(genomes)
    assert len(evaluator._pays) == 1  # one measurement for this group size and rank
    assert plan.batched or all("cost model" in r for r in plan.reasons.values())
    evaluator._plan(genomes)
    assert len(evaluator._pays) == 1


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.conv1d = nn.Conv1d(6, 4, 3, padding=1, padding_mode="circular")
        self.head = nn.Linear(4 * 25, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))  # (N, 6, 5, 5)
        h = torch.relu(self.conv1d(h.flatten(2)))  # (N, 4, 25)
        return self.head(h.flatten(1))


def test_cnn_conv_kernels_and_biases_per_row() -> None:
    torch.manual_seed(0)
    base = TinyCNN().eval()
    experts = {}
    for i in range(2):
        gen = torch.Generator().manual_seed(10 + i)
        experts[f"x{i}"] = {
            k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in base.state_dict().items()
        }
    basis = build_basis(
        DictSource(base.state_dict()), {k: DictSource(v) for k, v in experts.items()}
    )
    resident = TinyCNN().eval()
    resident.load_state_dict(base.state_dict())
    mat = Materialiser(basis, DictSource(base.state_dict()), resident, torch.device("cpu"))
    genomes = children(basis, 4, seed=6)
    pop = PopulationForward(basis, mat, torch.float32)
    plan = pop.plan(genomes)
    assert plan.batched == [0, 1, 2, 3]
    assert {"conv.bias", "conv1d.bias", "head.bias", "conv.weight"} <= set(plan.row_tensors)
    x = torch.rand(8, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    groups = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    with torch.no_grad(), pop.activate(genomes, plan), pop.rows(groups):
        batched = resident(x)
    for k, genome in enumerate(genomes):
        mat.load(genome)
        with torch.no_grad():
            ref = resident(x[groups == k])
        assert torch.allclose(batched[groups == k], ref, atol=1e-5), k


def test_norm_weights_that_differ_force_a_fallback() -> None:
    """A LayerNorm weight can't vary per row: the group is materialised, and says why."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)).eval()
    experts = {
        f"x{i}": {k: v + 0.1 * (i + 1) for k, v in base.state_dict().items()} for i in range(2)
    }
    basis = build_basis(
        DictSource(base.state_dict()), {k: DictSource(v) for k, v in experts.items()}
    )
    mat = Materialiser(basis, DictSource(base.state_dict()), base, torch.device("cpu"))
    genomes = children(basis, 3, seed=7)
    plan = PopulationForward(basis, mat, torch.float32).plan(genomes)
    assert plan.batched == [] and plan.fallback == [0, 1, 2]
    assert "LayerNorm" in plan.reasons[0]


def test_ties_genome_space_is_never_shared(family: dict) -> None:
    """``basis.combine: ties`` is not linear in the coefficients: every child is materialised,
    with the reason logged, even where shared passes are forced on."""
    engine, basis, mat = setup(family)
    genomes = children(basis, 3, seed=2)
    mat.combine = "ties"
    try:
        evaluator = GroupEvaluator(mat, engine, [], mode="on")
        plan = evaluator._plan(genomes)
    finally:
        mat.combine = "sum"
    assert plan.batched == [] and plan.fallback == [0, 1, 2]
    assert set(plan.reasons.values()) == {"basis.combine: ties is not linear in the coefficients"}
