"""Training is seeded and cached by its inputs; models are ordinary Hugging Face directories."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file

from cycleqd.errors import CycleQDError
from cycleqd.vision.model import load_model
from cycleqd.vision.train import TrainSpec, train_cached

SPEC = TrainSpec(task="objects", n_train=8, image_size=16, steps=3, batch_size=4, lr=1e-3, seed=2)


def test_same_inputs_same_weights_and_a_cache_hit(tmp_path: Path) -> None:
    a, cached_a = train_cached(SPEC, None, tmp_path / "one")
    b, cached_b = train_cached(SPEC, None, tmp_path / "two")
    assert not cached_a and not cached_b
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)
    again, cached = train_cached(SPEC, None, tmp_path / "one")
    assert cached and again == a
    info = json.loads((a / "training.json").read_text())
    assert len(info["losses"]) == SPEC.steps and info["spec"]["task"] == "objects"
    # a plain Hugging Face directory: config, weights, image processor settings
    assert (a / "preprocessor_config.json").is_file()
    assert type(load_model(a)).__name__ == "SegformerForSemanticSegmentation"
    # fine-tuning from it is keyed by its content, so another start is another model
    expert, _ = train_cached(replace(SPEC, task="red"), a, tmp_path)
    assert expert.name.startswith("red-")


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(CycleQDError, match="steps must be at least 1"):
        train_cached(replace(SPEC, steps=0), None, tmp_path)
    with pytest.raises(CycleQDError, match=r"no \.safetensors weights"):
        train_cached(SPEC, tmp_path, tmp_path / "cache")
    with pytest.raises(CycleQDError, match="not a Hugging Face model directory"):
        load_model(tmp_path)
