"""Procedural segmentation scenes: coloured shapes on textured backgrounds, fully seeded.

Why procedural: no real segmentation set fits this machine's disk and network rules, and a
generator lets tasks be designed to be alike or unlike on purpose (the paper's finding is that
merging is easier the more alike the tasks are). Every scene holds 2-4 non-overlapping objects,
each a circle, square or triangle in one of four colours, on a grey background with a random
low-frequency texture and pixel noise, so neither brightness nor texture alone gives the answer.

A task is a rule that marks some objects as target (class 1) and everything else as background
(class 0). ``objects`` (every object) is the general task the base model is trained on;
``circles`` and ``squares`` select by shape, ``red`` and ``warm`` (red or yellow) by colour:
``red``/``warm`` share half their targets, ``circles``/``squares`` none but ask the same kind of
question, and shape against colour pairs are the unlike ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cycleqd.errors import CycleQDError

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.15, 0.15),
    "yellow": (0.90, 0.80, 0.10),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.15, 0.30, 0.85),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")


@dataclass(frozen=True)
class TaskRule:
    """Which objects are targets, and how to force one into a scene (so no image lacks one)."""

    description: str
    kind: str  # what the rule looks at: "shape", "colour" or "any" (a task-design similarity)
    selects: Callable[[str, str], bool]  # (shape, colour) -> target?
    forced_shape: tuple[str, ...] = SHAPES
    forced_colour: tuple[str, ...] = tuple(COLOURS)


TASKS: dict[str, TaskRule] = {
    "objects": TaskRule("every object", "any", lambda s, c: True),
    "circles": TaskRule("circles", "shape", lambda s, c: s == "circle", forced_shape=("circle",)),
    "squares": TaskRule("squares", "shape", lambda s, c: s == "square", forced_shape=("square",)),
    "red": TaskRule("red objects", "colour", lambda s, c: c == "red", forced_colour=("red",)),
    "warm": TaskRule(
        "red or yellow objects",
        "colour",
        lambda s, c: c in ("red", "yellow"),
        forced_colour=("red", "yellow"),
    ),
}
#: The experts' tasks, in table order (``objects`` is the base's general task).
EXPERT_TASKS: tuple[str, ...] = ("circles", "squares", "red", "warm")


@dataclass
class SceneSet:
    """Images ``(N, 3, H, W)`` in [0, 1] and each object's shape, colour and pixel mask."""

    images: torch.Tensor
    shapes: list[list[str]]
    colours: list[list[str]]
    object_masks: list[torch.Tensor]  # per image: (n_objects, H, W) bool

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def targets(self, task: str) -> torch.Tensor:
        """``(N, H, W)`` long: 1 on the task's target objects, 0 elsewhere."""
        rule = task_rule(task)
        out = torch.zeros(self.images.shape[0], *self.images.shape[2:], dtype=torch.long)
        for i, masks in enumerate(self.object_masks):
            for k, (shape, colour) in enumerate(zip(self.shapes[i], self.colours[i], strict=True)):
                if rule.selects(shape, colour):
                    out[i][masks[k]] = 1
        return out


def task_rule(task: str) -> TaskRule:
    if task not in TASKS:
        raise CycleQDError(f"unknown segmentation task {task!r} (known: {', '.join(TASKS)})")
    return TASKS[task]


def _shape_mask(shape: str, cy: float, cx: float, r: float, yy: np.ndarray, xx: np.ndarray):
    if shape == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if shape == "square":
        half = 0.85 * r
        return (np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= half)
    # an upward triangle: apex above the centre, base below it
    top, bottom = cy - r, cy + 0.8 * r
    t = (yy - top) / (bottom - top)  # 0 at the apex, 1 at the base
    return (t >= 0) & (t <= 1) & (np.abs(xx - cx) <= t * 1.05 * r)


def _background(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    grey = rng.uniform(0.3, 0.7)
    angle, freq = rng.uniform(0, np.pi), rng.uniform(1.0, 4.0) * 2 * np.pi / size
    phase = rng.uniform(0, 2 * np.pi)
    wave = 0.12 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
    tint = rng.normal(0.0, 0.04, size=3)
    img = grey + wave[None] + tint[:, None, None]
    return img + rng.normal(0.0, 0.03, size=(3, size, size))


SPLITS: tuple[str, ...] = ("train", "validation", "test")


def generate(task: str, split: str, n: int, size: int, seed: int) -> SceneSet:
    """``n`` scenes of ``size`` x ``size`` pixels, each with at least one target of ``task``.

    The same ``(task, split, n, size, seed)`` always gives the same scenes, and the splits draw
    from distinct streams, so test scenes are never training scenes.
    """
    rule = task_rule(task)
    if split not in SPLITS:
        raise CycleQDError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    if n < 1:
        raise CycleQDError(f"need at least one scene, got n={n}")
    if seed < 0:
        raise CycleQDError(f"the seed must be a non-negative integer, got {seed}")
    if size < 16:
        raise CycleQDError(f"scenes need at least 16 x 16 pixels, got size={size}")
    task_key = int.from_bytes(task.encode()[:8].ljust(8, b"\0"), "little")
    rng = np.random.default_rng([seed, SPLITS.index(split), size, task_key])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.zeros((n, 3, size, size), dtype=np.float32)
    shapes: list[list[str]] = []
    colours: list[list[str]] = []
    masks: list[torch.Tensor] = []
    for i in range(n):
        img = _background(rng, size, yy, xx)
        placed: list[tuple[float, float, float]] = []
        scene_shapes, scene_colours, scene_masks = [], [], []
        for k in range(int(rng.integers(2, 4))):
            if k == 0:  # the forced target
                shape = str(rng.choice(rule.forced_shape))
                colour = str(rng.choice(rule.forced_colour))
            else:
                shape, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
            for _ in range(30):  # rejection sampling of a free spot
                r = rng.uniform(0.12, 0.22) * size
                cy, cx = rng.uniform(r + 1, size - r - 1, size=2)
                if all(np.hypot(cy - py, cx - px) > r + pr + 2 for py, px, pr in placed):
                    break
            else:
                if k == 0:
                    raise CycleQDError(f"could not place an object in a {size}px scene")
                continue
            placed.append((cy, cx, r))
            mask = _shape_mask(shape, cy, cx, r, yy, xx)
            rgb = np.clip(np.array(COLOURS[colour]) + rng.normal(0, 0.05, size=3), 0, 1)
            shade = 1.0 + 0.15 * (xx - cx) / (2 * r)  # a light gradient across the object
            img[:, mask] = (rgb[:, None] * shade[mask][None]).astype(np.float32)
            scene_shapes.append(shape)
            scene_colours.append(colour)
            scene_masks.append(torch.from_numpy(mask))
        images[i] = np.clip(img, 0.0, 1.0)
        shapes.append(scene_shapes)
        colours.append(scene_colours)
        masks.append(torch.stack(scene_masks))
    return SceneSet(torch.from_numpy(images), shapes, colours, masks)
