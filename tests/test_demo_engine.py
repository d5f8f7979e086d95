"""Which engine the demo evaluates with: the preset's, the user's, or transformers as a fallback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cycleqd.demo import pipeline
from cycleqd.demo.pipeline import Demo, DemoSettings
from cycleqd.demo.presets import PRESETS, load_preset
from cycleqd.errors import CycleQDError


def _demo(tmp_path: Path, preset_engine: str, asked: str | None, said: list[str]) -> Demo:
    preset = dataclasses.replace(PRESETS["mini"], engine=preset_engine)
    settings = DemoSettings(out=tmp_path, preset=preset, engine_kind=asked)
    return Demo(settings, say=said.append)


def test_a_presets_vllm_falls_back_to_transformers_without_vllm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "_has_vllm", lambda: False)
    said: list[str] = []
    demo = _demo(tmp_path, "vllm", None, said)
    assert demo.engine_kind == "hf"
    assert any("vLLM is not installed" in line for line in said)


def test_the_users_engine_wins_over_the_presets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "_has_vllm", lambda: False)
    said: list[str] = []
    assert _demo(tmp_path, "vllm", "vllm", said).engine_kind == "vllm"  # asked: no fallback
    assert _demo(tmp_path, "vllm", "hf", said).engine_kind == "hf"
    assert _demo(tmp_path, "hf", None, said).engine_kind == "hf"
    assert not said


def test_a_vllm_demo_drops_the_presets_shared_pass_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "_has_vllm", lambda: True)
    on_vllm, on_hf = _demo(tmp_path, "vllm", None, []), _demo(tmp_path, "hf", None, [])
    assert on_vllm._engine()["kind"] == "vllm" and on_hf._engine()["kind"] == "hf"
    # the preset's key/value memory reaches vLLM, and only vLLM
    assert on_vllm._engine()["vllm_kv_cache_gb"] == on_vllm.p.vllm_kv_cache_gb
    assert "vllm_kv_cache_gb" not in on_hf._engine()
    shared = {"executor.children_per_batch", "executor.population"}
    assert shared <= set(on_hf._run_settings(None))  # mini shares passes on transformers
    kept = on_vllm._run_settings(None)
    assert not shared & set(kept) and kept["search.final_merge"] == "ties"


def test_a_preset_with_an_unknown_engine_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text("sizes: {n_train: 1, n_val: 1, n_test: 1, generations: 1, engine: tgi}\n")
    with pytest.raises(CycleQDError, match=r"sizes\.engine: 'tgi'"):
        load_preset(path)
