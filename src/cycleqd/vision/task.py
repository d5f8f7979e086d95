"""A segmentation task: mIoU of the resident model's masks on a fixed set of scenes.

It implements the search's :class:`~cycleqd.tasks.base.Task` protocol (a ``name`` and
``evaluate(engine) -> TaskResult``), which is all the search needs: the archives, operators and
run directory are the language path's own.
"""

from __future__ import annotations

import torch

from cycleqd.tasks.base import TaskResult
from cycleqd.vision.metrics import per_image_miou
from cycleqd.vision.model import SegmentationEngine
from cycleqd.vision.scenes import SceneSet


class SegmentationTask:
    """Quality = mean over the scenes of each image's mIoU (torchmetrics)."""

    def __init__(self, name: str, scenes: SceneSet, *, rule: str | None = None) -> None:
        self.name = name
        self.images = scenes.images
        self.targets = scenes.targets(rule or name)

    def evaluate(self, engine: SegmentationEngine) -> TaskResult:
        pred = engine.predict(self.images)
        scores = per_image_miou(pred, self.targets)
        records = [{"sample_id": i, "score": float(s)} for i, s in enumerate(scores)]
        return TaskResult(float(scores.mean().clamp(0.0, 1.0)), records)

    def predictions(self, engine: SegmentationEngine, indices: list[int]) -> torch.Tensor:
        """Predicted masks of a few scenes (for the report's picture)."""
        return engine.predict(self.images[indices])
