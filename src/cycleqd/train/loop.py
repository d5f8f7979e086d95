"""The supervised fine-tuning loop: AdamW, warmup + cosine, loss on assistant tokens only.

A plain loop rather than ``transformers.Trainer``: the shared-prefix trick (see ``batching``) and
computing logits only where there is a label need control of the forward pass, and on a small
CPU those two are most of the speed. Logits are projected only at the learned positions (the
vocabulary projection of a 49k-token vocabulary is a large share of a 135M model's compute, and
most positions are prompt). The loss is the mean over the batch's learned tokens.

Anchoring (``anchor_weight > 0``) adds, at every step, the KL divergence from the base model to
the model being trained on a batch of *other* skills' conversations, at their reply positions.
Experts trained apart each change how the model answers every skill's prompts, and those changes
collide when the task vectors are added (measured on the demo: the DB expert alone takes the code
score from 0.375 to 0.219). The anchor keeps an expert's behaviour on the other skills' inputs
at the base's, so what its task vector changes is, to first order, confined to its own skill:
the condition under which task vectors add without interfering (weight disentanglement,
Ortiz-Jimenez et al., 2023). The other skills' replies are inputs there, never targets.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cycleqd.models.engine import cache_argument
from cycleqd.resources import trim_heap
from cycleqd.train.batching import WINDOW_BATCHES, Batch, collate, plan_batches, shared_prefix
from cycleqd.train.masking import IGNORE, Encoded
from cycleqd.train.prefix import SharedPrefix, prefix_cache, share_prefix

# (step, total steps, loss of this step) after every optimizer step.
OnStep = Callable[[int, int, float], None]
# A context in which the model computes the base's outputs (e.g. peft's ``disable_adapter``).
Reference = Callable[[], AbstractContextManager[object]]


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
    anchor_weight: float = 0.0  # weight of the KL to the base on the anchor conversations
    anchor_batch: int = 4  # anchor conversations per step
    length_window: int = WINDOW_BATCHES  # batches per length-sorted window (plan_batches)
    # at most this many padded tokens per forward pass: a batch is split into micro-batches whose
    # gradients add up to the whole batch's (None: the batch in one pass, as always)
    max_batch_tokens: int | None = None


def learned_logits(
    model: torch.nn.Module,
    batch: Batch,
    device: torch.device,
    prefix: SharedPrefix | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the batch's learned positions and their targets, prefix computed once
    (``prefix``: already computed for the whole batch this micro-batch belongs to)."""
    ids = batch.input_ids.to(device)
    labels = batch.labels.to(device)
    mask = batch.attention_mask.to(device)
    rows, width = ids.shape
    p = batch.prefix
    past = None
    cache_arg = cache_argument(model)
    if p:
        past = prefix.for_rows(rows) if prefix is not None else None
        if past is None:
            past = prefix_cache(model, ids[:1, :p])
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
    return logits, targets[targets != IGNORE]


