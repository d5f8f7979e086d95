"""Classic model-merging baselines (task arithmetic, TIES, DARE, ...) computed by mergekit.

CycleQD is compared against the usual static merges of the same experts. Those methods are
already implemented, reviewed and widely used in mergekit, so we call its library API
(:class:`mergekit.config.MergeConfiguration` + :func:`mergekit.merge.run_merge`) instead of
re-implementing them; this module only translates our simple "base + experts + parameters"
description into a mergekit configuration, validates it against the method's own parameter
specification, and writes the result atomically as a standard Hugging Face directory. A peft
LoRA adapter expert becomes mergekit's ``base+lora`` model, which mergekit merges through peft.

Parameters follow mergekit's names. Per-model ones (``weight``, ``density``, ``gamma``,
``epsilon``) take one value for every expert or a list with one value per expert; shared ones
(``lambda``, ``normalize``, ``rescale``, ``int8_mask``) take one value. ``seed`` seeds the
random drop of DARE-style methods so a merge is reproducible.
"""

from __future__ import annotations

import importlib
import json
import logging
import random
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cycleqd.allocator import returning_freed_memory
from cycleqd.errors import CycleQDError
from cycleqd.models.checkpoints import adapter_base, checkpoint_dtype

__all__ = ["METHODS", "MethodInfo", "describe_method", "merge", "parse_params"]

# Methods that make sense as "merge these experts (fine-tuned from base)" baselines and run on
# plain CPU tensors. Other mergekit methods need exactly two models (slerp), extra inputs
# (passthrough slices) or a different calling convention, so they are not offered here.
METHODS: tuple[str, ...] = (
    "linear",
    "task_arithmetic",
    "ties",
    "dare_linear",
    "dare_ties",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
)

_RESERVED = ("seed",)


def mergekit_module(module: str) -> Any:
    """Import a mergekit module, hiding the numpy.core DeprecationWarning its unpickler raises
    at import time (noise for our users; mergekit's to fix)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module(f"mergekit.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != "mergekit":
                raise
            raise CycleQDError("merge baselines need mergekit: pip install mergekit") from exc


@dataclass(frozen=True)
class MethodInfo:
    """A method's parameters as mergekit declares them: name -> default (None if required)."""

    name: str
    uses_base: bool
    per_model: dict[str, Any]
    shared: dict[str, Any]


