"""The procedural scenes: seeded, split-disjoint, every scene with a target, bad input named."""

from __future__ import annotations

import pytest
import torch

from cycleqd.errors import CycleQDError
from cycleqd.vision.scenes import EXPERT_TASKS, generate


def test_same_seed_same_scenes_other_split_other_scenes() -> None:
    a = generate("circles", "test", 6, 32, seed=4)
    b = generate("circles", "test", 6, 32, seed=4)
    assert torch.equal(a.images, b.images) and a.shapes == b.shapes
    c = generate("circles", "train", 6, 32, seed=4)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.images, generate("circles", "test", 6, 32, seed=5).images)


@pytest.mark.parametrize("task", EXPERT_TASKS)
def test_every_scene_has_target_and_background(task: str) -> None:
    scenes = generate(task, "validation", 12, 32, seed=0)
    targets = scenes.targets(task)
    per_image = targets.flatten(1)
    assert bool((per_image.sum(1) > 0).all()) and bool((per_image.sum(1) < 32 * 32).all())
    assert scenes.images.shape == (12, 3, 32, 32)
    assert float(scenes.images.min()) >= 0.0 and float(scenes.images.max()) <= 1.0


def test_task_targets_follow_their_rules() -> None:
    scenes = generate("objects", "test", 20, 32, seed=1)
    everything = scenes.targets("objects")
    red, warm = scenes.targets("red"), scenes.targets("warm")
    circles, squares = scenes.targets("circles"), scenes.targets("squares")
    assert bool((red <= warm).all())  # red objects are warm objects
    assert int((circles & squares).sum()) == 0  # no object is both
    assert bool(((circles | squares | warm) <= everything).all())


def test_bad_input_is_named() -> None:
    with pytest.raises(CycleQDError, match="unknown segmentation task 'hexagons'"):
        generate("hexagons", "test", 2, 32, seed=0)
    with pytest.raises(CycleQDError, match="unknown split"):
        generate("red", "dev", 2, 32, seed=0)
    with pytest.raises(CycleQDError, match="at least 16"):
        generate("red", "test", 2, 8, seed=0)
    with pytest.raises(CycleQDError, match="non-negative"):
        generate("red", "test", 2, 32, seed=-1)
