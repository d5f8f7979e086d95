"""peft LoRA adapters as experts: bases from their factors, exactly; what cannot be exact refused.

The adapters are made by peft itself on tiny real models (Llama, and GPT-2 whose Conv1D layers
store weights as (in, out)), with random A and B, and compared with peft's own merge.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from cycleqd.errors import CycleQDError
from cycleqd.merging.adapters import LoraSource, is_adapter, low_rank_svd, open_expert
from cycleqd.merging.basis import build_basis
from cycleqd.merging.genome import expert_genome
from cycleqd.merging.materialise import Materialiser
from cycleqd.merging.sources import SafetensorsSource
from cycleqd.testing.tiny import build_char_tokenizer, build_random_model

LLAMA_TARGETS = ["q_proj", "v_proj", "down_proj", "embed_tokens"]


def save_base(root: Path, arch: str = "llama", **size: int) -> Path:
    tok = build_char_tokenizer()
    model = build_random_model(arch, tok, seed=0, **size)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root


def make_adapter(base: Path, out: Path, *, seed: int, **config: object) -> dict:
    """A peft adapter with random A and B in ``out``; returns peft's merged state dict."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    settings = {"r": 4, "lora_alpha": 8, "target_modules": LLAMA_TARGETS, **config}
    peft_model = get_peft_model(model, LoraConfig(init_lora_weights=False, **settings))
    peft_model.save_pretrained(out)
    return {k: v.detach().clone() for k, v in peft_model.merge_and_unload().state_dict().items()}


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_base(tmp_path_factory.mktemp("llama") / "base")


def assert_materialises_to(base_dir: Path, adapter: Path, merged: dict) -> None:
    base = SafetensorsSource(base_dir)
    source = open_expert(adapter, base)
    assert isinstance(source, LoraSource) and is_adapter(adapter)
    basis = build_basis(base, {"a": source})
    resident = AutoModelForCausalLM.from_pretrained(base_dir)
    weights = Materialiser(basis, base, resident, torch.device("cpu")).weights(
        expert_genome(basis, 0)
    )
    for name, tensor in weights.items():
        want = merged[name].float()
        delta = (want - base.get(name).float()).norm()
        err = float((tensor - want).norm() / max(float(delta), 1e-12))
        assert err <= 1e-5 or float((tensor - want).abs().max()) <= 1e-6, (name, err)


def test_an_adapter_genome_is_peft_merged_adapter(llama: Path, tmp_path: Path) -> None:
    merged = make_adapter(llama, tmp_path / "a", seed=1)
    assert_materialises_to(llama, tmp_path / "a", merged)
    basis = build_basis(
        SafetensorsSource(llama), {"a": LoraSource(tmp_path / "a", SafetensorsSource(llama))}
    )
    # the adapted modules at the adapter's rank, everything else (k_proj, norms) at zero
    ranks = {n: m.rank for n, m in basis.matrices.items()}
    assert ranks["model.layers.0.self_attn.q_proj.weight"] == 4
    assert ranks["model.embed_tokens.weight"] == 4
    assert ranks["model.layers.0.self_attn.k_proj.weight"] == 0
    assert all(float(v.taus.abs().sum()) == 0.0 for v in basis.vectors.values())


def test_rslora_rank_and_alpha_patterns(llama: Path, tmp_path: Path) -> None:
    merged = make_adapter(
        llama,
        tmp_path / "a",
        seed=2,
        use_rslora=True,
        rank_pattern={"v_proj": 2},
        alpha_pattern={"down_proj": 3},
    )
    assert_materialises_to(llama, tmp_path / "a", merged)
    basis = build_basis(
        SafetensorsSource(llama), {"a": LoraSource(tmp_path / "a", SafetensorsSource(llama))}
    )
    assert basis.matrices["model.layers.1.self_attn.v_proj.weight"].rank == 2


def test_gpt2_conv1d_adapter(tmp_path: Path) -> None:
    base = save_base(tmp_path / "gpt2", "gpt2")
    merged = make_adapter(
        base, tmp_path / "a", seed=3, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True
    )
    assert_materialises_to(base, tmp_path / "a", merged)