def describe_method(method: str) -> MethodInfo:
    """Parameters of ``method`` read from mergekit's own specification (for help and checks)."""
    if method not in METHODS:
        raise CycleQDError(f"unknown merge method {method!r}; expected one of {', '.join(METHODS)}")
    mk = mergekit_module("merge_methods.base")
    spec = mergekit_module("merge_methods.registry").get(method).spec
    per_model, shared = {}, {}
    for p in spec.parameters:
        default = None if p.default is mk.MISSING else p.default
        (shared if p.scope == mk.ParameterScope.SHARED else per_model)[p.name] = default
    uses_base = spec.contract.base in (mk.BasePolicy.REQUIRED, mk.BasePolicy.OPTIONAL)
    return MethodInfo(method, uses_base, per_model, shared)


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """Parse CLI ``key=value`` items: ``weight=0.5,0.3`` (a list), ``normalize=false``, ``seed=1``.

    Values become bools (true/false), ints, floats or, with commas, lists of those; anything
    else stays a string for mergekit to validate.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise CycleQDError(f"merge parameter {item!r} is not of the form key=value")
        if key in out:
            raise CycleQDError(f"merge parameter {key!r} given twice")
        parts = [_scalar(v) for v in raw.split(",")]
        out[key] = parts if "," in raw else parts[0]
    return out


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def merge(
    method: str,
    base: Path | None,
    experts: Sequence[Path],
    out: Path,
    params: Mapping[str, Any] | None = None,
    *,
    dtype: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Merge ``experts`` (fine-tuned from ``base``) with ``method`` into the directory ``out``.

    ``base`` is required by every method except ``linear``, which averages the experts alone
    (a given base is then ignored). Missing ``weight``s default to 1.0 per expert, so
    ``linear`` is the plain mean and ``task_arithmetic`` adds every task vector in full. The
    output is built in a temporary sibling directory and renamed into place, so ``out`` is
    either complete or absent; an existing non-empty ``out`` is an error unless ``overwrite``.
    ``dtype`` ``auto`` writes the base checkpoint's dtype. Returns ``out``.
    """
    info = describe_method(method)
    experts = [Path(e) for e in experts]
    if not experts:
        raise CycleQDError(f"merge method {method!r} needs at least one expert model")
    if info.uses_base and base is None:
        raise CycleQDError(f"merge method {method!r} needs a base model (--base)")
    # an adapter expert is applied to the given base, or to the one its adapter_config names
    lora_bases = {
        e: Path(base) if base is not None else adapter_base(e)
        for e in experts
        if (e / "adapter_config.json").is_file()
    }
    base = Path(base) if base is not None and info.uses_base else None
    models = ([base] if base is not None else []) + experts
    _check_models([lora_bases.get(m, m) for m in models])
    if len({m.resolve() for m in experts}) != len(experts):
        raise CycleQDError(f"the same expert directory is given twice: {[str(e) for e in experts]}")
    params = dict(params or {})
    seed = params.pop("seed", None)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise CycleQDError(f"merge parameter seed must be an integer, got {seed!r}")
    shared, per_expert = _split_params(info, params, len(experts))

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise CycleQDError(f"output directory {out} already exists and is not empty")
    if out.resolve() in {m.resolve() for m in models}:
        raise CycleQDError(f"output directory {out} is one of the models being merged")
    # the model whose config, generation config and (with ``auto``) dtype the merge takes
    donor = base if base is not None else lora_bases.get(experts[0], experts[0])
    if dtype == "auto":  # the checkpoints' own: a bf16 model's merge is not twice its size
        dtype = str(checkpoint_dtype(donor)).removeprefix("torch.")
    config = _merge_config(method, base, experts, lora_bases, shared, per_expert, dtype)

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}-", dir=out.parent) as tmp:
        options = mergekit_module("options").MergeOptions(
            device="cpu",
            copy_tokenizer=True,
            random_seed=seed,
            quiet=True,
            write_model_card=True,
            safe_serialization=True,
            # mergekit merges each adapter expert into a full copy of its base here (peft)
            lora_merge_cache=str(Path(tmp) / "lora-merged"),
        )
        build = Path(tmp) / "merged"
        try:
            with (
                _preserved_rng(),
                _one_thread(seed is not None),
                returning_freed_memory(),  # each tensor is used once (cycleqd.allocator)
                _without_torch_dtype_notice(),
                warnings.catch_warnings(),
            ):
                # peft (loading an adapter expert for mergekit) calls a transformers API that
                # 5.x deprecates; the notice is theirs, not the user's to act on
                warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
                mergekit_module("merge").run_merge(config, str(build), options=options)
        except Exception as exc:
            raise CycleQDError(f"mergekit failed to merge with {method!r}: {exc}") from exc
        finally:
            _forget_loaders()
        _modern_dtype_key(build / "config.json")
        for name in ("generation_config.json",):
            if (donor / name).is_file() and not (build / name).exists():
                shutil.copy2(donor / name, build / name)
        if out.exists():
            out.rename(Path(tmp) / "previous")
        build.rename(out)
    return out


def _forget_loaders() -> None:
    """Drop mergekit's loaders of the merged checkpoints.

    Why: mergekit keeps every model it has loaded in a class-level cache for the life of the
    process, with its safetensors files mapped; in the demo that kept the base and three
    experts resident (2.1 GB for SmolLM2-135M in float32) through the search and the test
    evaluation after the merges.
    """
    cache = mergekit_module("io.tasks").LoaderCache()
    cache.flush_all()
    cache.loaders.clear()


