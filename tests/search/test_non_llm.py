"""The merging layer and the search are model-agnostic: a tiny CNN, end to end.

Two experts are trained from one base on two different image tasks; CycleQD searches their
merges through the same bases, genomes, archives and run directory as for language models.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import Field
from safetensors.torch import save_file
from torch import nn

from cycleqd.config import BCConfig, SearchConfig
from cycleqd.merging.basis import build_basis
from cycleqd.merging.genome import Genome
from cycleqd.merging.materialise import Materialiser
from cycleqd.merging.sources import DictSource
from cycleqd.schema import StrictModel
from cycleqd.search.loop import CycleQD
from cycleqd.search.operators import MUTATIONS, operator
from cycleqd.search.operators.base import Breeding
from cycleqd.search.store import RunStore
from cycleqd.tasks.base import TaskResult


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


LABELS = {
    "leftright": lambda x: (x[..., :4].mean((1, 2, 3)) > x[..., 4:].mean((1, 2, 3))).long(),
    "topbottom": lambda x: (x[..., :4, :].mean((1, 2, 3)) > x[..., 4:, :].mean((1, 2, 3))).long(),
}


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.conv(x))).flatten(1))


def train(model: nn.Module, task: str, steps: int, seed: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        x = images(64, seed * 1000 + step)
        loss = nn.functional.cross_entropy(model(x), LABELS[task](x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


class Accuracy:
    """A task: classification accuracy of the resident CNN on held-out images."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.x = images(256, 99)
        self.y = LABELS[name](self.x)

    def evaluate(self, engine: nn.Module) -> TaskResult:
        with torch.no_grad():
            pred = engine(self.x).argmax(1)
        return TaskResult(float((pred == self.y).float().mean()))


def cnn_search(
    tmp_path: Path, search: dict | None = None, combine: str = "sum", combine_density: float = 0.5
) -> dict:
    """Train two CNN experts on their tasks and run CycleQD over their merges; the summary."""
    torch.manual_seed(0)
    base = TinyCNN()
    base.eval()
    experts = {}
    for i, task in enumerate(LABELS):
        model = TinyCNN()
        model.load_state_dict(base.state_dict())
        train(model, task, steps=60, seed=i + 1)
        experts[task] = model.state_dict()
    basis = build_basis(
        DictSource(base.state_dict()), {k: DictSource(v) for k, v in experts.items()}
    )
    assert basis.matrices["conv.weight"].shape == (4, 1, 3, 3)  # a 4-D kernel, through its SVD
    assert "norm.num_batches_tracked" not in basis.names  # integer buffers stay as they are

    resident = TinyCNN().eval()
    resident.load_state_dict(base.state_dict())
    materialiser = Materialiser(
        basis,
        DictSource(base.state_dict()),
        resident,
        torch.device("cpu"),
        combine=combine,
        density=combine_density,
    )
    tasks = [Accuracy(t) for t in LABELS]
    store = RunStore(tmp_path / "run")
    store.create("cnn: true\n")

    def export(genome):
        save_file(materialiser.weights(genome), str(tmp_path / "final.safetensors"))
        return str(tmp_path / "final.safetensors")

    search = CycleQD(
        basis=basis,
        materialiser=materialiser,
        engine=resident,
        tasks=tasks,
        task_experts=[0, 1],
        search=SearchConfig.model_validate({"generations": 20, **(search or {})}),
        seed=3,
        bcs=[BCConfig(bins=6), BCConfig(bins=6)],
        combine=combine,
        combine_density=combine_density,
        store=store,
        export=export,
    )
    return search.run()


def test_cnn_search_end_to_end(tmp_path: Path) -> None:
    summary = cnn_search(tmp_path)
    experts_scores = summary["expert_scores"]
    # each expert learned its own task
    assert experts_scores["leftright"]["leftright"] > 0.8
    assert experts_scores["topbottom"]["topbottom"] > 0.8
    assert summary["generations_done"] == 20
    final = summary["final"]["scores"]
    assert set(final) == set(LABELS)
    assert summary["final"]["chosen"] == "merge"  # the paper's final model, by default
    # the merged CNN keeps both skills above chance
    assert min(final.values()) > 0.6, final
    assert (tmp_path / "final.safetensors").is_file()


