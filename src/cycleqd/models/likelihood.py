"""Summed log-likelihoods of continuations on a transformers causal LM, as lm-eval scores them.

The engine's side of multiple-choice scoring (:meth:`cycleqd.models.engine.HFEngine.loglikelihood`
calls it): tokenisation as lm-eval's ``HFLM`` does it (trailing whitespace of the context moves to
the continuation, the whole text is encoded once and split at the context's token count, an empty
context becomes BOS, else EOS, and too-long inputs lose tokens on the left), batched passes, and a
shared pass for the prefix that the choices of one question share. Kept under ``models`` so the
engine needs nothing from the tasks that use it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from cycleqd.errors import CycleQDError

__all__ = ["encode_pair", "loglikelihoods_on_model"]

# lm-eval's fallback when neither the config nor the tokenizer states a context length.
_DEFAULT_MAX_LENGTH = 2048
# transformers' "no limit" value of ``tokenizer.model_max_length``.
_TOKENIZER_INFINITY = 10**29


def _prefix_token_id(tokenizer: Any) -> int:
    """The token an empty context becomes: BOS, else EOS (lm-eval's ``prefix_token_id``)."""
    token = tokenizer.bos_token_id
    if token is None:
        token = tokenizer.eos_token_id
    if token is None:
        raise CycleQDError("multiple_choice: the tokenizer has neither a BOS nor an EOS token")
    return int(token)


def _encode(tokenizer: Any, text: str, prefix_text: str) -> list[int]:
    """The tokenizer's default encoding (its own special tokens), none added twice.

    lm-eval leaves special tokens to the tokenizer unless the text already starts with the
    BOS text, so a Llama-style tokenizer adds ``<s>`` and a GPT-2-style one adds nothing.
    """
    if prefix_text and text.startswith(prefix_text):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids, split as lm-eval's ``HFLM`` splits them.

    Trailing whitespace of the context moves to the continuation; the whole text is encoded
    once and split at the context's own token count, so a token that spans the boundary in
    the whole encoding is not scored twice or half.
    """
    prefix = _prefix_token_id(tokenizer)
    if context == "":
        cont = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
        if cont and cont[0] == prefix:
            return cont[:1], cont[1:]
        return [prefix], cont
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    prefix_text = tokenizer.decode([prefix])
    whole = _encode(tokenizer, context + continuation, prefix_text)
    ctx = _encode(tokenizer, context, prefix_text)
    return ctx, whole[len(ctx) :]


def _max_length(model: Any, tokenizer: Any) -> int:
    """The model's context length: its config, else the tokenizer's, else 2048 (as lm-eval)."""
    config = getattr(model, "config", None)
    for cfg in (getattr(config, "text_config", None), config):
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(cfg, attr, None) if cfg is not None else None
            if isinstance(value, int) and value > 0:
                return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _TOKENIZER_INFINITY:
        return limit
    return _DEFAULT_MAX_LENGTH


@dataclass
class _Row:
    """One scored pair: the model input (context + continuation, last token dropped)."""

    inp: list[int]
    cont: list[int]

    @property
    def first(self) -> int:
        """Input position whose logits predict the first continuation token."""
        return len(self.inp) - len(self.cont)


def common_prefix(seqs: Sequence[Sequence[int]], limit: int | None = None) -> int:
    """How many leading tokens every sequence shares, at most ``limit``.

    Prompts of one task repeat a long instruction; its keys and values are computed once and
    shared, by the scorer here and by the engine's generation.
    """
    n = min(len(s) for s in seqs)
    if limit is not None:
        n = min(n, limit)
    first = seqs[0]
    for other in seqs[1:]:
        k = 0
        while k < n and other[k] == first[k]:
            k += 1
        n = k
    return n


@torch.no_grad()
def loglikelihoods_on_model(
    model: Any,
    tokenizer: Any,
    device: torch.device,
    batch_size: int,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    share: bool = True,
    groups: Sequence[int] | None = None,
    rows_of: Callable[[list[int]], AbstractContextManager[None]] | None = None,
) -> list[float]:
    """Batched summed log-likelihoods on a transformers causal LM.

    ``groups`` (one per pair) and ``rows_of`` serve a population of children on one resident
    model (see :mod:`cycleqd.merging.population`): pairs of different groups never share a
    prefix, and every forward pass runs inside ``rows_of(pair indices of its rows)``, which
    tells the population's hooks whose delta each row gets.

    The choices of one question share its context, which is most of every row (an MMLU
    question is hundreds of tokens, its choices a few). So, where the model takes a cache and
    position ids, the rows of one context are scored in two passes: the shared prefix once per
    context, then every choice's remaining tokens against a copy of its context's keys and
    values; that is up to n-choices times fewer tokens through the model. Rows with nothing
    to share, and models without those arguments, take one plain pass. Both paths right-pad
    (real tokens keep the positions of an unpadded pass), sort longest first as lm-eval does,
    and compute logits only from the first continuation position on when the model takes
    ``logits_to_keep`` (the vocabulary projection of the context is most of a long batch's
    memory and none of its answer). ``share=False`` forces the plain path everywhere.
    """
    max_len = _max_length(model, tokenizer)
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    rows: list[_Row] = []
    for context, continuation in zip(contexts, continuations, strict=True):
        ctx, cont = encode_pair(tokenizer, context, continuation)
        if len(cont) >= max_len:  # its first token needs at least one token before it
            raise CycleQDError(
                f"multiple_choice: a continuation of {len(cont)} tokens does not fit the "
                f"model's context of {max_len} tokens"
            )
        rows.append(_Row((ctx + cont)[-(max_len + 1) :][:-1], cont))
    out = [0.0] * len(rows)
    forward = inspect.signature(type(model).forward).parameters
    keep_logits = "logits_to_keep" in forward
    cache_arg = next((a for a in ("cache", "past_key_values") if a in forward), None)
    by_context: dict[tuple[int, str], list[int]] = {}
    for i, context in enumerate(contexts):
        if rows[i].cont:  # an empty continuation scores 0
            owner = int(groups[i]) if groups is not None else 0
            by_context.setdefault((owner, context), []).append(i)
    shared: list[tuple[int, list[int]]] = []  # (shared prefix length, rows)
    plain: list[int] = []
    for members in by_context.values():
        inputs = [rows[i].inp for i in members]
        # The prefix ends before the first position whose logits are needed.
        q = min(common_prefix(inputs), min(rows[i].first for i in members))
        can = share and cache_arg is not None and "position_ids" in forward
        if can and len(members) > 1 and q > 0:
            shared.append((q, members))
        else:
            plain.extend(members)
    enter = rows_of or (lambda _rows: contextlib.nullcontext())
    run = _Runner(model, device, int(pad), keep_logits, cache_arg, rows, out, enter)
    plain.sort(key=lambda i: -len(rows[i].inp))
    for at in range(0, len(plain), batch_size):
        run.plain(plain[at : at + batch_size])
    shared.sort(key=lambda g: -max(len(rows[i].inp) for i in g[1]))
    batch: list[tuple[int, list[int]]] = []
    for group in shared:
        if batch and sum(len(m) for _, m in batch) + len(group[1]) > batch_size:
            run.shared(batch)
            batch = []
        batch.append(group)
    if batch:
        run.shared(batch)
    return out


@dataclass
class _Runner:
    """The forward passes of :func:`loglikelihoods_on_model`; results land in ``out``."""

    model: Any
    device: torch.device
    pad: int
    keep_logits: bool
    cache_arg: str | None
    rows: list[_Row]
    out: list[float]
    enter: Callable[[list[int]], AbstractContextManager[None]]

    def _padded(self, seqs: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, seq in enumerate(seqs):
            ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[r, : len(seq)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _collect(self, logits: torch.Tensor, batch: list[int], starts: list[int]) -> None:
        """Sum each row's continuation log-probs; ``starts[r]``: its first logit's column."""
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for r, i in enumerate(batch):
            cont = self.rows[i].cont
            target = torch.tensor(cont, dtype=torch.long, device=logprobs.device)
            picked = logprobs[r, starts[r] : starts[r] + len(cont)].gather(1, target[:, None])
            self.out[i] = float(picked.sum())

    def _keep(self, width: int, first: int) -> dict[str, int]:
        return {"logits_to_keep": width - first} if self.keep_logits else {}

    def plain(self, batch: list[int]) -> None:
        """One pass over whole rows."""
        ids, mask = self._padded([self.rows[i].inp for i in batch])
        width = ids.shape[1]
        first = min(self.rows[i].first for i in batch)
        with self.enter(batch):
            logits = self.model(
                input_ids=ids, attention_mask=mask, use_cache=False, **self._keep(width, first)
            ).logits
        offset = width - logits.shape[1]  # sequence position of logits[:, 0]
        self._collect(logits, batch, [self.rows[i].first - offset for i in batch])

    def shared(self, groups: list[tuple[int, list[int]]]) -> None:
        """Each group's prefix once, then all its rows' suffixes against its keys and values.

        Prefixes are right-padded too, so a suffix continues after its own prefix's last real
        token (explicit position ids) while the pads between them are masked out.
        """
        assert self.cache_arg is not None
        prefixes = [self.rows[members[0]].inp[:q] for q, members in groups]
        ids, mask = self._padded(prefixes)
        extra = {"logits_to_keep": 1} if self.keep_logits else {}
        with self.enter([members[0] for _, members in groups]):
            result = self.model(input_ids=ids, attention_mask=mask, use_cache=True, **extra)
        cache = result["cache"] if "cache" in result else result["past_key_values"]
        batch = [i for _, members in groups for i in members]
        owner = [g for g, (_, members) in enumerate(groups) for _ in members]
        lengths = [q for q, members in groups for _ in members]
        cache.batch_select_indices(torch.tensor(owner, device=self.device))
        sids, smask = self._padded(
            [self.rows[i].inp[q:] for i, q in zip(batch, lengths, strict=True)]
        )
        width = sids.shape[1]
        positions = torch.tensor(lengths, device=self.device)[:, None] + torch.arange(
            width, device=self.device
        )
        first = min(self.rows[i].first - q for i, q in zip(batch, lengths, strict=True))
        with self.enter(batch):
            logits = self.model(
                input_ids=sids,
                attention_mask=torch.cat([mask[owner], smask], dim=1),
                position_ids=positions,
                **{self.cache_arg: cache},
                **self._keep(width, first),
            ).logits
        offset = width - logits.shape[1]
        starts = [self.rows[i].first - q - offset for i, q in zip(batch, lengths, strict=True)]
        self._collect(logits, batch, starts)
