"""Merge baselines through mergekit, checked against hand computations on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import perturbed_copy, write_model_family
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from cycleqd.errors import CycleQDError
from cycleqd.merging.baselines import METHODS, describe_method, merge, parse_params
from cycleqd.testing.tiny import build_char_tokenizer, build_random_model


def _state(path: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def states(family: dict) -> dict[str, dict[str, torch.Tensor]]:
    out = {"base": _state(family["base"])}
    out.update({name: _state(path) for name, path in family["experts"].items()})
    return out


EXPERTS = ("e0", "e1", "e2")


def _experts(family: dict) -> list[Path]:
    return [family["experts"][k] for k in EXPERTS]


def _assert_states(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-5, msg=key)


def test_task_arithmetic_matches_hand_computation(family: dict, states: dict, tmp_path: Path):
    weights = [0.5, 0.3, -0.2]
    out = merge(
        "task_arithmetic",
        family["base"],
        _experts(family),
        tmp_path / "ta",
        {"weight": weights, "lambda": 0.8},
    )
    base = states["base"]
    want = {
        k: base[k]
        + 0.8 * sum(w * (states[e][k] - base[k]) for w, e in zip(weights, EXPERTS, strict=True))
        for k in base
    }
    _assert_states(_state(out), want)
    tok = AutoTokenizer.from_pretrained(out)  # the base's tokenizer travels with the merge
    assert tok.chat_template == AutoTokenizer.from_pretrained(family["base"]).chat_template
    assert (out / "generation_config.json").is_file()
    # the dtype key transformers 5 reads (mergekit's torch_dtype would warn on every load)
    config = json.loads((out / "config.json").read_text())
    assert "torch_dtype" not in config and config["dtype"] == "float32"


def test_linear_is_the_weighted_average(family: dict, states: dict, tmp_path: Path) -> None:
    weights = [1.0, 2.0, 5.0]
    out = merge("linear", family["base"], _experts(family), tmp_path / "lin", {"weight": weights})
    want = {
        k: sum(w * states[e][k] for w, e in zip(weights, EXPERTS, strict=True)) / sum(weights)
        for k in states["base"]
    }
    _assert_states(_state(out), want)
    plain = merge("linear", None, _experts(family), tmp_path / "mean")  # default: equal weights
    mean = {k: sum(states[e][k] for e in EXPERTS) / 3 for k in states["base"]}
    _assert_states(_state(plain), mean)


@pytest.mark.parametrize("method", ["ties", "dare_linear", "dare_ties", "breadcrumbs", "della"])
def test_sparse_methods_give_loadable_models(
    family: dict, states: dict, tmp_path: Path, method: str
) -> None:
    out = merge(method, family["base"], _experts(family), tmp_path / method, {"density": 0.5})
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        logits = model(torch.tensor([[1, 9, 21, 22]])).logits
    assert torch.isfinite(logits).all()
    got = _state(out)
    base = states["base"]
    # The merge moved the weights, but not all of them: sparsification dropped some deltas.
    key = "model.layers.0.mlp.up_proj.weight"
    changed = (got[key] - base[key]).abs() > 1e-9
    assert 0.05 < changed.float().mean() < 0.95


def test_dare_is_reproducible_with_a_seed(family: dict, tmp_path: Path) -> None:
    params = {"density": 0.3, "weight": [0.4, 0.3, 0.3]}

    def run(name: str, seed: int) -> dict[str, torch.Tensor]:
        experts = _experts(family)
        return _state(
            merge("dare_ties", family["base"], experts, tmp_path / name, {**params, "seed": seed})
        )

    torch.manual_seed(123)
    a = run("a", 7)
    # mergekit reseeds globally; the caller's torch stream must be left where it was.
    assert (
        torch.rand(1).item() == torch.rand(1, generator=torch.Generator().manual_seed(123)).item()
    )
    b, c = run("b", 7), run("c", 8)
    key = "model.layers.1.self_attn.q_proj.weight"
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[key], c[key])


def test_dare_masks_do_not_depend_on_the_thread_count(tmp_path: Path) -> None:
    """torch draws CPU bernoulli masks per thread chunk; a seeded merge must not care."""
    # tensors large enough (256 x 512) for torch to split the mask across threads
    family = write_model_family(tmp_path, n_experts=2, hidden=256, intermediate=512)
    base, experts = family["base"], list(family["experts"].values())
    params = {"density": 0.5, "weight": 1.0, "seed": 3}
    threads = torch.get_num_threads()
    merged = {}
    try:
        for n in (1, 4):
            torch.set_num_threads(n)
            out = merge("dare_ties", base, experts, tmp_path / f"t{n}", params)
            merged[n] = _state(out)
            assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(merged[1][k], merged[4][k]) for k in merged[1])


def test_ties_single_expert_full_density_is_that_expert(
    family: dict, states: dict, tmp_path: Path
) -> None:
    """Nothing to trim and nobody to disagree with: TIES (normalised) must return the expert."""
    expert = [family["experts"]["e1"]]
    out = merge("ties", family["base"], expert, tmp_path / "t", {"density": 1.0})
    _assert_states(_state(out), states["e1"])


def test_bad_input_is_reported(family: dict, tmp_path: Path) -> None:
    experts = _experts(family)
    with pytest.raises(CycleQDError, match="unknown merge method 'soup'"):
        merge("soup", family["base"], experts, tmp_path / "o")
    with pytest.raises(CycleQDError, match=r"has no parameter .densty.; valid: .*density"):
        merge("ties", family["base"], experts, tmp_path / "o", {"densty": 0.5})
    with pytest.raises(CycleQDError, match="has 2 values for 3 experts"):
        merge("task_arithmetic", family["base"], experts, tmp_path / "o", {"weight": [1, 2]})
    with pytest.raises(CycleQDError, match="takes one value"):
        merge("ties", family["base"], experts, tmp_path / "o", {"lambda": [1, 2, 3]})
    with pytest.raises(CycleQDError, match="needs a base model"):
        merge("ties", None, experts, tmp_path / "o")
    with pytest.raises(CycleQDError, match="at least one expert"):
        merge("ties", family["base"], [], tmp_path / "o")
    with pytest.raises(CycleQDError, match="seed must be an integer"):
        merge("dare_ties", family["base"], experts, tmp_path / "o", {"seed": 1.5})
    with pytest.raises(CycleQDError, match="given twice"):
        merge("ties", family["base"], [experts[0], experts[0]], tmp_path / "o")
    with pytest.raises(CycleQDError, match=r"no config\.json"):
        merge("ties", family["base"], [tmp_path], tmp_path / "o")
    with pytest.raises(CycleQDError, match="is one of the models being merged"):
        merge("ties", family["base"], experts, experts[0], overwrite=True)
    with pytest.raises(CycleQDError, match="mergekit failed"):
        merge("ties", family["base"], experts, tmp_path / "o", {"density": "lots"})
    assert not (tmp_path / "o").exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(CycleQDError, match="not empty"):
        merge("linear", None, experts, busy)
    merge("linear", None, experts, busy, overwrite=True)
    assert not (busy / "x").exists() and (busy / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_parse_params_and_describe() -> None:
    assert parse_params(["weight=0.5,0.3", "normalize=false", "seed=3", "lambda=1e-1"]) == {
        "weight": [0.5, 0.3],
        "normalize": False,
        "seed": 3,
        "lambda": 0.1,
    }
    for bad in (["weight"], ["=1"], ["a=1", "a=2"], ["a="]):
        with pytest.raises(CycleQDError):
            parse_params(bad)
    assert set(METHODS) >= {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"}
    info = describe_method("dare_ties")
    assert info.uses_base and "density" in info.per_model and "lambda" in info.shared
    assert not describe_method("linear").uses_base


def test_tied_embeddings_survive_a_merge(tmp_path: Path) -> None:
    """SmolLM2 ties lm_head to the embeddings; a merge must keep one tied, merged matrix."""
    tok = build_char_tokenizer()
    kw = {"seed": 0, "hidden": 32, "intermediate": 64, "layers": 2, "tie_word_embeddings": True}
    base = build_random_model("llama", tok, **kw)
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    experts = []
    for i in (1, 2):
        expert = build_random_model("llama", tok, **kw)
        weights = perturbed_copy(base, i, rank=None, scale=0.05)
        weights.pop("lm_head.weight", None)  # tied: the embedding's delta is the head's
        expert.load_state_dict(weights, strict=False)
        expert.save_pretrained(tmp_path / f"e{i}")
        experts.append(tmp_path / f"e{i}")
    out = merge("task_arithmetic", tmp_path / "base", experts, tmp_path / "out", {"weight": 0.5})
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.config.tie_word_embeddings
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()
    key = "model.embed_tokens.weight"
    b, e1, e2 = (_state(p)[key] for p in (tmp_path / "base", *experts))
    torch.testing.assert_close(merged.state_dict()[key], b + 0.5 * (e1 - b) + 0.5 * (e2 - b))


def test_a_merge_keeps_the_checkpoints_dtype_unless_told(tmp_path: Path) -> None:
    """``dtype: auto`` (the default) writes a bf16 base's merge in bf16, not twice its size."""
    tok = build_char_tokenizer()
    for name, seed in (("base", 0), ("a", 1), ("b", 2)):
        model = build_random_model("llama", tok, seed=seed).to(torch.bfloat16)
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    experts = [tmp_path / "a", tmp_path / "b"]
    out = merge("task_arithmetic", tmp_path / "base", experts, tmp_path / "auto")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    weights = load_file(out / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.bfloat16}
    wide = merge("linear", None, experts, tmp_path / "wide", dtype="float32")
    assert {w.dtype for w in load_file(wide / "model.safetensors").values()} == {torch.float32}