def batch_loss(model: torch.nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    """Mean cross-entropy over the batch's learned tokens."""
    logits, targets = learned_logits(model, batch, device)
    return F.cross_entropy(logits.float(), targets)


def anchor_divergence(
    model: torch.nn.Module,
    batch: Batch,
    device: torch.device,
    reference: Reference,
    positions: int | None = None,
    prefixes: tuple[SharedPrefix | None, SharedPrefix | None] = (None, None),
) -> torch.Tensor:
    """KL(base || model) averaged over reply positions; ``reference`` gives the base's outputs.

    ``positions``: divide the summed divergence by this many positions instead of the batch's
    own (a micro-batch's share of its whole batch's mean). ``prefixes``: the whole batch's
    prefix, computed once, for the base and for the model.
    """
    with torch.no_grad(), reference():
        base_logits, _ = learned_logits(model, batch, device, prefixes[0])
    logits, _ = learned_logits(model, batch, device, prefixes[1])
    if positions is None:
        return F.kl_div(
            F.log_softmax(logits.float(), -1),
            F.log_softmax(base_logits.float(), -1),
            log_target=True,
            reduction="batchmean",
        )
    summed = F.kl_div(
        F.log_softmax(logits.float(), -1),
        F.log_softmax(base_logits.float(), -1),
        log_target=True,
        reduction="sum",
    )
    return summed / positions


def micro_batches(
    rows: Sequence[Encoded], pad_id: int, max_tokens: int | None, *, share_prefix: bool
) -> list[Batch]:
    """``rows`` collated into consecutive micro-batches of at most ``max_tokens`` computed
    tokens each (one row per micro-batch at least); one batch of all rows when ``max_tokens`` is
    None. Every micro-batch has the whole batch's shared prefix, which is computed once for all
    of them (:mod:`cycleqd.train.prefix`), so it counts once (see :func:`computed_tokens`).

    Why: activations grow with the tokens of a forward pass (3 to 6 MB per token for
    SmolLM2-135M with LoRA and bf16 autocast, ``benchmarks/train_memory.py``), so a batch of
    long agent conversations is what sets training's peak memory.
    """
    if max_tokens is None:
        return [collate(rows, pad_id, share_prefix=share_prefix)]
    prefix = shared_prefix(rows) if share_prefix else 0
    groups: list[list[Encoded]] = []
    for row in rows:
        if groups and computed_tokens([*groups[-1], row], prefix) <= max_tokens:
            groups[-1].append(row)
        else:
            groups.append([row])
    return [collate(g, pad_id, prefix=prefix) for g in groups]


def computed_tokens(rows: Sequence[Encoded], prefix: int) -> int:
    """Tokens one forward pass over ``rows`` computes: the shared ``prefix`` once, then each
    row's padded remainder."""
    width = max(len(r.input_ids) for r in rows)
    return prefix + len(rows) * (width - prefix)


def learned_positions(batch: Batch) -> int:
    """The positions :func:`learned_logits` returns for ``batch`` (each learned token after the
    first position of the part it computes)."""
    return int((batch.labels[:, batch.prefix + 1 :] != IGNORE).sum())


def _anchor_batches(anchors: Sequence[Encoded], settings: LoopSettings) -> Iterator[list[int]]:
    """Anchor batches without end: one seeded pass over the anchors after another."""
    for cycle in itertools.count():
        yield from plan_batches(anchors, settings.anchor_batch, settings.seed + 7919, cycle)


def _accumulate(
    model: torch.nn.Module,
    rows: Sequence[Encoded],
    anchor_rows: Sequence[Encoded],
    settings: LoopSettings,
    pad_id: int,
    device: torch.device,
    autocast: AbstractContextManager[Any],
    reference: Reference | None,
) -> torch.Tensor:
    """One step's gradients in micro-batches of ``settings.max_batch_tokens``: each adds its
    share of the batch's mean cross-entropy (and of the anchors' mean divergence), so the sum is
    the gradient of the whole batch's loss. Returns that batch's skill loss (detached)."""
    share = settings.share_prefix
    parts = micro_batches(rows, pad_id, settings.max_batch_tokens, share_prefix=share)
    learned = sum(learned_positions(b) for b in parts)
    skill = torch.zeros((), device=device)
    with autocast:
        prefix = _once(model, parts, device)
    for batch in parts:
        with autocast:
            logits, targets = learned_logits(model, batch, device, prefix)
            part = F.cross_entropy(logits.float(), targets, reduction="sum") / learned
        part.backward()
        skill += part.detach()
    if prefix is not None:
        prefix.backward()
    if anchor_rows and reference is not None:
        anchor_parts = micro_batches(
            anchor_rows, pad_id, settings.max_batch_tokens, share_prefix=share
        )
        positions = sum(learned_positions(b) for b in anchor_parts)
        with autocast:
            with torch.no_grad(), reference():
                base_prefix = _once(model, anchor_parts, device)
            model_prefix = _once(model, anchor_parts, device)
        for batch in anchor_parts:
            with autocast:
                divergence = anchor_divergence(
                    model, batch, device, reference, positions, (base_prefix, model_prefix)
                )
            (settings.anchor_weight * divergence).backward()
        if model_prefix is not None:
            model_prefix.backward()
    return skill


def _once(
    model: torch.nn.Module, parts: Sequence[Batch], device: torch.device
) -> SharedPrefix | None:
    """The micro-batches' common prefix run once, when there is one and more than one
    micro-batch to share it."""
    if len(parts) < 2 or not parts[0].prefix:
        return None
    return share_prefix(model, parts[0].input_ids[:1, : parts[0].prefix].to(device))


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def count_steps(samples: Sequence[Encoded], settings: LoopSettings) -> int:
    return sum(
        len(plan_batches(samples, settings.batch_size, settings.seed, e, settings.length_window))
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
    anchors: Sequence[Encoded] = (),
    reference: Reference | None = None,
) -> list[float]:
    """Train ``model`` in place; returns the skill loss (cross-entropy) of every step.

    With ``settings.anchor_weight > 0`` and ``anchors``, each step's loss adds that weight times
    :func:`anchor_divergence` on the next anchor batch (``reference`` gives the base's outputs).
    """
    anchoring = settings.anchor_weight > 0 and len(anchors) > 0
    if anchoring and reference is None:
        raise ValueError("anchoring needs a reference context for the base's outputs")
    anchor_plan = _anchor_batches(anchors, settings) if anchoring else None
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
        plan = plan_batches(
            samples, settings.batch_size, settings.seed, epoch, settings.length_window
        )
        for index in plan:
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * lr_factor(step, total, warmup, settings.min_lr_ratio)
            rows = [samples[i] for i in index]
            anchor_rows = (
                [anchors[i] for i in next(anchor_plan)]
                if anchor_plan is not None and reference is not None
                else []
            )
            if settings.max_batch_tokens is None:
                batch = collate(rows, pad_id, share_prefix=settings.share_prefix)
                with autocast:
                    skill = loss = batch_loss(model, batch, device)
                    if anchor_rows and reference is not None:
                        anchor = collate(anchor_rows, pad_id, share_prefix=settings.share_prefix)
                        divergence = anchor_divergence(model, anchor, device, reference)
                        loss = loss + settings.anchor_weight * divergence
                loss.backward()
            else:
                skill = _accumulate(
                    model, rows, anchor_rows, settings, pad_id, device, autocast, reference
                )
            if settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            # the step's activations are freed now; glibc would keep their pages, and the next
            # step, the save and every later stage would start above them (2.5 GB more resident
            # between the os expert's steps, docs/results.md)
            trim_heap()
            losses.append(float(skill.detach()))
            step += 1
            if on_step is not None:
                on_step(step, total, losses[-1])
    model.eval()
    return losses
