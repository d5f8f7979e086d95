"""mergekit has no architecture file for Segformer; it infers the layout from the weights. These
check that its merges of Segformer directories cover every tensor and compute what they should."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from cycleqd.merging.baselines import mergekit_module
from cycleqd.vision.model import load_model, new_model, save_model
from cycleqd.vision.pipeline import _merge


def _models(tmp_path: Path) -> tuple[Path, list[Path]]:
    base = save_model(new_model(0), tmp_path / "base")
    experts = []
    for seed in (1, 2):
        model = load_model(base)
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed)
            for p in model.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=gen))
        experts.append(save_model(model, tmp_path / f"expert{seed}"))
    return base, experts


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_linear_merge_is_the_mean_of_every_tensor(tmp_path: Path) -> None:
    base, experts = _models(tmp_path)
    merged = _weights(_merge("linear", base, experts, tmp_path / "linear"))
    a, b = (_weights(e) for e in experts)
    assert merged.keys() == a.keys()
    for name in a:
        if a[name].is_floating_point():
            torch.testing.assert_close(merged[name], (a[name] + b[name]) / 2)
    assert load_model(tmp_path / "linear") is not None


def test_ties_merge_matches_mergekits_in_memory_method(tmp_path: Path) -> None:
    base, experts = _models(tmp_path)
    merged = _weights(_merge("ties", base, experts, tmp_path / "ties"))
    theta0, a, b = _weights(base), *(_weights(e) for e in experts)
    method = mergekit_module("merge_methods.registry").get("ties")
    group_of = mergekit_module("merge_methods.base").TensorGroup.from_tensors
    shared = {p.name: p.default for p in method.spec.parameters if p.scope.name == "SHARED"}
    assert merged.keys() == theta0.keys()
    for name in theta0:
        if not theta0[name].is_floating_point():
            continue
        group = group_of([theta0[name], a[name], b[name]], base_index=0)
        ids = [entry.id for entry in group.non_base]
        expected = method.merge_group(
            group, weight=dict.fromkeys(ids, 1.0), density=dict.fromkeys(ids, 0.5), **shared
        )
        torch.testing.assert_close(merged[name], expected.to(merged[name].dtype))
