"""The vLLM engine against the transformers engine, on a tiny Llama with a real tokenizer.

Both run in float32 on the CPU, so greedy tokens must be equal and log-likelihoods equal to
1e-4: a difference would be the engine's (prompt building, stop rule, weight swap), not rounding.
vLLM's CPU attention wants a head size it has kernels for, hence 64 (two heads of a 128-wide
model). vLLM is an optional extra: CI installs it (``make test`` does), and outside CI these
tests skip when it is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from helpers import base_config, write_model_family, write_tasks
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from cycleqd.config import RunConfig
from cycleqd.errors import CycleQDError
from cycleqd.models import vllm_engine
from cycleqd.models.engine import HFEngine
from cycleqd.models.vllm_engine import VLLMEngine, vllm_available

if not vllm_available():
    if os.environ.get("CI"):
        pytest.fail("CI installs vLLM (make test); it does not import here", pytrace=False)
    pytest.skip("vLLM is not installed (pip install 'cycleqd[vllm]')", allow_module_level=True)

PROMPTS = [
    "abc def",
    "hello world how are you",
    "copy xy=",
    "1+2=",
    "a much longer prompt that shares nothing with the others",
]


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("vllm-family")
    fam = write_model_family(root, hidden=128, intermediate=256, heads=2, n_experts=2)
    fam["data"] = write_tasks(root)
    return fam


@pytest.fixture(scope="module")
def engines(family: dict) -> tuple[HFEngine, VLLMEngine]:
    hf = HFEngine(family["base"], device="cpu", dtype="float32")
    vl = VLLMEngine(family["base"], device="cpu", dtype="float32", compile=False)
    return hf, vl


def perturbed(model_dir: Path, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint moved by seeded noise (embeddings and norms too)."""
    gen = torch.Generator().manual_seed(seed)
    state = load_file(str(model_dir / "model.safetensors"))
    return {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in state.items()}


def test_greedy_tokens_equal_the_transformers_engine(engines) -> None:
    hf, vl = engines
    for kwargs in (
        {"max_new_tokens": 24},
        {"max_new_tokens": 24, "stop": ["a", "\n"]},
        {"max_new_tokens": 24, "until": lambda text: len(text) >= 5},
        {"max_new_tokens": 24, "chat": False},
    ):
        assert vl.generate(PROMPTS, **kwargs) == hf.generate(PROMPTS, **kwargs), kwargs


def test_until_ends_a_reply_where_it_first_holds(engines) -> None:
    _, vl = engines
    long = vl.generate(PROMPTS[:2], max_new_tokens=24)
    cut = vl.generate(PROMPTS[:2], max_new_tokens=24, until=lambda text: len(text) >= 5)
    for whole, part in zip(long, cut, strict=True):
        assert whole.startswith(part)
        assert len(part) == min(5, len(whole))


def test_an_error_mid_generation_leaves_no_request_behind(engines) -> None:
    _, vl = engines
    before = vl.generate(PROMPTS, max_new_tokens=8)

    def broken(text: str) -> bool:
        raise RuntimeError("a task's predicate failed")

    with pytest.raises(RuntimeError, match="predicate failed"):
        vl.generate(PROMPTS, max_new_tokens=8, until=broken)
    assert not vl.llm.llm_engine.has_unfinished_requests()
    assert vl.generate(PROMPTS, max_new_tokens=8) == before
    with pytest.raises(CycleQDError, match="vllm_max_model_len"):
        vl.generate(["x" * 600], max_new_tokens=8, chat=False)


def test_likelihoods_equal_the_transformers_engine(engines) -> None:
    hf, vl = engines
    contexts = ["copy ab=", "copy ab=", "", "1+2= "]
    continuations = ["ab", "ba", "xyz", "3"]
    assert vl.loglikelihood(contexts, continuations) == pytest.approx(
        hf.loglikelihood(contexts, continuations), abs=1e-4
    )
    targets = ["ab", "", "hello", "3"]
    for chat in (False, True):
        assert vl.target_likelihood(PROMPTS[:4], targets, chat=chat) == pytest.approx(
            hf.target_likelihood(PROMPTS[:4], targets, chat=chat), abs=1e-4
        )