def test_per_expert_crossover_and_best_of_final(tmp_path: Path) -> None:
    summary = cnn_search(tmp_path, {"crossover": "per_expert", "final_model": "best_of"})
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 20
    final = summary["final"]
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    archived = {e["id"] for a in state["archives"] for e in a["elites"]}
    mean = lambda scores: sum(scores.values()) / len(scores)  # noqa: E731
    best_elite = max(mean(state["scores"][i]) for i in archived)
    # the better of the merge and the best archived individual, by mean validation score
    assert mean(final["scores"]) == max(mean(final["merge_scores"]), best_elite)
    if final["chosen"] == "merge":
        assert final["scores"] == final["merge_scores"]
    else:
        assert final["chosen"] in archived
        assert final["scores"] == state["scores"][final["chosen"]]
    assert min(final["scores"].values()) > 0.6, final


def test_ties_final_merge_of_the_best_elites(tmp_path: Path) -> None:
    # density 1: sign election and disjoint mean only (trimming half of these small CNNs' task
    # vectors leaves both skills at chance: 0.49 / 0.51, measured)
    summary = cnn_search(
        tmp_path, {"crossover": "per_expert", "final_merge": {"kind": "ties", "density": 1.0}}
    )
    final = summary["final"]
    assert final["merge"] == "ties" and final["beta"] is None
    assert final["chosen"] == "merge" and final["scores"] == final["merge_scores"]
    # the final genome is the TIES merge of the distinct best elites, kept as a dense delta
    genome = Genome.load(tmp_path / "run" / "individuals" / "final.safetensors")
    assert genome.dense and all(float(c.abs().sum()) == 0.0 for c in genome.coeffs.values())
    assert min(final["scores"].values()) > 0.6, final


def test_search_in_the_ties_genome_space(tmp_path: Path) -> None:
    # basis.combine: ties: every child's expert parts are TIES-merged (density 1: sign election
    # and disjoint mean only, as above); the experts themselves are unchanged, so the search
    # still starts from them and keeps both skills in its final model (the TIES merge of the
    # best elites: a softmax merge would halve both parts before they are merged)
    summary = cnn_search(
        tmp_path,
        {"crossover": "per_expert", "final_merge": {"kind": "ties", "density": 1.0}},
        combine="ties",
        combine_density=1.0,
    )
    scores = summary["expert_scores"]
    assert scores["leftright"]["leftright"] > 0.8 and scores["topbottom"]["topbottom"] > 0.8
    assert min(summary["final"]["scores"].values()) > 0.6, summary["final"]


def test_assemble_final_merge_of_the_best_elites(tmp_path: Path) -> None:
    from cycleqd.merging.genome import Genome

    summary = cnn_search(tmp_path, {"crossover": "per_expert", "final_merge": "assemble"})
    final = summary["final"]
    assert final["merge"] == "assemble" and final["beta"] is None
    assert final["chosen"] == "merge" and final["scores"] == final["merge_scores"]
    # both archives' best elites are their experts here, so the merge is the experts' sum
    # (these CNN experts interfere, so it scores near chance: what anchoring is for)
    assert final["elites"] == ["expert-leftright", "expert-topbottom"]
    run = tmp_path / "run" / "individuals"
    experts = [Genome.load(run / f"{e}.safetensors") for e in final["elites"]]
    merged = Genome.load(run / "final.safetensors")
    for name, coeffs in merged.coeffs.items():
        torch.testing.assert_close(coeffs, experts[0].coeffs[name] + experts[1].coeffs[name])


class ScaleParams(StrictModel):
    factor: float = Field(default=0.5, gt=0.0)


def test_an_operator_in_one_new_module_is_usable_by_name(tmp_path: Path) -> None:
    """What adding an operator takes: a function and its parameter model, registered by name
    (here from this test module); configs and the loop find it with nothing else changed."""
    seen: list[float] = []

    @operator(MUTATIONS, "test-scale", ScaleParams)
    def scale(child: Genome, rng: torch.Generator, params: ScaleParams, ctx: Breeding) -> Genome:
        seen.append(params.factor)
        coeffs = {name: c * params.factor for name, c in child.coeffs.items()}
        return Genome(coeffs=coeffs, dense=dict(child.dense))

    try:
        search = {"mutation": {"kind": "test-scale", "factor": 0.9}}
        assert SearchConfig.model_validate(search).mutation.params.factor == 0.9
        summary = cnn_search(tmp_path, search)
    finally:
        MUTATIONS._entries.pop("test-scale")  # leave the package's registry as it was
    assert seen == [0.9] * 20 and summary["generations_done"] == 20
