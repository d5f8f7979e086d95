"""Tests for the tiny model builder (cycleqd.testing.tiny).

The tiny suite underpins the other tests and the tiny example, so these check that its pieces
are real Hugging Face artefacts (save/reload through the Auto classes, ``generate`` works) and
that the experts really are experts: each beats the base and the other experts on its skill.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cycleqd.tasks.simple import read_prompt_targets
from cycleqd.tasks.suites import write_samples
from cycleqd.testing.tiny import (
    ARCHS,
    EVAL_SEED_OFFSET,
    SKILLS,
    TinySuite,
    build_char_tokenizer,
    build_random_model,
    build_tiny_suite,
    encode_prompt,
    encode_sample,
    likelihoods,
    make_samples,
    train,
)

TEXTS = [
    "copy abc=",
    "rev xyz=zyx",
    "12+7=19",
    "a b  c\nnext line: (x) [y] _'\"? <> , . - ",
    "",
    " leading and trailing ",
]

# Small but still clearly separating settings; the defaults are larger (see build_tiny_suite).
SUITE_KW = {
    "base_epochs": 2,
    "expert_epochs": 6,
    "expert_lr": 1e-3,
    "n_train": 500,
    "n_eval": 64,
}


@pytest.fixture(scope="session")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(scope="session")
def suite(tmp_path_factory: pytest.TempPathFactory) -> TinySuite:
    return build_tiny_suite(tmp_path_factory.mktemp("tiny_suite"), arch="llama", **SUITE_KW)


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_round_trips_text(tokenizer) -> None:
    for text in TEXTS:
        ids = tokenizer(text).input_ids
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        # One token per character (plus bos): what makes the skills learnable by a tiny model.
        assert len(ids) == len(text) + 1


def test_tokenizer_special_tokens_and_unknowns(tokenizer) -> None:
    assert tokenizer.padding_side == "left"
    ids = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}
    assert len(ids) == 3 and None not in ids
    assert tokenizer.unk_token_id is not None
    assert tokenizer("é").input_ids == [tokenizer.bos_token_id, tokenizer.unk_token_id]
    for role in ("<|user|>", "<|assistant|>", "<|system|>"):
        assert len(tokenizer(role, add_special_tokens=False).input_ids) == 1


def test_tokenizer_reloads_with_auto_tokenizer(tmp_path: Path, tokenizer) -> None:
    build_char_tokenizer(tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert reloaded.padding_side == "left"
    assert reloaded.get_vocab() == tokenizer.get_vocab()
    for text in TEXTS:
        assert reloaded(text).input_ids == tokenizer(text).input_ids
        assert reloaded.decode(reloaded(text).input_ids, skip_special_tokens=True) == text
    rendered = reloaded.apply_chat_template(
        [{"role": "user", "content": "copy ab="}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<s><|user|>copy ab=\n<|assistant|>"
    assert encode_prompt(reloaded, "copy ab=", chat=True)[0] == reloaded.bos_token_id


def test_batch_padding_is_left(tokenizer) -> None:
    batch = tokenizer(["ab", "abcd"], padding=True, return_tensors="pt")
    assert batch.input_ids[0, 0].item() == tokenizer.pad_token_id
    assert batch.attention_mask[0].tolist() == [0, 0, 1, 1, 1]


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("arch", ARCHS)
def test_random_model_saves_loads_and_generates(arch: str, tmp_path: Path, tokenizer) -> None:
    model = build_random_model(arch, tokenizer, seed=0)
    assert model.config.model_type == arch
    assert model.dtype == torch.float32
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.config.eos_token_id == tokenizer.eos_token_id
    model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name

    batch = tok(["copy ab=", "12+3="], padding=True, return_tensors="pt")
    out = loaded.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 2
    assert 1 <= out.shape[1] - batch.input_ids.shape[1] <= 4
    # Same seed, same weights: initialisation is reproducible.
    again = build_random_model(arch, tokenizer, seed=0)
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True)
    )


def test_tied_embeddings_survive_reload(tmp_path: Path, tokenizer) -> None:
    model = build_random_model("llama", tokenizer, seed=1, tie_word_embeddings=True)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    model.save_pretrained(tmp_path, safe_serialization=True)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight


# ----------------------------------------------------------------------------- data


def test_samples_are_seeded_and_well_formed(tmp_path: Path) -> None:
    for skill in SKILLS:
        a = make_samples(skill, 50, seed=3)
        assert a == make_samples(skill, 50, seed=3)
        assert a != make_samples(skill, 50, seed=4)
        assert all(set(s) == {"prompt", "target"} and s["target"] for s in a)
        assert all(not s["target"].endswith("\n") for s in a)
    assert all(s["prompt"] == f"copy {s['target']}=" for s in make_samples("copy", 20, 0))
    assert all(s["prompt"] == f"rev {s['target'][::-1]}=" for s in make_samples("rev", 20, 0))
    for s in make_samples("add", 20, 0):
        a, b = s["prompt"].rstrip("=").split("+")
        assert int(s["target"]) == int(a) + int(b)
    # Skills are told apart by their prompts alone.
    prefixes = [{s["prompt"][:3] for s in make_samples(k, 50, 0)} for k in SKILLS]
    assert not (prefixes[0] & prefixes[1]) and not (prefixes[0] & prefixes[2])
    with pytest.raises(ValueError):
        make_samples("nope", 1, 0)

    samples = make_samples("rev", 10, 0)
    path = tmp_path / "d" / "rev.jsonl"
    write_samples(path, samples)
    assert read_prompt_targets(path) == samples


def test_a_sample_learns_its_target_and_eos_only(tokenizer) -> None:
    encoded = encode_sample(tokenizer, {"prompt": "copy ab=", "target": "ab"})
    prompt = encode_prompt(tokenizer, "copy ab=")
    assert encoded.input_ids[: len(prompt)] == prompt
    learned = [t for t in encoded.labels if t != -100]
    assert learned == [*tokenizer("ab", add_special_tokens=False).input_ids, tokenizer.eos_token_id]


def test_training_is_deterministic_and_learns(tmp_path: Path, tokenizer) -> None:
    """The package's own training loop, scored by its own engine and likelihood task."""
    samples = make_samples("copy", 200, 0)
    data = tmp_path / "copy.jsonl"
    write_samples(data, make_samples("copy", 32, 9))
    curves, scores = [], []
    for run in range(2):
        model = build_random_model("llama", tokenizer, seed=0)
        if run == 0:
            model.save_pretrained(tmp_path / "before")
            tokenizer.save_pretrained(tmp_path / "before")
            before = likelihoods(tmp_path / "before", {"copy": data})["copy"]
        curves.append(train(model, tokenizer, samples, epochs=3, lr=3e-3, batch_size=16, seed=5))
        model.save_pretrained(tmp_path / f"after{run}")
        tokenizer.save_pretrained(tmp_path / f"after{run}")
        scores.append(likelihoods(tmp_path / f"after{run}", {"copy": data})["copy"])
    assert curves[0] == curves[1] and scores[0] == scores[1]
    assert len(curves[0]) == 3 * 13  # three epochs of 13 batches (the last of 8 samples)
    assert sum(curves[0][-5:]) < sum(curves[0][:5])
    assert scores[0] > before
    assert not model.training


