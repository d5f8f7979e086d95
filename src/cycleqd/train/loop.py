"""The supervised fine-tuning loop: AdamW, warmup + cosine, loss on assistant tokens only.

A plain loop rather than ``transformers.Trainer``: the shared-prefix trick (see ``batching``) and
computing logits only where there is a label need control of the forward pass, and on a small
CPU those two are most of the speed. Logits are projected only at the learned positions (the
vocabulary projection of a 49k-token vocabulary is a large share of a 135M model's compute, and
most positions are prompt). The loss is the mean over the batch's learned tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cycleqd.models.engine import cache_argument, returned_cache
from cycleqd.train.batching import Batch, collate, plan_batches
from cycleqd.train.masking import IGNORE, Encoded

# (step, total steps, loss of this step) after every optimizer step.
OnStep = Callable[[int, int, float], None]


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    lr: float
    batch_size: int
    seed: int
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    share_prefix: bool = True
    autocast: torch.dtype | None = None  # e.g. bfloat16: matmuls in bf16, master weights fp32


def batch_loss(model: torch.nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    """Mean cross-entropy over the batch's learned tokens, prefix computed once if shared."""
    ids = batch.input_ids.to(device)
    labels = batch.labels.to(device)
    mask = batch.attention_mask.to(device)
    rows, width = ids.shape
    p = batch.prefix
    past = None
    cache_arg = cache_argument(model)
    if p:
        past = returned_cache(model(input_ids=ids[:1, :p], use_cache=True, logits_to_keep=1))
        past.batch_repeat_interleave(rows)
    targets = labels[:, p + 1 :]
    keep = torch.zeros((rows, width - p), dtype=torch.bool, device=device)
    keep[:, :-1] = targets != IGNORE
    # Positions any row learns from, as 1-D indices: every transformers release with
    # ``logits_to_keep`` takes those (a 2-D mask only the newest); rows then pick their own.
    columns = keep.any(0).nonzero().squeeze(1)
    positions = torch.arange(p, width, device=device).unsqueeze(0).expand(rows, -1)
    logits = model(
        input_ids=ids[:, p:],
        attention_mask=mask,
        position_ids=positions,
        use_cache=past is not None,
        **({cache_arg: past} if past is not None else {}),
        logits_to_keep=columns,
    ).logits[keep[:, columns]]
    return F.cross_entropy(logits.float(), targets[targets != IGNORE])


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def count_steps(samples: Sequence[Encoded], settings: LoopSettings) -> int:
    return sum(
        len(plan_batches(samples, settings.batch_size, settings.seed, e))
        for e in range(settings.epochs)
    )


def train_loop(
    model: torch.nn.Module,
    samples: Sequence[Encoded],
    settings: LoopSettings,
    *,
    pad_id: int,
    device: torch.device,
    on_step: OnStep | None = None,
) -> list[float]:
    """Train ``model`` in place; returns the loss of every optimizer step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    total = count_steps(samples, settings)
    warmup = max(1, round(settings.warmup_ratio * total))
    autocast = (
        torch.autocast(device.type, dtype=settings.autocast)
        if settings.autocast is not None
        else nullcontext()
    )
    losses: list[float] = []
    model.train()
    step = 0
    for epoch in range(settings.epochs):
        for index in plan_batches(samples, settings.batch_size, settings.seed, epoch):
            batch = collate([samples[i] for i in index], pad_id, share_prefix=settings.share_prefix)
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * lr_factor(step, total, warmup, settings.min_lr_ratio)
            with autocast:
                loss = batch_loss(model, batch, device)
            loss.backward()
            if settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            step += 1
            if on_step is not None:
                on_step(step, total, losses[-1])
    model.eval()
    return losses
