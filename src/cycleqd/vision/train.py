"""Training the base and the experts, cached by everything that determines the weights.

The base starts from a seeded random Segformer and learns the general ``objects`` task; each
expert starts from the base and learns one specific task. Training is full fine-tuning (the model
is small), AdamW, cross-entropy on logits upsampled to the image size, random horizontal flips
(every task is invariant to them). A trained model is a Hugging Face directory with
``training.json`` (loss curve, settings); an identical second request returns it at once: the
key covers the settings, the scene generator's version and the starting weights' content.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from cycleqd.errors import CycleQDError
from cycleqd.vision.model import load_model, logits_at, new_model, save_model
from cycleqd.vision.scenes import generate

#: Bump when the scene generator or the training loop changes what a spec produces.
TRAIN_FORMAT = 3


@dataclass(frozen=True)
class TrainSpec:
    """Everything that, with the starting weights, determines a trained model."""

    task: str
    n_train: int
    image_size: int
    steps: int
    batch_size: int
    lr: float
    seed: int

    def check(self) -> None:
        for field in ("n_train", "image_size", "steps", "batch_size"):
            if getattr(self, field) < 1:
                raise CycleQDError(f"training {field} must be at least 1, got {self}")
        if not self.lr > 0:
            raise CycleQDError(f"training lr must be positive, got {self.lr}")


Progress = Callable[[int, int, float], None]


def train(model: nn.Module, spec: TrainSpec, progress: Progress | None = None) -> list[float]:
    """Train ``model`` in place on ``spec``'s task; the loss of every step."""
    spec.check()
    scenes = generate(spec.task, "train", spec.n_train, spec.image_size, spec.seed)
    targets = scenes.targets(spec.task)
    gen = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(_warmup_cosine, steps=spec.steps))
    losses: list[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)  # dropout and drop-path draws
        model.train()
        for step in range(spec.steps):
            idx = torch.randint(0, len(scenes), (spec.batch_size,), generator=gen)
            x, y = scenes.images[idx], targets[idx]
            flip = torch.rand(spec.batch_size, generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            y = torch.where(flip[:, None, None], y.flip(-1), y)
            loss = nn.functional.cross_entropy(logits_at(model, x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step + 1, spec.steps, losses[-1])
        model.eval()
    return losses


def _warmup_cosine(step: int, *, steps: int) -> float:
    """Learning-rate factor: linear warm-up over the first tenth, then a cosine decay to 0."""
    warm = max(1, steps // 10)
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def weights_digest(path: Path | None) -> str:
    """Content hash of a model directory's weights (``"scratch"`` for a fresh model)."""
    if path is None:
        return "scratch"
    digest = hashlib.sha256()
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise CycleQDError(f"{path}: no .safetensors weights to start from")
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


def train_cached(
    spec: TrainSpec,
    start: Path | None,
    cache_root: Path,
    *,
    progress: Progress | None = None,
) -> tuple[Path, bool]:
    """The trained model's directory under ``cache_root`` and whether it came from the cache.

    ``start`` is the model to fine-tune (``None``: a fresh model seeded by ``spec.seed``). The
    directory is written under a temporary name and renamed, so a killed run leaves no half
    model behind a valid key.
    """
    spec.check()
    key_data = {"format": TRAIN_FORMAT, "spec": asdict(spec), "start": weights_digest(start)}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:24]
    out = Path(cache_root) / f"{spec.task}-{key}"
    if (out / "training.json").is_file():
        return out, True
    model = new_model(spec.seed) if start is None else load_model(start)
    started = time.perf_counter()
    losses = train(model, spec, progress)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tmp)
    info = {**key_data, "seconds": round(time.perf_counter() - started, 2), "losses": losses}
    (tmp / "training.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out, False
