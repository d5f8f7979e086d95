"""Anchored expert training: the KL to the base on other skills' conversations, end to end."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from cycleqd.errors import CycleQDError
from cycleqd.train import TrainConfig, cache_key_for, train_expert
from cycleqd.train.batching import collate
from cycleqd.train.data import BuildOptions, build_conversations
from cycleqd.train.loop import anchor_divergence, learned_logits
from cycleqd.train.masking import Encoded, encode_conversation
from cycleqd.train.spec import resolve_spec

# LoRA (anchoring needs the adapters to switch off); a tiny random model learns slowly with it
LORA = {"lr": 1e-2, "batch_size": 4, "warmup_ratio": 0.0, "workers": 1, "precision": "float32"}


def write_mbpp(path: Path, text: str, code: str, n: int = 4) -> Path:
    function = code.split("(")[0].removeprefix("def ")
    records = [
        {
            "task_id": f"{path.stem}/{i}",
            "text": text,
            "code": code,
            "test_list": [f"assert {function}({i}) is not None"],
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def skills(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two one-program skills: the expert learns ``own``; ``other`` is its anchor."""
    root = tmp_path_factory.mktemp("anchor-data")
    own = write_mbpp(
        root / "double.jsonl",
        "Write a function double(x) that returns twice x.",
        "def double(x):\n    return 2 * x",
    )
    other = write_mbpp(
        root / "negate.jsonl",
        "Write a function negate(x) that returns minus x.",
        "def negate(x):\n    return -x",
    )
    return own, other


def encoded(model_dir: Path, data: Path) -> list[Encoded]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    convs = build_conversations(resolve_spec(str(data)), BuildOptions(n=None)).conversations
    return [encode_conversation(tok, c.messages, c.train_from, source="x") for c in convs]


def divergence_from(base: Path, model_dir: Path, data: Path) -> float:
    """KL(base || model) at the reply positions of ``data``, by hand from the two models."""
    rows = encoded(base, data)
    batch = collate(rows, AutoTokenizer.from_pretrained(base).pad_token_id)
    cpu = torch.device("cpu")
    with torch.no_grad():
        p, _ = learned_logits(AutoModelForCausalLM.from_pretrained(base), batch, cpu)
        q, _ = learned_logits(AutoModelForCausalLM.from_pretrained(model_dir), batch, cpu)
    logp, logq = F.log_softmax(p, -1), F.log_softmax(q, -1)
    return float((logp.exp() * (logp - logq)).sum(-1).mean())


