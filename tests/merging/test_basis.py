"""Expert SVD bases and the genome representation."""

from __future__ import annotations

import pytest
import torch

from cycleqd.errors import CycleQDError
from cycleqd.merging.basis import build_basis, keep_rank, load_or_build_basis
from cycleqd.merging.genome import Genome, expert_genome, task_vector
from cycleqd.merging.sources import DictSource, SafetensorsSource


def make_states(seed: int = 0) -> tuple[dict, dict]:
    """A base state dict with a linear, a conv kernel, a bias and a norm, and two experts."""
    gen = torch.Generator().manual_seed(seed)
    base = {
        "lin.weight": torch.randn(12, 8, generator=gen),
        "conv.weight": torch.randn(6, 3, 3, 3, generator=gen),
        "lin.bias": torch.randn(12, generator=gen),
        "norm.weight": torch.ones(8),
        "steps": torch.tensor(3, dtype=torch.int64),
    }
    experts = {}
    for e in range(2):
        experts[f"x{e}"] = {
            k: (v + 0.1 * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
            for k, v in base.items()
        }
    return base, experts


def sources(base: dict, experts: dict) -> tuple[DictSource, dict]:
    return DictSource(base), {k: DictSource(v) for k, v in experts.items()}


def test_expert_genome_reproduces_expert_weights() -> None:
    base, experts = make_states()
    basis = build_basis(*sources(base, experts))
    assert set(basis.matrices) == {"lin.weight", "conv.weight"}
    assert set(basis.vectors) == {"lin.bias", "norm.weight"}  # integer buffers are not merged
    for e, name in enumerate(experts):
        genome = expert_genome(basis, e)
        for tensor in basis.names:
            theta = base[tensor] + task_vector(basis, genome, tensor)
            rel = (theta - experts[name][tensor]).norm() / experts[name][tensor].norm()
            assert rel <= 1e-5, (name, tensor, float(rel))


def test_low_rank_task_vector_keeps_its_rank() -> None:
    gen = torch.Generator().manual_seed(1)
    base = {"w": torch.randn(64, 48, generator=gen)}
    lora = base["w"] + torch.randn(64, 16, generator=gen) @ torch.randn(16, 48, generator=gen)
    basis = build_basis(DictSource(base), {"lora": DictSource({"w": lora})})
    assert basis.matrices["w"].rank == 16
    rel = (task_vector(basis, expert_genome(basis, 0), "w") - (lora - base["w"])).norm()
    assert rel / (lora - base["w"]).norm() < 1e-5


def test_keep_rank_energy() -> None:
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert keep_rank(s, energy=1.0, rtol=1e-6) == 3
    # energies: 9/14, 13/14, 14/14
    assert keep_rank(s, energy=0.6, rtol=1e-6) == 1
    assert keep_rank(s, energy=0.9, rtol=1e-6) == 2
    assert keep_rank(torch.zeros(3), energy=1.0, rtol=1e-6) == 0


def test_energy_truncation_shrinks_basis() -> None:
    base, experts = make_states()
    full = build_basis(*sources(base, experts))
    cut = build_basis(*sources(base, experts), energy=0.5)
    assert cut.matrices["lin.weight"].rank < full.matrices["lin.weight"].rank


def test_mismatched_expert_is_refused_naming_the_tensor() -> None:
    base, experts = make_states()
    bad = dict(experts["x1"])
    bad["lin.weight"] = torch.zeros(12, 9)
    with pytest.raises(CycleQDError, match=r"tensor 'lin\.weight' has shape \[12, 9\]"):
        build_basis(DictSource(base), {"x0": DictSource(experts["x0"]), "x1": DictSource(bad)})
    missing = {k: v for k, v in experts["x1"].items() if k != "norm.weight"}
    with pytest.raises(CycleQDError, match=r"tensor 'norm\.weight' is missing"):
        build_basis(DictSource(base), {"x1": DictSource(missing)})
    extra = {**experts["x1"], "new.weight": torch.zeros(2)}
    with pytest.raises(CycleQDError, match=r"tensor 'new\.weight' is not in the base"):
        build_basis(DictSource(base), {"x1": DictSource(extra)})


def test_hf_config_mismatch_is_refused(family: dict, tmp_path) -> None:
    import json
    import shutil

    other = tmp_path / "other"
    shutil.copytree(family["experts"]["e0"], other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["vocab_size"] += 1
    (other / "config.json").write_text(json.dumps(cfg))
    base = SafetensorsSource(family["base"])
    with pytest.raises(CycleQDError, match="vocab_size"):
        build_basis(base, {"bad": SafetensorsSource(other)})


def test_missing_weights_file_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CycleQDError, match=r"no model\.safetensors"):
        SafetensorsSource(tmp_path)
    with pytest.raises(CycleQDError, match="not found"):
        SafetensorsSource(tmp_path / "nope")


def test_basis_cache_round_trip(tmp_path) -> None:
    base, experts = make_states()
    first = load_or_build_basis(*sources(base, experts), cache_dir=tmp_path)
    files = list((tmp_path / "bases").iterdir())
    assert len(files) == 1
    second = load_or_build_basis(*sources(base, experts), cache_dir=tmp_path)
    assert second.fingerprint == first.fingerprint
    for name, m in first.matrices.items():
        assert torch.equal(m.U, second.matrices[name].U)
        assert m.offsets == second.matrices[name].offsets
    # different content, different cache entry
    experts["x0"]["lin.bias"] = experts["x0"]["lin.bias"] + 1
    load_or_build_basis(*sources(base, experts), cache_dir=tmp_path)
    assert len(list((tmp_path / "bases").iterdir())) == 2


def test_genome_save_load_and_corruption(tmp_path) -> None:
    base, experts = make_states()
    basis = build_basis(*sources(base, experts))
    genome = expert_genome(basis, 1)
    genome.dense["lin.bias"] = torch.ones(12)
    genome.save(tmp_path / "g.safetensors")
    back = Genome.load(tmp_path / "g.safetensors")
    assert all(torch.equal(genome.coeffs[k], back.coeffs[k]) for k in genome.coeffs)
    assert torch.equal(back.dense["lin.bias"], torch.ones(12))
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CycleQDError, match=r"bad\.safetensors"):
        Genome.load(tmp_path / "bad.safetensors")


