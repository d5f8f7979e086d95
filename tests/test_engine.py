"""The resident HF engine: batched greedy generation, likelihoods, in-place weight swaps."""

from __future__ import annotations

import pytest
import torch
from helpers import write_model_family
from transformers import AutoModelForCausalLM

from cycleqd.errors import CycleQDError
from cycleqd.merging.basis import build_basis
from cycleqd.merging.genome import expert_genome
from cycleqd.merging.materialise import Materialiser
from cycleqd.merging.sources import SafetensorsSource
from cycleqd.models.engine import HFEngine, cut_at_stop

PROMPTS = ["copy ab=", "1+2=", "rev abcdef=", "x"]


@pytest.fixture(scope="module", params=["llama", "qwen2", "gpt2"])
def arch_family(request, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp(request.param)
    return write_model_family(root, request.param, n_experts=2)


def test_batched_generation_equals_one_by_one(arch_family: dict) -> None:
    engine = HFEngine(arch_family["base"], batch_size=3)
    batched = engine.generate(PROMPTS, max_new_tokens=6, chat=False)
    single = [engine.generate([p], max_new_tokens=6, chat=False)[0] for p in PROMPTS]
    assert batched == single
    assert all(isinstance(x, str) for x in batched)
    chat = engine.generate(PROMPTS[:2], max_new_tokens=4, chat=True)
    assert len(chat) == 2


def test_likelihood_is_a_probability(arch_family: dict) -> None:
    engine = HFEngine(arch_family["base"], batch_size=2)
    scores = engine.target_likelihood(PROMPTS, ["ab", "3", "fedcba", "y"])
    assert all(0.0 < s < 1.0 for s in scores)
    single = engine.target_likelihood(PROMPTS[2:3], ["fedcba"])
    assert single[0] == pytest.approx(scores[2], rel=1e-4)


def test_in_place_materialisation_matches_the_expert_checkpoint(arch_family: dict) -> None:
    engine = HFEngine(arch_family["base"], dtype="float32")
    module_id = id(engine.module)
    base = SafetensorsSource(arch_family["base"])
    experts = {k: SafetensorsSource(v) for k, v in arch_family["experts"].items()}
    basis = build_basis(base, experts)
    mat = Materialiser(basis, base, engine.module, engine.device)
    mat.load(expert_genome(basis, 1))
    assert id(engine.module) == module_id
    expert = AutoModelForCausalLM.from_pretrained(arch_family["experts"]["e1"]).eval()
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    with torch.no_grad():
        ours = engine.module(input_ids=ids.to(engine.device)).logits.cpu()
        ref = expert(input_ids=ids).logits
    assert torch.allclose(ours, ref, atol=1e-4)


def test_stop_strings_cut_output() -> None:
    assert cut_at_stop("ls -l\nAct: bash", ["\nAct"]) == "ls -l"
    assert cut_at_stop("abc", ["z"]) == "abc"


def test_not_a_model_dir(tmp_path) -> None:
    with pytest.raises(CycleQDError, match=r"no config\.json"):
        HFEngine(tmp_path)


def test_until_stops_each_sequence_at_its_own_point(arch_family: dict) -> None:
    engine = HFEngine(arch_family["base"], batch_size=4)
    free = engine.generate(PROMPTS, max_new_tokens=12, chat=False)
    seen: list[str] = []

    def three_chars(text: str) -> bool:
        seen.append(text)
        return len(text) >= 3

    cut = engine.generate(PROMPTS, max_new_tokens=12, chat=False, until=three_chars)
    assert seen, "the predicate is consulted while decoding"
    for full, short in zip(free, cut, strict=True):
        assert full.startswith(short)  # greedy: the same text, only ended earlier
        if len(full) >= 3:
            assert 3 <= len(short) < len(full) or len(short) == len(full) <= 4


def test_shared_prefix_cache_gives_the_same_completions(arch_family: dict) -> None:
    preamble = "you are a careful agent; answer in the format shown below. "  # > 32 tokens
    prompts = [preamble + p for p in PROMPTS]
    shared = HFEngine(arch_family["base"], batch_size=3)
    plain = HFEngine(arch_family["base"], batch_size=3, prefix_sharing=False)
    ids = [shared._encode(p) for p in prompts]
    assert len(shared._shared_prefix(ids)) >= shared.min_shared_prefix
    assert plain._shared_prefix(ids) == []
    got = shared.generate(prompts, max_new_tokens=8, chat=False)
    want = plain.generate(prompts, max_new_tokens=8, chat=False)
    assert got == want
    # one prompt, or prompts sharing little, take the plain path
    assert shared._shared_prefix(ids[:1]) == []
    assert shared._shared_prefix([ids[0], [7, 8, 9]]) == []


def test_greedy_loop_matches_transformers_generate(arch_family: dict) -> None:
    """The engine's own decoding (finished rows leave the batch) gives transformers' greedy
    output, also when rows stop at different steps (``until`` and end of sequence)."""
    engine = HFEngine(arch_family["base"], batch_size=4, min_shared_prefix=2)
    tok = engine.tokenizer
    prompts = ["copy ab=", "copy abcd=", "1+2=", "rev abcdef="]
    until = lambda text: len(text) >= 3 and "a" in text  # noqa: E731
    got = engine.generate(prompts, max_new_tokens=8, chat=False, until=until)
    for prompt, text in zip(prompts, got, strict=True):
        ids = torch.tensor([engine._bos() + tok(prompt, add_special_tokens=False)["input_ids"]])
        ref = engine.model.generate(
            input_ids=ids.to(engine.device),
            attention_mask=torch.ones_like(ids).to(engine.device),
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )[0, ids.shape[1] :].tolist()
        full = ""
        for k in range(1, len(ref) + 1):  # cut where ``until`` first holds, as the engine does
            full = tok.decode(ref[:k], skip_special_tokens=True)
            if until(full):
                break
        assert text == full, prompt


def test_an_adapter_without_a_local_base_is_refused(tmp_path) -> None:
    from cycleqd.errors import CycleQDError

    (tmp_path / "adapter_config.json").write_text(
        '{"base_model_name_or_path": "org/some-hub-model"}'
    )
    with pytest.raises(CycleQDError, match="base_model_name_or_path 'org/some-hub-model' is not"):
        HFEngine(tmp_path)
