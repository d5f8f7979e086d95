"""In-place materialisation equals the reference ``base + task_vector`` for every genome shape.

``Materialiser.load`` takes a fused path (one ``addmm`` into the parameter, zero-coefficient experts
skipped, the smaller factor scaled); ``Materialiser.weights`` and ``task_vector`` are the plain
formula. Tall, wide and convolution tensors, and genomes where 0, 1, 2 or 3 experts contribute
(including a gap in the middle) must agree.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cycleqd.merging.basis import build_basis
from cycleqd.merging.genome import Genome, combine, expert_genome
from cycleqd.merging.materialise import Materialiser
from cycleqd.merging.sources import DictSource


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tall = nn.Linear(6, 20)  # weight (20, 6): scale Vh
        self.wide = nn.Linear(20, 5)  # weight (5, 20): scale U
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.LayerNorm(5)


def _family(n_experts: int = 3) -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    base = Net()
    experts = []
    for _ in range(n_experts):
        sd = {k: v + 0.05 * torch.randn_like(v) for k, v in base.state_dict().items()}
        experts.append(sd)
    return base, experts


def test_load_matches_reference_weights() -> None:
    base, experts = _family()
    basis = build_basis(
        DictSource(base.state_dict()), {f"e{i}": DictSource(sd) for i, sd in enumerate(experts)}
    )
    resident = Net()
    mat = Materialiser(basis, DictSource(base.state_dict()), resident, torch.device("cpu"))
    e0, e1, e2 = (expert_genome(basis, i) for i in range(3))
    zero = combine([e0], [0.0])
    mutated = combine([e0, e2], [0.7, 0.3])  # expert 1's slot is a gap between two live ones
    mutated.coeffs["tall.weight"] = mutated.coeffs["tall.weight"] * 1.1
    dense = combine([e1], [1.0])
    dense.dense = {"wide.weight": 0.01 * torch.randn(5, 20)}
    every = combine([e0, e1, e2], [0.2, 0.3, 0.5])
    genomes: list[Genome] = [e0, e1, e2, zero, mutated, every, dense]
    for genome in genomes:
        mat.load(genome)
        want = mat.weights(genome)
        got = resident.state_dict()
        for name, tensor in want.items():
            torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    mat.load(e1)
    for name, tensor in experts[1].items():
        if name in basis.names:
            err = (resident.state_dict()[name] - tensor).norm() / tensor.norm()
            assert err <= 1e-5, name


def test_a_writer_receives_every_tensor_as_the_module_would_hold_it() -> None:
    """An engine whose parameters are not the checkpoint's tensors (vLLM fuses them) is given
    every tensor of a child, by checkpoint name, equal to what the in-place path writes."""
    base, experts = _family()
    basis = build_basis(
        DictSource(base.state_dict()), {f"e{i}": DictSource(sd) for i, sd in enumerate(experts)}
    )
    resident = Net()
    in_place = Materialiser(basis, DictSource(base.state_dict()), resident, torch.device("cpu"))
    written: list[dict[str, torch.Tensor]] = []
    by_writer = Materialiser(
        basis,
        DictSource(base.state_dict()),
        None,
        torch.device("cpu"),
        writer=lambda tensors: written.append(dict(tensors)),
    )
    e0, e1, _ = (expert_genome(basis, i) for i in range(3))
    for genome in (e0, combine([e0, e1], [0.5, 0.5]), combine([e0], [0.0])):
        in_place.load(genome)
        by_writer.load(genome)
        assert set(written[-1]) == set(basis.names)
        for name, tensor in written[-1].items():
            assert tensor.dtype == torch.float32
            torch.testing.assert_close(
                resident.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name
            )


def test_a_materialiser_takes_a_module_or_a_writer() -> None:
    base, experts = _family(2)
    basis = build_basis(
        DictSource(base.state_dict()), {f"e{i}": DictSource(sd) for i, sd in enumerate(experts)}
    )
    source = DictSource(base.state_dict())
    with pytest.raises(ValueError, match="module or a writer"):
        Materialiser(basis, source, None, torch.device("cpu"))
    with pytest.raises(ValueError, match="module or a writer"):
        Materialiser(basis, source, Net(), torch.device("cpu"), writer=lambda tensors: None)