@contextmanager
def _preserved_rng() -> Iterator[None]:
    """Undo the global reseeding mergekit does for ``random_seed``.

    mergekit seeds Python, NumPy and torch globally (``transformers.set_seed``); a merge run
    inside a search must not silently change the caller's random streams.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextmanager
def _one_thread(active: bool) -> Iterator[None]:
    """Run a seeded (random) merge on one CPU thread, then restore the thread count.

    Why: torch draws a CPU ``bernoulli`` mask in per-thread chunks, so mergekit's DARE masks for
    one seed differed between a 1-thread and a 2-thread process (measured: another DARE-TIES
    model, and test scores that moved by several samples). One thread makes the seed alone decide
    the merge, on any machine.
    """
    if not active:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_models(models: Sequence[Path]) -> None:
    """Every input is a HF directory of one architecture: fail early with the odd one named."""
    types = {}
    for m in models:
        cfg = m / "config.json"
        if not cfg.is_file():
            raise CycleQDError(f"{m} is not a Hugging Face model directory (no config.json)")
        try:
            types[m] = json.loads(cfg.read_text()).get("model_type")
        except ValueError as exc:
            raise CycleQDError(f"{cfg} is not valid JSON: {exc}") from exc
    first = models[0]
    for m, kind in types.items():
        if kind != types[first]:
            raise CycleQDError(
                f"cannot merge {m} (model_type {kind!r}) with {first} ({types[first]!r})"
            )


def _split_params(
    info: MethodInfo, params: Mapping[str, Any], n_experts: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Check names against mergekit's spec and expand per-model values to one per expert."""
    shared: dict[str, Any] = {}
    per_expert: list[dict[str, Any]] = [{} for _ in range(n_experts)]
    for key, value in params.items():
        if key in info.shared:
            if isinstance(value, list):
                raise CycleQDError(f"merge parameter {key!r} takes one value, got {value!r}")
            shared[key] = value
        elif key in info.per_model:
            values = value if isinstance(value, list) else [value] * n_experts
            if len(values) != n_experts:
                raise CycleQDError(
                    f"merge parameter {key!r} has {len(values)} values for {n_experts} experts"
                )
            for row, v in zip(per_expert, values, strict=True):
                row[key] = v
        else:
            valid = sorted({*info.shared, *info.per_model, *_RESERVED})
            raise CycleQDError(
                f"merge method {info.name!r} has no parameter {key!r}; valid: {', '.join(valid)}"
            )
    if "weight" in info.per_model and "weight" not in params:
        for row in per_expert:
            row["weight"] = 1.0
    return shared, per_expert


def _merge_config(
    method: str,
    base: Path | None,
    experts: Sequence[Path],
    lora_bases: Mapping[Path, Path],
    shared: Mapping[str, Any],
    per_expert: Sequence[Mapping[str, Any]],
    dtype: str,
) -> Any:
    """The mergekit configuration; paths go in as ``{"path": ...}`` so an ``@`` in a directory
    name is not read as a hub revision. An adapter expert is mergekit's ``base+lora`` model."""
    configuration = mergekit_module("config").MergeConfiguration

    def ref(p: Path) -> dict[str, Any]:
        if p in lora_bases:
            return {
                "model": {"path": str(lora_bases[p].resolve())},
                "lora": {"path": str(p.resolve())},
            }
        return {"model": {"path": str(p.resolve())}}

    data: dict[str, Any] = {
        "merge_method": method,
        "dtype": dtype,
        "models": [
            {"model": ref(e), "parameters": dict(row)}
            for e, row in zip(experts, per_expert, strict=True)
        ],
    }
    if base is not None:
        data["base_model"] = ref(base)
    if shared:
        data["parameters"] = dict(shared)
    try:
        return configuration.model_validate(data)
    except Exception as exc:
        raise CycleQDError(f"invalid {method!r} merge configuration: {exc}") from exc


class _DropTorchDtypeNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "`torch_dtype` is deprecated" not in record.getMessage()


@contextmanager
def _without_torch_dtype_notice() -> Iterator[None]:
    """mergekit sets ``config.torch_dtype`` on the merged model's config, which makes transformers
    log a deprecation notice on every merge. That call is mergekit's, not ours; only this one
    notice is dropped, only for the merge, and the written config is fixed by
    :func:`_modern_dtype_key` so that loading the merge does not print it either.
    """
    logger = logging.getLogger("transformers.configuration_utils")
    drop = _DropTorchDtypeNotice()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _modern_dtype_key(config_file: Path) -> None:
    """Write mergekit's ``torch_dtype`` as ``dtype``, the key transformers 5 reads.

    mergekit still sets the old attribute, and every later load of the merged model would print
    transformers' "`torch_dtype` is deprecated" warning.
    """
    if not config_file.is_file():
        return
    cfg = json.loads(config_file.read_text())
    if "torch_dtype" in cfg:
        cfg.setdefault("dtype", cfg.pop("torch_dtype"))
        config_file.write_text(json.dumps(cfg, indent=2, sort_keys=True))
