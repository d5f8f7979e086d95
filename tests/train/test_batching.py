"""Batching: the shared-prefix forward gives the full batch's loss and gradients exactly."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cycleqd.tasks.db.protocol import opening_messages
from cycleqd.train.batching import collate, plan_batches, shared_prefix
from cycleqd.train.loop import batch_loss
from cycleqd.train.lora import add_lora
from cycleqd.train.masking import Encoded, encode_conversation


def db_like(tokenizer, n: int) -> list[Encoded]:
    """Conversations sharing DBBench's long instruction, differing in question and replies."""
    out = []
    for i in range(n):
        messages = opening_messages(f"Question {i}: how many rows{'?' * i}")
        messages += [
            {"role": "assistant", "content": f"Action: Operation\n```sql\nSELECT {i};\n```"},
            {"role": "user", "content": f"[({i},)]"},
            {"role": "assistant", "content": f"Action: Answer\nFinal Answer: [{i}]"},
        ]
        out.append(encode_conversation(tokenizer, messages, 3, sample_id=str(i), source="db"))
    return out


def test_prefix_stops_before_the_first_learned_prediction(tiny_base: Path) -> None:
    rows = db_like(AutoTokenizer.from_pretrained(tiny_base), 3)
    p = shared_prefix(rows)
    assert p > 500  # the instruction is shared
    assert all(r.input_ids[:p] == rows[0].input_ids[:p] for r in rows)
    assert p < min(r.first_label for r in rows)
    assert shared_prefix(rows[:1]) == rows[0].first_label - 1


def test_shared_prefix_loss_and_gradients_equal_the_full_batch(tiny_base: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_base)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    peft = add_lora(model, r=4, alpha=8, dropout=0.0)
    for name, param in peft.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: give the adapters something to do
            torch.nn.init.normal_(param, std=0.05)
    rows = db_like(tok, 4)
    results = []
    for share in (True, False):
        batch = collate(rows, tok.pad_token_id, share_prefix=share)
        assert (batch.prefix > 0) == share
        loss = batch_loss(model, batch, torch.device("cpu"))
        loss.backward()
        grads = [p.grad.clone() for p in peft.parameters() if p.requires_grad]
        peft.zero_grad()
        results.append((float(loss.detach()), grads))
    (l1, g1), (l2, g2) = results
    assert abs(l1 - l2) < 1e-5
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_batches_hold_one_source_and_depend_only_on_seed_and_epoch() -> None:
    samples = [Encoded(str(i), "ab"[i % 2], [1] * (5 + i), [1] * (5 + i)) for i in range(20)]
    plan = plan_batches(samples, 4, seed=3, epoch=0)
    assert sorted(i for b in plan for i in b) == list(range(20))
    assert all(len({samples[i].source for i in b}) == 1 for b in plan)
    assert plan == plan_batches(samples, 4, seed=3, epoch=0)
    assert plan != plan_batches(samples, 4, seed=3, epoch=1)


def test_micro_batches_count_a_shared_prefix_once() -> None:
    """Agent conversations share hundreds of prefix tokens: a budget counted in padded tokens
    would give each row its own pass (and compute the prefix once per row)."""
    from cycleqd.train.loop import IGNORE, computed_tokens, micro_batches

    prefix = list(range(100, 400))  # 300 shared tokens, then 20 learned ones per row
    rows = [
        Encoded(f"s{i}", "agent", prefix + [i] * 20, [IGNORE] * 300 + [i] * 20) for i in range(4)
    ]
    assert computed_tokens(rows, shared_prefix(rows)) == 299 + 4 * 21
    assert computed_tokens(rows, 0) == 4 * 320
    parts = micro_batches(rows, 0, 400, share_prefix=True)
    assert [len(p.input_ids) for p in parts] == [4]
    parts = micro_batches(rows, 0, 350, share_prefix=True)  # 299 + 2 * 21 fits, + 3 * 21 not
    assert [len(p.input_ids) for p in parts] == [2, 2]
    assert all(p.prefix == 299 for p in parts)
    assert len(micro_batches(rows, 0, 400, share_prefix=False)) == 4


def test_a_prefix_run_once_gives_the_micro_batches_the_whole_batchs_gradient(
    tiny_base: Path, monkeypatch
) -> None:
    """Split into micro-batches, a batch runs its shared prefix once (its keys and values are
    leaves whose gradients add up, then one backward pass through the prefix), and the
    gradient is the whole batch's; a cache that cannot be shared so (``shared`` False) runs the
    prefix in every micro-batch, with the same gradient."""
    from contextlib import nullcontext

    import cycleqd.train.loop as loop
    import cycleqd.train.prefix as prefix_module

    tok = AutoTokenizer.from_pretrained(tiny_base)
    torch.manual_seed(0)
    peft = add_lora(
        AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32),
        r=4,
        alpha=8,
        dropout=0.0,
    )
    for name, param in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    model = peft.get_base_model()
    rows = db_like(tok, 4)
    p = shared_prefix(rows)
    width = max(len(r.input_ids) for r in rows)
    settings = loop.LoopSettings(
        epochs=1, lr=1e-3, batch_size=4, seed=0, max_batch_tokens=p + 2 * (width - p)
    )
    cpu = torch.device("cpu")

    def gradients() -> list[torch.Tensor]:
        grads = [q.grad.clone() for q in peft.parameters() if q.requires_grad]
        peft.zero_grad()
        return grads

    batch_loss(model, collate(rows, tok.pad_token_id), cpu).backward()
    whole = gradients()
    runs: list[int] = []
    real = prefix_module.prefix_cache
    monkeypatch.setattr(prefix_module, "prefix_cache", lambda *a: runs.append(1) or real(*a))
    monkeypatch.setattr(loop, "prefix_cache", lambda *a: runs.append(1) or real(*a))
    args = (model, rows, [], settings, tok.pad_token_id, cpu, nullcontext(), None)
    loop._accumulate(*args)
    assert (
        len(
            loop.micro_batches(rows, tok.pad_token_id, settings.max_batch_tokens, share_prefix=True)
        )
        == 2
    )
    assert len(runs) == 1  # two micro-batches, one prefix pass
    for a, b in zip(whole, gradients(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)

    unshared = prefix_module.share_prefix
    monkeypatch.setattr(
        loop,
        "share_prefix",
        lambda *a: prefix_module.SharedPrefix(unshared(*a).cache, [], [], shared=False),
    )
    runs.clear()
    loop._accumulate(*args)
    assert len(runs) == 2  # each micro-batch ran it
    for a, b in zip(whole, gradients(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