def test_tsv_basis_is_orthonormal_and_reports_its_fidelity(tmp_path) -> None:
    """Hand check: the polar factor of [U_1 U_2] has orthonormal columns, is the nearest such
    matrix (U (U^T U)^(-1/2)), and an expert's genome moves by the reported relative error."""
    gen = torch.Generator().manual_seed(2)
    base = {"w": torch.randn(40, 30, generator=gen)}
    shared = torch.randn(40, 1, generator=gen)  # both experts use a nearly common direction
    experts = {}
    for e in range(2):
        near = shared + 0.3 * torch.randn(40, 1, generator=gen)
        left = torch.cat([near, torch.randn(40, 3, generator=gen)], 1)
        experts[f"x{e}"] = {"w": base["w"] + left @ torch.randn(4, 30, generator=gen)}
    svd = build_basis(*sources(base, experts))
    tsv = build_basis(*sources(base, experts), kind="tsv")
    m, plain = tsv.matrices["w"], svd.matrices["w"]
    assert torch.allclose(m.U.T @ m.U, torch.eye(m.rank), atol=1e-5)
    assert torch.allclose(m.Vh @ m.Vh.T, torch.eye(m.rank), atol=1e-5)
    gram = plain.U.T.double() @ plain.U.double()
    evals, evecs = torch.linalg.eigh(gram)
    inv_sqrt = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    assert torch.allclose(m.U.double(), plain.U.double() @ inv_sqrt, atol=1e-4)
    assert torch.equal(m.S, plain.S)
    for e, name in enumerate(experts):
        tau = experts[name]["w"] - base["w"]
        approx = task_vector(tsv, expert_genome(tsv, e), "w")
        rel = float((approx - tau).norm() / tau.norm())
        assert tsv.fidelity[name] == pytest.approx(rel, rel=1e-4)
        assert 1e-3 < rel < 1.0  # the shared direction moved; the expert is approximated
    # plain SVD bases lose only the float32 rounding that rtol drops
    assert set(svd.fidelity) == {"x0", "x1"} and max(svd.fidelity.values()) < 1e-5
    # the kind is part of the cache key and survives the round trip
    a = load_or_build_basis(*sources(base, experts), cache_dir=tmp_path, kind="tsv")
    b = load_or_build_basis(*sources(base, experts), cache_dir=tmp_path, kind="tsv")
    c = load_or_build_basis(*sources(base, experts), cache_dir=tmp_path)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert b.kind == "tsv" and b.fidelity == pytest.approx(tsv.fidelity)
    with pytest.raises(CycleQDError, match="unknown basis kind"):
        build_basis(*sources(base, experts), kind="nope")