def test_anchor_divergence_is_the_kl_from_the_reference_model(
    tiny_base: Path, skills: tuple[Path, Path]
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    batch = collate(encoded(tiny_base, skills[1]), model.config.pad_token_id or 0)
    cpu = torch.device("cpu")
    same = anchor_divergence(model, batch, cpu, nullcontext)
    assert float(same.detach()) == pytest.approx(0.0, abs=1e-6)

    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    moved = {n: p.detach().clone() for n, p in model.named_parameters()}

    class AsBase:
        """Swaps the saved (base) weights in for the reference pass, then restores the moved."""

        def __enter__(self) -> None:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(saved[n])

        def __exit__(self, *exc: object) -> None:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(moved[n])

    got = float(anchor_divergence(model, batch, cpu, AsBase).detach())
    with torch.no_grad():
        q, _ = learned_logits(model, batch, cpu)
        AsBase().__enter__()
        p, _ = learned_logits(model, batch, cpu)
    logp, logq = F.log_softmax(p, -1), F.log_softmax(q, -1)
    expected = float((logp.exp() * (logp - logq)).sum(-1).mean())
    assert expected > 1e-3
    assert got == pytest.approx(expected, rel=1e-4)


def test_an_anchored_expert_learns_its_skill_and_stays_nearer_the_base_on_the_anchor(
    tiny_base: Path, skills: tuple[Path, Path], tmp_path: Path
) -> None:
    own, other = skills
    plain = train_expert(tiny_base, [own], tmp_path / "plain", epochs=100, progress=False, **LORA)
    anchored = train_expert(
        tiny_base,
        [own],
        tmp_path / "anchored",
        epochs=100,
        progress=False,
        anchor_specs=[other],
        anchor_weight=4.0,
        anchor_batch=2,
        **LORA,
    )
    assert plain.anchors == [] and [a.kept for a in anchored.anchors] == [4]
    record = json.loads((tmp_path / "anchored" / "training.json").read_text())
    assert record["anchors"][0]["spec"] == str(other)
    assert record["hyperparameters"]["anchor_weight"] == 4.0
    # both learn their own skill ...
    assert anchored.final_loss is not None and plain.final_loss is not None
    assert anchored.final_loss < 0.8 * anchored.losses[0]
    assert anchored.final_loss == pytest.approx(plain.final_loss, rel=0.05)
    # ... and the anchored one changed far less where it was anchored
    kl_plain = divergence_from(tiny_base, tmp_path / "plain", other)
    kl_anchored = divergence_from(tiny_base, tmp_path / "anchored", other)
    assert kl_anchored < 0.5 * kl_plain, (kl_anchored, kl_plain)


def test_anchors_enter_the_cache_key_only_when_they_weigh(
    tiny_base: Path, skills: tuple[Path, Path], tmp_path: Path
) -> None:
    own, other = skills
    plain = TrainConfig(**LORA)
    weighted = TrainConfig(**LORA, anchor_weight=1.0)
    _, kept, key = cache_key_for(tiny_base, [own], plain)
    _, ignored, same = cache_key_for(tiny_base, [own], plain, [other])
    assert kept == ignored == [] and same == key
    assert "anchor_weight" not in plain.hyperparameters()
    _, anchors, anchored = cache_key_for(tiny_base, [own], weighted, [other])
    assert [a.spec for a in anchors] == [str(other)] and anchored != key
    changed = write_mbpp(
        tmp_path / "negate.jsonl",
        "Write a function negate(x) that returns minus x.",
        "def negate(x):\n    return 0 - x",
    )
    assert cache_key_for(tiny_base, [own], weighted, [changed])[2] != anchored


def test_anchoring_a_full_fine_tune_is_a_user_error(
    tiny_base: Path, skills: tuple[Path, Path], tmp_path: Path
) -> None:
    with pytest.raises(CycleQDError, match="anchor_weight > 0 needs method lora"):
        train_expert(
            tiny_base,
            [skills[0]],
            tmp_path / "x",
            progress=False,
            anchor_specs=[skills[1]],
            **{**LORA, "method": "full", "anchor_weight": 1.0},
        )
    assert not (tmp_path / "x").exists()


def test_cli_anchor_weight_without_anchors_is_a_user_error(tiny_base: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    args = ["train-expert", "--base", str(tiny_base), "--task", "code-mini"]
    args += ["--out", str(tmp_path / "e"), "--anchor-weight", "1.0"]
    res = subprocess.run(
        [sys.executable, "-m", "cycleqd.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr
    assert "--anchor-weight needs at least one --anchor" in res.stdout + res.stderr
    assert not (tmp_path / "e").exists()


def test_micro_batches_give_the_whole_batchs_step(
    tiny_base: Path, skills: tuple[Path, Path], tmp_path: Path
) -> None:
    """``max_batch_tokens`` splits each batch (and its anchors) into passes of at most that many
    padded tokens whose gradients add up to the batch's: the same training up to float rounding
    (dropout off: its masks are drawn per pass), and a key of its own."""
    from safetensors.torch import load_file

    from cycleqd.train.loop import learned_positions, micro_batches

    own, other = skills
    rows = encoded(tiny_base, own)
    width = max(len(r.input_ids) for r in rows)
    parts = micro_batches(rows, 0, width, share_prefix=True)  # one row per pass
    assert len(parts) == len(rows)
    whole = collate(rows, 0)
    assert sum(learned_positions(p) for p in parts) == learned_positions(whole)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    with torch.no_grad():
        _, targets = learned_logits(model, whole, torch.device("cpu"))
    assert learned_positions(whole) == len(targets)
    settings = {"epochs": 3, "progress": False, "lora_dropout": 0.0, **LORA}
    anchored = {"anchor_specs": [str(other)], "anchor_weight": 1.0, "anchor_batch": 2}
    one = train_expert(tiny_base, [own], tmp_path / "one", **settings, **anchored)
    split = train_expert(
        tiny_base, [own], tmp_path / "split", max_batch_tokens=width, **settings, **anchored
    )
    assert split.cache_key != one.cache_key
    assert split.losses == pytest.approx(one.losses, rel=1e-4)
    a, b = (
        load_file(tmp_path / "one" / "model.safetensors"),
        load_file(tmp_path / "split" / "model.safetensors"),
    )
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(a[n], load_file(tiny_base / "model.safetensors")[n]) for n in a)


@pytest.mark.parametrize("checkpoint", ["float32", "bfloat16"])
def test_frozen_bf16_weights_train_as_autocast_did(
    tiny_base: Path,
    skills: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    checkpoint: str,
) -> None:
    """Under bf16 autocast the frozen weights are kept in bf16: the same losses and the same
    merged expert, bit for bit, as casting them from float32 on every pass (a float32
    checkpoint's exact weights are put back before the merge)."""
    from safetensors.torch import load_file

    import cycleqd.train.expert as expert_module

    base16 = tmp_path / "base"
    dtype = getattr(torch, checkpoint)
    AutoModelForCausalLM.from_pretrained(tiny_base).to(dtype).save_pretrained(base16)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(base16)
    own, other = skills
    settings = {
        **LORA,
        "precision": "bfloat16",
        "epochs": 2,
        "progress": False,
        "anchor_specs": [str(other)],
        "anchor_weight": 1.0,
        "anchor_batch": 2,
    }
    casts: list[int] = []
    real_cast = expert_module.cast_frozen_weights
    monkeypatch.setattr(
        expert_module, "cast_frozen_weights", lambda m, d: casts.append(real_cast(m, d))
    )
    kept = train_expert(base16, [own], tmp_path / "kept", **settings)
    assert casts and casts[0] > 0  # every adapted linear layer, then back to float32
    monkeypatch.setattr(expert_module, "cast_frozen_weights", lambda m, d: 0)
    per_pass = train_expert(base16, [own], tmp_path / "per-pass", **settings)
    assert kept.losses == per_pass.losses
    a = load_file(tmp_path / "kept" / "model.safetensors")
    b = load_file(tmp_path / "per-pass" / "model.safetensors")
    for name in a:
        assert torch.equal(a[name], b[name]), name