def test_low_rank_svd_is_the_svd_of_the_product() -> None:
    gen = torch.Generator().manual_seed(0)
    left, right = torch.randn(30, 5, generator=gen), torch.randn(5, 12, generator=gen)
    u, s, vh = low_rank_svd(left, right)
    torch.testing.assert_close((u * s) @ vh, left @ right, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s, torch.linalg.svdvals(left @ right)[:5], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(u.T @ u, torch.eye(5), rtol=1e-5, atol=1e-5)


def test_dora_bias_and_modules_to_save_are_refused_naming_the_key(
    llama: Path, tmp_path: Path
) -> None:
    base = SafetensorsSource(llama)
    make_adapter(llama, tmp_path / "dora", seed=4, use_dora=True)
    with pytest.raises(CycleQDError, match=r"adapter_config\.json: use_dora: a DoRA adapter"):
        LoraSource(tmp_path / "dora", base)
    make_adapter(llama, tmp_path / "bias", seed=4, bias="lora_only")
    with pytest.raises(CycleQDError, match=r"adapter_config\.json: bias"):
        LoraSource(tmp_path / "bias", base)


def test_an_adapter_of_another_base_is_refused(llama: Path, tmp_path: Path) -> None:
    other = save_base(tmp_path / "other", hidden=32, intermediate=64)
    make_adapter(other, tmp_path / "a", seed=5)
    with pytest.raises(CycleQDError, match=r"adapter_model\.safetensors: .*another base"):
        LoraSource(tmp_path / "a", SafetensorsSource(llama))
    gpt2 = save_base(tmp_path / "gpt2", "gpt2")
    make_adapter(gpt2, tmp_path / "g", seed=5, target_modules=["c_attn"], fan_in_fan_out=True)
    with pytest.raises(CycleQDError, match=r"c_attn\.weight.*does not have"):
        LoraSource(tmp_path / "g", SafetensorsSource(llama))


def test_the_cli_refuses_a_dora_expert_with_exit_2_before_any_work(
    llama: Path, tmp_path: Path
) -> None:
    make_adapter(llama, tmp_path / "dora", seed=6, use_dora=True)
    make_adapter(llama, tmp_path / "plain", seed=7)
    data = tmp_path / "t.jsonl"
    data.write_text(json.dumps({"prompt": "copy ab=", "target": "ab"}) + "\n")
    config = {
        "base_model": str(llama),
        "experts": [
            {"name": "a", "path": str(tmp_path / "plain")},
            {"name": "b", "path": str(tmp_path / "dora")},
        ],
        "tasks": [
            {"name": "a", "type": "likelihood", "params": {"data": str(data)}},
            {"name": "b", "type": "likelihood", "params": {"data": str(data)}},
        ],
        "search": {"generations": 1},
    }
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(config))
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "cycleqd.cli", "run", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr
    assert "dora/adapter_config.json: use_dora" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_a_search_over_an_adapter_and_a_full_expert(llama: Path, tmp_path: Path) -> None:
    """Mixed experts end to end: the adapter seeds the archives with exactly the score of peft's
    merged model, and the search runs to a final model."""
    from helpers import perturbed_copy

    from cycleqd.models.engine import HFEngine
    from cycleqd.tasks import build_task

    merged = make_adapter(llama, tmp_path / "adapter", seed=8)
    full = AutoModelForCausalLM.from_pretrained(llama)
    full.load_state_dict(perturbed_copy(full, 9, rank=3, scale=0.05))
    full.save_pretrained(tmp_path / "full")
    reference = AutoModelForCausalLM.from_pretrained(llama)
    reference.load_state_dict(merged)
    reference.save_pretrained(tmp_path / "merged")
    for d in ("full", "merged"):
        build_char_tokenizer().save_pretrained(tmp_path / d)
    run = _run(tmp_path, llama, {"copy": tmp_path / "adapter", "rev": tmp_path / "full"}, 4)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["generations_done"] == 4 and summary["final"]["scores"]
    # state.json records each expert's kept rank per tensor group: the adapter's own rank
    ranks = json.loads((run / "state.json").read_text())["basis_ranks"]
    assert ranks["copy"]["model.layers.*.self_attn.q_proj.weight"] == 4
    assert ranks["copy"]["model.layers.*.self_attn.k_proj.weight"] == 0
    engine = HFEngine(tmp_path / "merged")
    data = {"data": str(tmp_path / "copy.jsonl")}
    want = build_task("copy", "likelihood", data, "t").evaluate(engine)
    assert summary["expert_scores"]["copy"]["copy"] == pytest.approx(want.quality, rel=1e-5)