# ----------------------------------------------------------------------------- suite


def test_suite_layout_and_reload(suite: TinySuite) -> None:
    manifest = json.loads((suite.root / "suite.json").read_text())
    assert manifest["skills"] == list(SKILLS)
    assert TinySuite.load(suite.root) == suite
    assert set(suite.experts) == set(SKILLS) == set(suite.data)
    for skill, path in suite.data.items():
        rows = read_prompt_targets(path)
        assert len(rows) == SUITE_KW["n_eval"]
        assert rows == make_samples(skill, SUITE_KW["n_eval"], seed=EVAL_SEED_OFFSET)
    for path in (suite.base, *suite.experts.values()):
        assert (path / "model.safetensors").is_file()
        AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        assert model.config.model_type == "llama"


def test_experts_beat_base_and_each_other(suite: TinySuite) -> None:
    names = ["base", *suite.skills]
    dirs = {"base": suite.base, **suite.experts}
    table = {}
    for name in names:
        table[name] = likelihoods(dirs[name], suite.data)
        for k in suite.skills:
            # The stored table is what the reloaded weights give.
            assert table[name][k] == pytest.approx(suite.likelihoods[name][k], rel=1e-4)
    for skill in suite.skills:
        own = table[skill][skill]
        assert own > 1.3 * table["base"][skill], (skill, table)
        for other in suite.skills:
            if other != skill:
                assert own > table[other][skill], (skill, other, table)


def test_suite_is_reused_when_parameters_match(suite: TinySuite) -> None:
    weights = suite.base / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = build_tiny_suite(suite.root, arch="llama", **SUITE_KW)
    assert again == suite
    assert weights.stat().st_mtime_ns == stamp
