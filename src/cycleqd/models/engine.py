"""The resident inference engine on transformers.

The base model is loaded once; every candidate's weights are then copied into its parameters in
place (see :mod:`cycleqd.merging.materialise`), so a search pays neither re-instantiation nor a
disk round trip per child. Generation is batched and greedy with left padding, batches are formed
from length-sorted prompts to waste little padding, and stop strings end a sequence early.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from cycleqd.errors import CycleQDError
from cycleqd.models.kv_cache import growing_cache, grows_in_place
from cycleqd.models.likelihood import common_prefix, loglikelihoods_on_model
from cycleqd.models.prompts import Prompt, PromptEncoder

# Our own progress bar reports loading; transformers' per-file bars would interleave with it.
hf_logging.disable_progress_bar()
# "sequence length is longer than the specified maximum": prompts are measured by the tasks and
# the engine themselves; the tokenizer's nominal limit is not the model's, and the warning is noise.
logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)


class RowGroups(Protocol):
    """Assigns batch rows to models that share one forward pass (a population of children).

    The engine only says which group each row of the next forward passes belongs to; what a group
    is (a child's coefficients over the expert bases) is the caller's business.
    """

    def rows(self, groups: torch.Tensor) -> ContextManager[None]: ...


class HFEngine(PromptEncoder):
    """A causal LM held resident for the whole search."""

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 16,
        population_batch_size: int | None = None,
        prefix_sharing: bool = True,
        min_shared_prefix: int = 32,
        grow_cache: bool = True,
    ) -> None:
        # a peft adapter directory: its base model with the adapter merged in, in memory
        self._open(model_dir, device, dtype)
        self.batch_size = batch_size
        # rows per forward when several children share passes (default: batch_size per child)
        self.population_batch_size = population_batch_size
        self.prefix_sharing = prefix_sharing
        self.min_shared_prefix = min_shared_prefix
        if self.base_dir != self.model_dir:
            # merged in the checkpoint's dtype, then cast: the same weights as the adapter's
            # full export loaded in this dtype (merging in bf16 would round twice)
            from peft import PeftModel

            self.model = AutoModelForCausalLM.from_pretrained(
                self.base_dir, dtype=self.checkpoint_dtype
            )
            with warnings.catch_warnings():  # peft calls a transformers API deprecated in 5.x
                warnings.simplefilter("ignore", FutureWarning)
                adapted = PeftModel.from_pretrained(self.model, self.model_dir)
            self.model = adapted.merge_and_unload()
            self.model.to(self.dtype)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(self.base_dir, dtype=self.dtype)
        self.model.to(self.device).eval()
        self.model.requires_grad_(False)
        # transformers 5.2x renamed the cache argument (``past_key_values`` -> ``cache``) and warns
        # on every call that uses the old name; older releases only know the old one.
        self._cache_arg = cache_argument(self.model)
        # keys and values written in place (see :mod:`cycleqd.models.kv_cache`); ``False`` keeps
        # transformers' concatenating cache (the benchmark compares the two)
        self.grow_cache = grow_cache and grows_in_place(self.model)
        self.row_groups: RowGroups | None = None

    @property
    def module(self) -> torch.nn.Module:
        """The resident model the materialiser writes into."""
        return self.model

    def _batches(self, lengths: list[int], groups: Sequence[int] | None = None) -> list[list[int]]:
        size = self.batch_size
        if groups is not None:
            size = self.population_batch_size or self.batch_size * len(set(groups))
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [order[i : i + size] for i in range(0, len(order), size)]

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int = 64,
        stop: Sequence[str] = (),
        chat: bool = True,
        until: Callable[[str], bool] | None = None,
        groups: Sequence[int] | None = None,
    ) -> list[str]:
        """Greedy completions, in the order of ``prompts``; text is cut before a stop string.

        ``until(text)`` ends a sequence as soon as it holds for the text generated so far (the
        text is kept whole: the predicate marks the end of something useful, not a delimiter).
        ``groups`` (one per prompt) says which model of a population (see :attr:`row_groups`)
        answers each prompt; rows of different groups share every forward pass.
        """
        self._check_groups(prompts, groups)
        tok = self.tokenizer
        ids = [self.prompt_ids(p, chat) for p in prompts]
        outputs: list[str] = [""] * len(ids)
        pad = tok.pad_token_id
        shared = self._shared_prefix(ids)
        for batch in self._batches([len(x) for x in ids], groups):
            rows = [ids[i][len(shared) :] for i in batch]
            width = max(len(r) for r in rows)
            total = len(shared) + width
            input_ids = torch.full((len(batch), total), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), total), dtype=torch.long)
            if shared:
                # The shared prefix first, then each row's own tokens left-padded after it: the
                # pads sit between prefix and suffix, masked out, and positions (from the mask's
                # cumulative sum) run on unbroken across the gap.
                input_ids[:, : len(shared)] = torch.tensor(shared)
                mask[:, : len(shared)] = 1
            for row, r in enumerate(rows):
                input_ids[row, total - len(r) :] = torch.tensor(r)
                mask[row, total - len(r) :] = 1
            rows = self._row_tensor(groups, batch)
            cache = self._prefix_cache(shared, len(batch), rows) if shared else None
            tokens = self._greedy(
                input_ids.to(self.device),
                mask.to(self.device),
                cache,
                len(shared),
                rows,
                max_new_tokens,
                finished_rule(tok, stop, until),
            )
            texts = tok.batch_decode(tokens, skip_special_tokens=True)
            for i, text in zip(batch, texts, strict=True):
                outputs[i] = cut_at_stop(text, stop)
        return outputs

    def _greedy(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        cache: Any,
        cached: int,
        rows: torch.Tensor | None,
        max_new_tokens: int,
        finished: Callable[[list[int]], bool],
    ) -> list[list[int]]:
        """Greedy decoding that drops every row from the batch as soon as it is finished.

        transformers' ``generate`` keeps finished rows in the batch until the last one ends, and
        on a CPU, where a decoding step costs in proportion to its rows, that is most of the work:
        agent replies stop at their first complete action, at very different lengths, and a
        batch holding several children's rows would run to its slowest row. Here a finished row's
        keys and values leave the cache at once. ``cached`` leading tokens are already in
        ``cache``; positions come from the mask (pads between a shared prefix and a row's own
        tokens are skipped).
        """
        eos = self._eos_ids()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        step_ids, step_pos = input_ids[:, cached:], positions[:, cached:]
        live = torch.arange(input_ids.shape[0])
        out: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
        for _ in range(max_new_tokens):
            kwargs = {self._cache_arg: cache} if cache is not None else self._fresh_cache()
            with self._rows(None if rows is None else rows[live]):
                result = self.model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=step_pos,
                    use_cache=True,
                    logits_to_keep=1,
                    **kwargs,
                )
            cache = returned_cache(result)
            next_ids = result.logits[:, -1].argmax(-1)
            keep: list[int] = []
            for j, row in enumerate(live.tolist()):
                token = int(next_ids[j])
                if token in eos:
                    continue
                out[row].append(token)
                if not finished(out[row]):
                    keep.append(j)
            if not keep:
                break
            last = step_pos[:, -1:] + 1
            if len(keep) < len(live):
                idx = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(idx)
                live, mask = live[keep], mask[idx]
                next_ids, last = next_ids[idx], last[idx]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], 1)
            step_ids, step_pos = next_ids[:, None], last
        return out

    def _eos_ids(self) -> set[int]:
        """End-of-sequence ids: the tokenizer's and the generation config's (may be a list)."""
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids |= set(configured) if isinstance(configured, list) else {configured}
        return {i for i in ids if i is not None}

    def _shared_prefix(self, ids: Sequence[list[int]]) -> list[int]:
        """The token prefix every prompt shares, when it is long enough to be worth caching.

        Agent prompts repeat a long instruction and one-shot example in every conversation;
        computing its keys and values once instead of once per row is most of the prefill on a
        CPU. At least one token of every prompt stays outside the prefix (generation needs
        an input token), and nothing is shared when only one prompt is given.
        """
        if not self.prefix_sharing or len(ids) < 2:
            return []
        n = common_prefix(ids, limit=min(len(x) for x in ids) - 1)
        return list(ids[0][:n]) if n >= self.min_shared_prefix else []

    def _prefix_cache(self, prefix: list[int], n: int, rows: torch.Tensor | None) -> Any:
        """Keys and values of ``prefix``, computed once per model and repeated for ``n`` rows.

        With row groups the prefix's keys and values differ between the population's models, so
        it is computed once for each group present in the batch and each row takes its group's.
        """
        distinct = [0] if rows is None else sorted({int(g) for g in rows})
        ids = torch.tensor([prefix] * len(distinct), device=self.device)
        with self._rows(None if rows is None else torch.tensor(distinct)):
            out = self.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                use_cache=True,
                **self._fresh_cache(),
            )
        cache = returned_cache(out)
        if rows is None:
            cache.batch_repeat_interleave(n)
        else:
            where = {g: i for i, g in enumerate(distinct)}
            cache.batch_select_indices(
                torch.tensor([where[int(g)] for g in rows], device=self.device)
            )
        return cache

    def _fresh_cache(self) -> dict[str, Any]:
        """The cache argument for a first forward: a cache that grows in place where it can."""
        return {self._cache_arg: growing_cache()} if self.grow_cache else {}

    @torch.no_grad()
    def time_forward(
        self, rows: int, *, groups: Sequence[int] | None = None, tokens: int = 4
    ) -> float:
        """Seconds of one forward pass over ``rows`` rows of ``tokens`` fixed token ids.

        The population cost model compares one shared pass of a group with per-child passes;
        the best of two timed runs after a warm-up keeps one-off allocation out of it.
        """
        gen = torch.Generator().manual_seed(0)
        vocab = int(getattr(self.model.config, "vocab_size", 100))
        ids = torch.randint(0, vocab, (rows, tokens), generator=gen).to(self.device)
        row_tensor = None if groups is None else torch.tensor(list(groups))
        best = float("inf")
        with self._rows(row_tensor):
            for attempt in range(3):
                started = time.perf_counter()
                self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                if attempt:
                    best = min(best, time.perf_counter() - started)
        return best

    def _check_groups(self, prompts: Sequence[Any], groups: Sequence[int] | None) -> None:
        if groups is None:
            return
        if self.row_groups is None:
            raise CycleQDError("groups given, but no population is active on this engine")
        if len(groups) != len(prompts):
            raise ValueError(f"{len(groups)} groups for {len(prompts)} prompts")

    @staticmethod
    def _row_tensor(groups: Sequence[int] | None, batch: list[int]) -> torch.Tensor | None:
        return None if groups is None else torch.tensor([groups[i] for i in batch])

    def _rows(self, rows: torch.Tensor | None) -> ContextManager[None]:
        if rows is None or self.row_groups is None:
            return contextlib.nullcontext()
        return self.row_groups.rows(rows)

    @torch.no_grad()
    def target_likelihood(
        self,
        prompts: Sequence[Prompt],
        targets: Sequence[str],
        *,
        chat: bool = False,
        groups: Sequence[int] | None = None,
    ) -> list[float]:
        """Per sample ``exp(mean log p(target tokens | prompt))``, right-padded batches.

        ``groups``: as in :meth:`generate`.
        """
        self._check_groups(prompts, groups)
        pairs = [
            (self.prompt_ids(p, chat), self._encode(t))
            for p, t in zip(prompts, targets, strict=True)
        ]
        scores = [0.0] * len(pairs)
        for batch in self._batches([len(a) + len(b) for a, b in pairs], groups):
            seqs = [pairs[i][0] + pairs[i][1] for i in batch]
            width = max(len(s) for s in seqs)
            input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, seq in enumerate(seqs):
                input_ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            with self._rows(self._row_tensor(groups, batch)):
                logits = self.model(
                    input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)
                ).logits.float()
            logprobs = torch.log_softmax(logits[:, :-1], -1)
            for row, i in enumerate(batch):
                start, n = len(pairs[i][0]), len(pairs[i][1])
                if n == 0:
                    scores[i] = 1.0
                    continue
                tgt = torch.tensor(pairs[i][1], device=logprobs.device)
                lp = logprobs[row, start - 1 : start - 1 + n].gather(1, tgt[:, None])
                scores[i] = float(lp.mean().exp())
        return scores

    def loglikelihood(
        self,
        contexts: Sequence[str],
        continuations: Sequence[str],
        *,
        groups: Sequence[int] | None = None,
    ) -> list[float]:
        """Summed ``log p(continuation | context)`` per pair, in lm-eval's convention.

        Part of the engine contract (:class:`cycleqd.tasks.base.LanguageEngine`): the
        multiple-choice task asks it, so that ``groups`` (as in :meth:`generate`) can put the
        pairs of a whole population of children into shared forward passes, each row with its
        own child's delta.
        """
        self._check_groups(contexts, groups)
        size = self.batch_size
        rows_of = None
        if groups is not None:
            size = self.population_batch_size or self.batch_size * len(set(groups))

            def rows_of(batch: list[int]) -> ContextManager[None]:
                return self._rows(self._row_tensor(groups, batch))

        return loglikelihoods_on_model(
            self.model,
            self.tokenizer,
            self.device,
            size,
            contexts,
            continuations,
            groups=groups,
            rows_of=rows_of,
        )

    def save(self, out_dir: Path, exact: Mapping[str, torch.Tensor] | None = None) -> None:
        """Write the resident model as a standard HF directory, atomically.

        Weights are saved in the base checkpoint's dtype, whatever dtype the engine computes in.
        ``exact``: tensors to write instead of the resident ones (by state-dict name; a tied
        tensor takes its twin's), e.g. a merge computed in float32 while the engine runs in
        bfloat16, so that an export is not rounded to the engine's dtype on the way.
        """
        out_dir = Path(out_dir)
        tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        dtype = self.checkpoint_dtype
        state = self.model.state_dict()
        by_storage = {state[k].data_ptr(): v for k, v in (exact or {}).items()}
        weights = {
            k: by_storage.get(v.data_ptr(), v).detach().to("cpu", dtype) for k, v in state.items()
        }
        self.model.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
        self.tokenizer.save_pretrained(tmp)
        cfg_file = tmp / "config.json"
        cfg = json.loads(cfg_file.read_text())
        cfg["dtype"] = str(dtype).removeprefix("torch.")
        cfg.pop("torch_dtype", None)
        cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)


def finished_rule(
    tokenizer: Any, stop: Sequence[str], until: Callable[[str], bool] | None
) -> Callable[[list[int]], bool]:
    """Whether a row's generated tokens hold a stop string or satisfy ``until``."""

    def check(tokens: list[int]) -> bool:
        if not stop and until is None:
            return False
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        return any(s in text for s in stop) or (until is not None and bool(until(text)))

    return check


def cache_argument(model: torch.nn.Module) -> str:
    """The keyword a model's forward takes its KV cache by.

    transformers 5.2x renamed ``past_key_values`` to ``cache`` and warns on every call that
    uses the old name; older releases know only the old one. A peft wrapper is looked through.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(type(inner).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The KV cache a forward returned, under either release's name."""
    return output["cache"] if "cache" in output else output["past_key_values"]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return text[:cut] if cut >= 0 else text