def test_likelihoods_asked_in_chunks_keep_their_order(
    engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many pairs go to vLLM a chunk at a time (the heap handed back between chunks); each
    answer stays with its own pair."""
    hf, vl = engines
    contexts = [f"copy {a}{b}=" for a in "abcd" for b in "xyz"]
    continuations = [c[5:7] for c in contexts]
    whole = vl.loglikelihood(contexts, continuations)
    monkeypatch.setattr(vllm_engine, "SCORE_CHUNK", 5)
    assert vl.loglikelihood(contexts, continuations) == pytest.approx(whole, abs=1e-5)
    assert whole == pytest.approx(hf.loglikelihood(contexts, continuations), abs=1e-4)


def test_weight_swap_gives_each_child_its_own_outputs(family: dict, engines) -> None:
    """Two children in turn, then the first again: each answers as transformers does with its
    weights, so nothing leaks between them (the prefix cache is reset with the weights)."""
    _, vl = engines
    reference = AutoModelForCausalLM.from_pretrained(family["base"], dtype=torch.float32)
    shared = [f"a shared instruction for every prompt, then {p}" for p in PROMPTS]
    answers = {}
    try:
        for seed in (1, 2, 1):
            weights = perturbed(family["base"], seed)
            vl.write_weights(weights.items())
            reference.load_state_dict(weights)
            hf = HFEngine.__new__(HFEngine)
            hf.__dict__.update(engines[0].__dict__, model=reference)
            got = vl.generate(shared, max_new_tokens=16)
            assert got == hf.generate(shared, max_new_tokens=16), seed
            assert vl.loglikelihood(["copy ab="], ["ab"]) == pytest.approx(
                hf.loglikelihood(["copy ab="], ["ab"]), abs=1e-4
            )
            answers.setdefault(seed, got)
            assert answers[seed] == got
        assert answers[1] != answers[2]
    finally:
        vl.write_weights(load_file(str(family["base"] / "model.safetensors")).items())


def test_a_peft_adapter_directory_answers_as_on_transformers(family: dict, tmp_path: Path) -> None:
    """An adapter given as the model is merged into its base in the checkpoint's dtype, as the
    transformers engine merges it, then written into vLLM."""
    from peft import LoraConfig, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(family["base"], dtype=torch.float32)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    gen = torch.Generator().manual_seed(0)
    for name, param in lora.named_parameters():
        if "lora_B" in name:  # peft starts B at zero
            param.data = 0.2 * torch.randn(param.shape, generator=gen)
    lora.save_pretrained(tmp_path / "adapter")  # names its base by the path loaded from
    hf = HFEngine(tmp_path / "adapter", device="cpu", dtype="float32")
    vl = VLLMEngine(tmp_path / "adapter", device="cpu", dtype="float32", compile=False)
    base = HFEngine(family["base"], device="cpu", dtype="float32")
    got = vl.generate(PROMPTS, max_new_tokens=16)
    assert got == hf.generate(PROMPTS, max_new_tokens=16)
    assert got != base.generate(PROMPTS, max_new_tokens=16)
    del vl


def test_a_slot_writes_each_next_model_into_its_one_engine(family: dict, tmp_path: Path) -> None:
    """The demo's test evaluation: models of one architecture take turns in one vLLM engine,
    each answering as a transformers engine holding it alone, an adapter among them."""
    from peft import LoraConfig, get_peft_model

    from cycleqd.models.engines import EngineSlot

    model = AutoModelForCausalLM.from_pretrained(family["base"], dtype=torch.float32)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    gen = torch.Generator().manual_seed(5)
    for name, param in lora.named_parameters():
        if "lora_B" in name:
            param.data = 0.2 * torch.randn(param.shape, generator=gen)
    lora.save_pretrained(tmp_path / "adapter")
    settings = {"kind": "vllm", "device": "cpu", "dtype": "float32", "vllm_compile": False}
    models = [family["base"], *family["experts"].values(), tmp_path / "adapter", family["base"]]
    answers = []
    with EngineSlot() as slot:
        for model_dir in models:
            engine = slot.open(model_dir, settings)
            got = engine.generate(PROMPTS, max_new_tokens=16)
            assert got == HFEngine(model_dir, device="cpu", dtype="float32").generate(
                PROMPTS, max_new_tokens=16
            ), model_dir
            answers.append(got)
        assert slot.opened == 1
    assert answers[0] == answers[-1]
    assert len({tuple(a) for a in answers}) == len(models) - 1


def test_groups_are_refused_with_the_reason(engines) -> None:
    _, vl = engines
    with pytest.raises(CycleQDError, match="children_per_batch"):
        vl.generate(PROMPTS[:2], groups=[0, 1])


def test_save_writes_the_given_weights_as_a_model_directory(
    family: dict, engines, tmp_path: Path
) -> None:
    _, vl = engines
    weights = perturbed(family["base"], 3)
    vl.save(tmp_path / "out", weights)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    state = loaded.state_dict()
    for name, tensor in weights.items():
        assert torch.equal(state[name], tensor), name
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "float32"
    assert (tmp_path / "out" / "tokenizer.json").is_file()


def test_closing_an_engine_hands_back_its_kv_cache(family: dict) -> None:
    """A closed engine's KV cache leaves the process (dropping the engine alone kept it), and
    closing twice is harmless."""
    from cycleqd.resources import release_memory, rss_bytes

    engine = VLLMEngine(
        family["base"], device="cpu", dtype="float32", compile=False, kv_cache_gb=0.5
    )
    assert engine.generate(PROMPTS[:1], max_new_tokens=4)
    release_memory()
    held = rss_bytes()
    engine.close()
    engine.close()
    release_memory()
    assert held - rss_bytes() > 0.4 * 2**30


def test_a_search_on_vllm_scores_children_as_on_transformers(
    family: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same seeded search with engine.kind hf and vllm: the same children, the same scores
    (within float32 kernel rounding), the same archives; the run closes its vLLM engine."""
    from cycleqd.search.run import start_run

    closed: list[VLLMEngine] = []
    close = VLLMEngine.close

    def spy(engine: VLLMEngine) -> None:
        closed.append(engine)
        close(engine)

    monkeypatch.setattr(VLLMEngine, "close", spy)
    summaries = {}
    for kind in ("hf", "vllm"):
        data = base_config(family, tmp_path / kind, generations=3)
        data["engine"] = {"kind": kind, "dtype": "float32", "device": "cpu", "vllm_compile": False}
        config = RunConfig.model_validate(data)
        out = tmp_path / kind / "out"
        start_run(config, out)
        summaries[kind] = json.loads((out / "summary.json").read_text())
        assert (out / "final" / "model.safetensors").is_file() or any(
            (out / "final").glob("*.safetensors")
        )
    assert len(closed) == 1 and "llm" not in vars(closed[0])
    hf, vl = summaries["hf"], summaries["vllm"]
    for task, score in hf["final"]["scores"].items():
        assert vl["final"]["scores"][task] == pytest.approx(score, abs=1e-4), task


def test_a_search_in_a_slot_leaves_its_engine_to_the_next_model(
    family: dict, tmp_path: Path
) -> None:
    """The demo's stages: a search scores its children in the slot's engine and leaves it open;
    the next model is written into that same engine and answers as it does alone."""
    from cycleqd.models.engines import EngineSlot
    from cycleqd.search.run import start_or_resume_run

    data = base_config(family, tmp_path, generations=2)
    data["engine"] = {"kind": "vllm", "dtype": "float32", "device": "cpu", "vllm_compile": False}
    config = RunConfig.model_validate(data)
    expert = next(iter(family["experts"].values()))
    with EngineSlot() as slot:
        start_or_resume_run(config, tmp_path / "out", slot=slot)
        engine = slot.open(expert, config.engine.model_dump())
        assert slot.opened == 1
        got = engine.generate(PROMPTS, max_new_tokens=16)
    assert got == HFEngine(expert, device="cpu", dtype="float32").generate(
        PROMPTS, max_new_tokens=16
    )


def test_vllm_refuses_children_sharing_passes(family: dict, tmp_path: Path) -> None:
    data = base_config(family, tmp_path)
    data["engine"] = {"kind": "vllm"}
    data["executor"] = {"children_per_batch": 2}
    with pytest.raises(ValueError, match="children_per_batch 2"):
        RunConfig.model_validate(yaml.safe_load(yaml.safe_dump(data)))


def test_ray_actors_each_hold_a_vllm_engine(family: dict, tmp_path: Path) -> None:
    """The Ray executor's actors build the engine the config names: a run on a vLLM actor goes
    to its end and scores its final model."""
    pytest.importorskip("ray")
    from cycleqd.search.run import start_run

    data = base_config(family, tmp_path, generations=2)
    data["engine"] = {"kind": "vllm", "dtype": "float32", "device": "cpu", "vllm_compile": False}
    data["executor"] = {"kind": "ray", "actors": 1, "actor_cpus": 0.5}
    start_run(RunConfig.model_validate(data), tmp_path / "ray")
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["generations_done"] == 2
    assert set(summary["final"]["scores"]) == {"copy", "add"}
    config = yaml.safe_load((tmp_path / "ray" / "config.yaml").read_text())
    assert config["engine"]["kind"] == "vllm"
