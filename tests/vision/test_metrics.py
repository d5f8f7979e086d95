"""mIoU comes from torchmetrics; these pin down what our score means on masks small enough to
count by hand."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.segmentation import MeanIoU

from cycleqd.errors import CycleQDError
from cycleqd.vision.metrics import per_image_miou


def test_hand_made_mask_pair() -> None:
    # 3 x 4 image; target: the left half is the object (6 pixels), prediction: the left three
    # columns (9 pixels).
    target = torch.tensor([[[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]])
    pred = torch.tensor([[[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0]]])
    # object: intersection 6, union 9 -> 2/3; background: intersection 3, union 6 -> 1/2
    expected = (6 / 9 + 3 / 6) / 2
    assert per_image_miou(pred, target).tolist() == pytest.approx([expected])


def test_a_class_absent_from_both_masks_is_left_out_of_the_mean() -> None:
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    pred = torch.tensor([[[0, 0], [0, 1]]])
    # the object class is only in the prediction: object IoU 0/1 = 0, background 3/4
    assert per_image_miou(pred, target).tolist() == pytest.approx([(0.0 + 0.75) / 2])
    # both empty of objects: only the background counts, and it is perfect
    assert per_image_miou(target, target).tolist() == pytest.approx([1.0])


def test_mean_of_images_equals_torchmetrics_module_when_both_classes_are_present() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 2, (5, 8, 8), generator=gen)
    pred = torch.randint(0, 2, (5, 8, 8), generator=gen)
    module = MeanIoU(num_classes=2, include_background=True, input_format="index")
    module.update(pred, target)
    assert float(per_image_miou(pred, target).mean()) == pytest.approx(float(module.compute()))


def test_bad_masks_are_named() -> None:
    with pytest.raises(CycleQDError, match="must both be"):
        per_image_miou(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3))
    with pytest.raises(CycleQDError, match="prediction mask holds labels"):
        per_image_miou(torch.full((1, 2, 2), 2), torch.zeros(1, 2, 2, dtype=torch.long))
