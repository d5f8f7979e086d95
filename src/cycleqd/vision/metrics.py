"""mIoU of predicted masks, computed by torchmetrics (not by hand).

The score of a model on a task is the mean over images of each image's mIoU over the two classes
(background, target), torchmetrics' ``mean_iou`` with ``include_background=True``. Per-image
values are what the bootstrap over test images resamples. Every scene holds at least one target
and some background, so both classes are present in every target mask and the mean over images
equals torchmetrics' ``MeanIoU`` module accumulated over the set (tests check this).
"""

from __future__ import annotations

import torch
from torchmetrics.functional.segmentation import mean_iou

from cycleqd.errors import CycleQDError

NUM_CLASSES = 2


def per_image_miou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(N,)`` mIoU of index masks ``pred`` and ``target``, both ``(N, H, W)`` in {0, 1}."""
    if pred.shape != target.shape or pred.dim() != 3:
        raise CycleQDError(
            f"masks must both be (N, H, W); got predictions {list(pred.shape)} and "
            f"targets {list(target.shape)}"
        )
    for name, t in (("prediction", pred), ("target", target)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= NUM_CLASSES):
            raise CycleQDError(f"{name} mask holds labels outside 0..{NUM_CLASSES - 1}")
    return mean_iou(
        pred.long(),
        target.long(),
        num_classes=NUM_CLASSES,
        include_background=True,
        input_format="index",
    ).float()