def _two_skill_data(root: Path) -> dict[str, Path]:
    data = {}
    for name, skill in (("copy", "copy {w}="), ("rev", "rev {w}=")):
        data[name] = root / f"{name}.jsonl"
        rows = [{"prompt": skill.format(w=w), "target": w} for w in ("ab", "cde", "fg", "hij")]
        data[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def _run(
    root: Path,
    base: Path,
    experts: dict[str, Path],
    generations: int = 3,
    engine_dtype: str = "auto",
) -> Path:
    from cycleqd.config import load_config
    from cycleqd.search.run import start_run

    data = _two_skill_data(root)
    config = load_config(
        data={
            "base_model": str(base),
            "experts": [{"name": k, "path": str(v)} for k, v in experts.items()],
            "tasks": [
                {"name": t, "type": "likelihood", "params": {"data": str(p)}, "bc": {"bins": 4}}
                for t, p in data.items()
            ],
            "search": {"generations": generations, "plot_every": 0},
            "basis": {"cache_dir": str(root / "cache")},
            "engine": {"dtype": engine_dtype},
        }
    )
    start_run(config, root / "run")
    return root / "run"


def test_export_as_adapter_gives_the_full_exports_logits(llama: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    from cycleqd.search.run import export_run

    make_adapter(llama, tmp_path / "a", seed=10)
    make_adapter(llama, tmp_path / "b", seed=11, target_modules=["k_proj", "up_proj"])
    # the search evaluates in bfloat16; the float32 checkpoint's export is still exact
    experts = {"copy": tmp_path / "a", "rev": tmp_path / "b"}
    run = _run(tmp_path, llama, experts, engine_dtype="bfloat16")
    export_run(run, tmp_path / "full", final=True)
    adapter = export_run(run, tmp_path / "adapter", final=True, adapter=True)
    assert (adapter / "adapter_config.json").is_file()
    ids = torch.tensor([[1, 5, 9, 12, 3, 7]])
    full = AutoModelForCausalLM.from_pretrained(tmp_path / "full").eval()
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama), adapter)
    with torch.no_grad():
        want = full(input_ids=ids).logits
        got = peft_model.eval()(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # the engine (and so `cycleqd eval`) takes the adapter directory: its base, merged in memory
    from cycleqd.models.engine import HFEngine
    from cycleqd.tasks import build_task

    task = build_task("copy", "likelihood", {"data": str(tmp_path / "copy.jsonl")}, "t")
    from_adapter = task.evaluate(HFEngine(adapter, dtype="float32")).quality
    full_engine = HFEngine(tmp_path / "full", dtype="float32")
    assert from_adapter == pytest.approx(task.evaluate(full_engine).quality)
    # the exported adapter reads back as an expert, rank per module as the genome's
    back = LoraSource(adapter, SafetensorsSource(llama))
    assert back.factors("model.layers.0.self_attn.k_proj.weight") is not None
    # an individual by id works the same way (the first expert's genome is that adapter)
    again = export_run(run, tmp_path / "expert", individual="expert-copy", adapter=True)
    assert_materialises_to(llama, again, make_adapter(llama, tmp_path / "ref", seed=10))


def test_export_as_adapter_refuses_a_genome_that_is_not_low_rank(
    llama: Path, tmp_path: Path
) -> None:
    from helpers import perturbed_copy

    make_adapter(llama, tmp_path / "a", seed=12)
    full = AutoModelForCausalLM.from_pretrained(llama)
    full.load_state_dict(perturbed_copy(full, 13, rank=3, scale=0.05))  # norms change too
    full.save_pretrained(tmp_path / "full")
    build_char_tokenizer().save_pretrained(tmp_path / "full")
    run = _run(tmp_path, llama, {"copy": tmp_path / "a", "rev": tmp_path / "full"}, 1)
    out = tmp_path / "adapter"
    res = subprocess.run(
        [sys.executable, "-m", "cycleqd.cli", "export", str(run), "--individual", "expert-rev",
         "--adapter", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "cannot export as a LoRA adapter: 1-D tensor" in res.stderr
    assert "export the full model instead" in res.stderr and not out.exists()


def test_a_lora_merged_into_a_bf16_checkpoint_comes_out_at_the_loras_rank(
    tmp_path: Path,
) -> None:
    """bf16 rounding puts noise in every direction of the task vector, above rtol * s_max; the
    dtype's rounding floor (measured, see rounding_floor) removes exactly that."""
    tok = build_char_tokenizer()
    base = build_random_model("llama", tok, seed=0, hidden=128, intermediate=256).to(torch.bfloat16)
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    make_adapter(tmp_path / "base", tmp_path / "a", seed=14, target_modules=["q_proj", "up_proj"])
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.bfloat16)
    from peft import PeftModel

    merged = PeftModel.from_pretrained(model, tmp_path / "a").merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    src = SafetensorsSource(tmp_path / "merged")
    assert src.dtype("model.layers.0.self_attn.q_proj.weight") == torch.bfloat16
    basis = build_basis(SafetensorsSource(tmp_path / "base"), {"m": src})
    ranks = basis.ranks["m"]
    assert ranks["model.layers.*.self_attn.q_proj.weight"] == 4
    assert ranks["model.layers.*.mlp.up_proj.weight"] == 4
    assert ranks["model.layers.*.self_attn.k_proj.weight"] == 0  # untouched: no SVD, rank 0
    assert basis.fidelity["m"] < 0.05  # what is left out is the rounding noise alone
    # without the floor, rtol alone keeps the noise: the expert looks (nearly) full rank
    from cycleqd.merging.basis import as_matrix, keep_rank

    name = "model.layers.0.self_attn.q_proj.weight"
    tau = as_matrix(src.get(name).float() - SafetensorsSource(tmp_path / "base").get(name).float())
    assert keep_rank(torch.linalg.svdvals(tau), energy=1.0, rtol=1e-4) > 64
    # the singular vectors are kept in the checkpoint's bf16 (half the bytes), the values in
    # float32; the expert's own genome still gives its weights within bf16's rounding
    m = basis.matrices[name]
    assert m.U.dtype == m.Vh.dtype == torch.bfloat16 and m.S.dtype == torch.float32
    resident = AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.bfloat16)
    base = SafetensorsSource(tmp_path / "base")
    weights = Materialiser(basis, base, resident, torch.device("cpu")).weights(
        expert_genome(basis, 0), torch.bfloat16
    )
    for key in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight"):
        want, theta0 = src.get(key).float() - base.get(key).float(), base.get(key).float()
        err = float((weights[key].float() - theta0 - want).norm() / want.norm())
        assert err <= basis.fidelity["m"] + 0.01, key


def test_max_rank_takes_the_leading_directions_and_reports_the_loss() -> None:
    from cycleqd.merging.sources import DictSource

    gen = torch.Generator().manual_seed(3)
    base = {"w": torch.randn(160, 128, generator=gen)}
    # a task vector with a strong rank-6 part over a weak full-rank rest
    strong = torch.randn(160, 6, generator=gen) @ torch.randn(6, 128, generator=gen)
    tau = strong + 0.01 * torch.randn(160, 128, generator=gen)
    basis = build_basis(DictSource(base), {"e": DictSource({"w": base["w"] + tau})}, max_rank=6)
    m = basis.matrices["w"]
    assert m.rank == 6 and basis.ranks["e"] == {"w": 6}
    exact = torch.linalg.svd(tau, full_matrices=False)
    # the randomized SVD finds the leading subspace and values of the full one
    torch.testing.assert_close(m.S, exact.S[:6], rtol=1e-3, atol=1e-3)
    overlap = torch.linalg.svdvals(m.U.T @ exact.U[:, :6])
    assert float(overlap.min()) > 0.999
    want = float(exact.S[6:].square().sum().sqrt() / tau.norm())
    assert basis.fidelity["e"] == pytest.approx(want, rel=0.05) and basis.fidelity["e"] > 0


def test_merge_baselines_take_adapter_experts(llama: Path, tmp_path: Path) -> None:
    """mergekit applies each adapter to its base: task arithmetic of an adapter and a full expert
    is the base plus both task vectors, and linear without --base finds the adapter's base."""
    from cycleqd.merging.baselines import merge

    merged_a = make_adapter(llama, tmp_path / "a", seed=1)
    merged_b = make_adapter(llama, tmp_path / "b_adapter", seed=2)
    full_b = AutoModelForCausalLM.from_pretrained(llama)
    full_b.load_state_dict(merged_b)
    full_b.save_pretrained(tmp_path / "b")
    base = SafetensorsSource(llama)
    out = merge("task_arithmetic", llama, [tmp_path / "a", tmp_path / "b"], tmp_path / "ta")
    got = SafetensorsSource(out)
    for name in base.keys():  # noqa: SIM118 (a source, not a dict)
        theta = base.get(name).float()
        want = theta + (merged_a[name] - theta) + (merged_b[name] - theta)
        assert torch.allclose(got.get(name).float(), want, atol=1e-5), name
    out = merge("linear", None, [tmp_path / "a", tmp_path / "b_adapter"], tmp_path / "mean")
    got = SafetensorsSource(out)
    for name in base.keys():  # noqa: SIM118 (a source, not a dict)
        want = (merged_a[name] + merged_b[name]) / 2
        assert torch.allclose(got.get(name).float(), want, atol=1e-5), name
    assert not list(tmp_path.glob(".ta-*")), "the temporary build (and adapter merges) remain"
