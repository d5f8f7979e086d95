"""``train_expert``: one expert (or the all-data baseline) from a base model and task specs.

The steps, each in its own module: resolve the specs (``spec``), build verified conversations
by replaying gold trajectories in the real environments (``data``), tokenise with loss on the
assistant replies (``masking``), train (``loop``, with LoRA from ``lora`` by default), save a
plain HF checkpoint atomically with its ``training.json`` (``save``). A finished expert whose
``training.json`` carries the same cache key (``cache``) is returned without training, so the
demo re-runs for free. Several specs train one model on all of them together: the paper's
"fine-tuning on all data" baseline.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from transformers import AutoModelForCausalLM, AutoTokenizer

import cycleqd
from cycleqd.errors import CycleQDError
from cycleqd.models.checkpoints import checkpoint_dtype
from cycleqd.models.devices import bf16_is_fast, pick_device
from cycleqd.progress import progress_bar
from cycleqd.resources import release_memory
from cycleqd.train.cache import expert_cache_key
from cycleqd.train.config import TrainConfig
from cycleqd.train.data import BuildOptions, build_conversations
from cycleqd.train.loop import LoopSettings, train_loop
from cycleqd.train.lora import add_lora, cast_frozen_weights, merge_lora, restore_frozen_weights
from cycleqd.train.masking import Encoded, encode_conversation
from cycleqd.train.save import read_training_record, save_adapter, save_expert
from cycleqd.train.spec import TrainSource, resolve_spec


@dataclass
class SourceReport:
    """What one spec contributed: samples read, conversations kept, and why others were not."""

    spec: str
    format: str
    samples: int
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    too_long: int = 0
    note: str = ""


@dataclass
class TrainReport:
    """The outcome of :func:`train_expert` (also what ``training.json`` records)."""

    out: Path
    cache_key: str
    skipped: bool
    sources: list[SourceReport]
    hyperparameters: dict[str, Any]
    n_train: int
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    data_seconds: float = 0.0
    device: str = "cpu"
    trainable_parameters: int = 0
    anchors: list[SourceReport] = field(default_factory=list)  # other skills' data, if anchored

    @property
    def dropped(self) -> int:
        """Samples whose gold reply did not pass its environment/grader."""
        return sum(sum(s.dropped.values()) for s in self.sources)

    @property
    def too_long(self) -> int:
        return sum(s.too_long for s in self.sources)

    @property
    def final_loss(self) -> float | None:
        """Mean loss of the last tenth of the steps (one step's loss is noisy)."""
        if not self.losses:
            return None
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return sum(tail) / len(tail)

    def to_record(self) -> dict[str, Any]:
        return {
            "cache_key": self.cache_key,
            "cycleqd_version": cycleqd.__version__,
            "specs": [s.spec for s in self.sources],
            "sources": [asdict(s) for s in self.sources],
            "anchors": [asdict(s) for s in self.anchors],
            "hyperparameters": self.hyperparameters,
            "seed": self.hyperparameters.get("seed"),
            "n_train": self.n_train,
            "dropped": self.dropped,
            "too_long": self.too_long,
            "steps": self.steps,
            "final_loss": self.final_loss,
            "loss_curve": self.losses,
            "seconds": round(self.seconds, 2),
            "data_seconds": round(self.data_seconds, 2),
            "device": self.device,
            "trainable_parameters": self.trainable_parameters,
        }

    @classmethod
    def from_record(cls, out: Path, record: dict[str, Any], *, skipped: bool) -> TrainReport:
        return cls(
            out=out,
            cache_key=record["cache_key"],
            skipped=skipped,
            sources=[SourceReport(**s) for s in record["sources"]],
            anchors=[SourceReport(**s) for s in record.get("anchors", [])],
            hyperparameters=record["hyperparameters"],
            n_train=record["n_train"],
            steps=record["steps"],
            losses=list(record["loss_curve"]),
            seconds=record["seconds"],
            data_seconds=record.get("data_seconds", 0.0),
            device=record["device"],
            trainable_parameters=record.get("trainable_parameters", 0),
        )


def _as_specs(tasks: str | Path | Sequence[str | Path]) -> list[str | Path]:
    specs = [tasks] if isinstance(tasks, str | Path) else list(tasks)
    if not specs:
        raise CycleQDError("train-expert needs at least one task spec")
    return specs


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def _progress(progress: bool | Progress) -> Iterator[Progress | None]:
    """The bars of this training: its own (``True``), none, or a caller's (the demo's), to
    which its tasks are added while it runs and from which they are taken at the end (a
    display shows one live view at a time)."""
    if not isinstance(progress, Progress):
        with progress_bar() if progress else nullcontext(None) as bar:
            yield bar
        return
    before = set(progress.task_ids)
    try:
        yield progress
    finally:
        for task in set(progress.task_ids) - before:
            progress.remove_task(task)


def _check_base(base: Path) -> None:
    if not (base / "config.json").is_file():
        raise CycleQDError(f"{base}: not a Hugging Face model directory (no config.json)")


def cache_key_for(
    base: Path,
    tasks: str | Path | Sequence[str | Path],
    config: TrainConfig,
    anchors: Sequence[str | Path] = (),
) -> tuple[list[TrainSource], list[TrainSource], str]:
    """The resolved sources and anchor sources and the expert cache key for these inputs.

    Anchors count only when ``config.anchor_weight > 0`` (otherwise they change nothing).
    """
    base = Path(base)
    _check_base(base)
    sources = [resolve_spec(s) for s in _as_specs(tasks)]
    kept = [resolve_spec(s) for s in anchors] if config.anchor_weight > 0 else []
    if kept and config.method != "lora":
        raise CycleQDError(
            "anchor_weight > 0 needs method lora (the base's outputs come from the model with "
            "its adapters disabled)"
        )
    return sources, kept, expert_cache_key(base, sources, config.hyperparameters(), kept)


def encode_source(
    source: TrainSource,
    tokenizer: Any,
    options: BuildOptions,
    max_len: int,
    tick: Callable[[int, int], None] | None = None,
) -> tuple[SourceReport, list[Encoded]]:
    """Verified conversations of ``source``, tokenised, and what was dropped and why.

    One function for training and for ``benchmarks/train_step.py``, so a benchmark times the
    very samples an expert trains on. Conversations longer than ``max_len`` tokens or with no
    trained token are left out and counted.
    """
    data = build_conversations(source, options, tick)
    kept = [
        encode_conversation(
            tokenizer, c.messages, c.train_from, sample_id=c.sample_id, source=c.source
        )
        for c in data.conversations
    ]
    fitting = [e for e in kept if len(e.input_ids) <= max_len and e.n_labels]
    report = SourceReport(
        spec=source.spec,
        format=source.format,
        samples=data.n_samples,
        kept=len(fitting),
        dropped=dict(Counter(data.dropped)),
        too_long=len(kept) - len(fitting),
        note=data.note,
    )
    return report, fitting


def _resolved(config: TrainConfig | None, overrides: dict[str, Any]) -> TrainConfig:
    """``config`` with ``overrides`` applied, validated, and its precision decided."""
    config = (config or TrainConfig()).model_copy(update=overrides)
    config = TrainConfig.model_validate(config.model_dump())
    if config.precision == "auto":
        precision = "bfloat16" if bf16_is_fast(pick_device(config.device)) else "float32"
        config = config.model_copy(update={"precision": precision})
    return config


def cached_expert(
    base: Path,
    tasks: str | Path | Sequence[str | Path],
    out: Path,
    config: TrainConfig | None = None,
    *,
    anchor_specs: Sequence[str | Path] = (),
    **overrides: Any,
) -> TrainReport | None:
    """The report of the expert in ``out`` if :func:`train_expert` with these arguments would
    reuse it (same cache key), else None; trains nothing and loads no model."""
    _, _, key = cache_key_for(Path(base), tasks, _resolved(config, overrides), anchor_specs)
    return _reused(Path(out), key)


def _reused(out: Path, key: str) -> TrainReport | None:
    """The report of the expert saved in ``out`` when its ``training.json`` has ``key``."""
    record = read_training_record(out)
    if record is None or record.get("cache_key") != key:
        return None
    return TrainReport.from_record(out, record, skipped=True)


def train_expert(
    base: Path,
    tasks: str | Path | Sequence[str | Path],
    out: Path,
    config: TrainConfig | None = None,
    *,
    force: bool = False,
    progress: bool | Progress = True,
    anchor_specs: Sequence[str | Path] = (),
    **overrides: Any,
) -> TrainReport:
    """Fine-tune ``base`` on ``tasks`` (suite names or data files) and save it to ``out``.

    ``anchor_specs`` (other skills' specs) are the conversations on which the expert is held to
    the base's outputs when ``anchor_weight > 0`` (see :mod:`cycleqd.train.loop`).

    ``overrides`` are :class:`TrainConfig` fields (``epochs=1``...) applied over ``config``.
    Returns at once, with ``skipped=True``, when ``out/training.json`` records the same cache
    key (unless ``force``). Raises :class:`CycleQDError` for a bad spec, file or base model.
    """
    config = _resolved(config, overrides)
    device = pick_device(config.device)
    base, out = Path(base), Path(out)
    sources, anchors, key = cache_key_for(base, tasks, config, anchor_specs)
    reused = None if force else _reused(out, key)
    if reused is not None:
        return reused

    t0 = time.perf_counter()
    _seed_everything(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    options = BuildOptions(
        n=config.n_train,
        seed=config.seed,
        workers=config.workers,
        db_url=config.db_url,
        unsandboxed=config.unsandboxed,
    )
    reports: list[SourceReport] = []
    samples: list[Encoded] = []
    anchor_reports: list[SourceReport] = []
    anchor_samples: list[Encoded] = []
    with _progress(progress) as bar:

        def encode(source: TrainSource) -> tuple[SourceReport, list[Encoded]]:
            task = bar.add_task(f"data {source.label}", total=None, info="") if bar else None

            def tick(done: int, total: int) -> None:
                if bar is not None and task is not None:
                    bar.update(task, completed=done, total=total)

            return encode_source(source, tokenizer, options, config.max_len, tick)

        for source in sources:
            report, fitting = encode(source)
            reports.append(report)
            samples += fitting
        for source in anchors:
            report, fitting = encode(source)
            anchor_reports.append(report)
            anchor_samples += fitting
        if not samples:
            raise CycleQDError(
                "no training conversation left: "
                + "; ".join(f"{r.spec}: {r.dropped or {}} too_long={r.too_long}" for r in reports)
            )
        data_seconds = time.perf_counter() - t0

        _seed_everything(config.seed)  # adapters start the same whatever the data step drew
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
        if config.method == "lora":
            model = add_lora(
                model,
                r=config.lora_r,
                alpha=config.lora_alpha,
                dropout=config.lora_dropout,
                target_modules=config.target_modules,
            )
        # Frozen weights kept in bf16 when autocasting to bf16 (the same training: see
        # cast_frozen_weights); the exact ones are put back before merging.
        frozen_16 = config.method == "lora" and config.precision == "bfloat16"
        if frozen_16:
            cast_frozen_weights(model, torch.bfloat16)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        settings = LoopSettings(
            epochs=config.epochs,
            lr=config.peak_lr,
            batch_size=config.batch_size,
            seed=config.seed,
            warmup_ratio=config.warmup_ratio,
            weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm,
            anchor_weight=config.anchor_weight,
            anchor_batch=config.anchor_batch,
            max_batch_tokens=config.max_batch_tokens,
            autocast=torch.bfloat16 if config.precision == "bfloat16" else None,
        )
        step_task = bar.add_task("train", total=None, info="") if bar else None

        def on_step(step: int, total: int, loss: float) -> None:
            if bar is not None and step_task is not None:
                bar.update(step_task, completed=step, total=total, info=f"loss {loss:.3f}")

        # Train the underlying HF model: peft's wrapper adds nothing to a plain forward pass.
        inner = model.get_base_model() if config.method == "lora" else model
        losses = train_loop(
            inner,
            samples,
            settings,
            pad_id=pad_id,
            device=device,
            on_step=on_step,
            anchors=anchor_samples,
            reference=model.disable_adapter if config.method == "lora" else None,
        )

    # the loop's freed activations back to the OS before the exact weights are loaded for the
    # merge: TCMalloc keeps them for reuse otherwise, and the save would peak on top of them
    release_memory()
    if frozen_16 and config.save != "adapter":
        original = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(device)
        restore_frozen_weights(model, original)
        del original
    as_adapter = config.method == "lora" and config.save == "adapter"
    final = merge_lora(model) if config.method == "lora" and not as_adapter else model
    report = TrainReport(
        out=out,
        cache_key=key,
        skipped=False,
        sources=reports,
        anchors=anchor_reports,
        hyperparameters=config.hyperparameters(),
        n_train=len(samples),
        steps=len(losses),
        losses=[round(x, 5) for x in losses],
        seconds=time.perf_counter() - t0,
        data_seconds=data_seconds,
        device=str(device),
        trainable_parameters=trainable,
    )
    if as_adapter:
        save_adapter(final, tokenizer, out, base, report.to_record())
    else:
        save_expert(final, tokenizer, out, checkpoint_dtype(base), report.to_record())
    return report
