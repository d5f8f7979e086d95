"""Config validation: key paths in errors, overrides, path resolution, task-expert mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cycleqd.config import load_config
from cycleqd.errors import CycleQDError


def minimal(tmp_path: Path) -> Path:
    data = {
        "base_model": "models/base",
        "experts": [{"name": "a", "path": "models/a"}, {"name": "b", "path": "models/b"}],
        "tasks": [
            {"name": "b", "type": "likelihood", "params": {"data": "b.jsonl"}},
            {"name": "x", "type": "likelihood", "expert": "a", "params": {"data": "x.jsonl"}},
        ],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(minimal(tmp_path))
    assert cfg.base_model == (tmp_path / "models/base").resolve()
    assert cfg.tasks[0].params["data"] == str((tmp_path / "b.jsonl").resolve())
    assert cfg.search.generations == 1200 and cfg.tasks[0].bc.bins == 15
    assert cfg.tasks[0].bc.range == "auto"
    sampler, crossover = cfg.search.sampler, cfg.search.crossover
    assert sampler.kind == "elite" and crossover.kind == "linear"
    assert sampler.params.alpha_low == 0.5 and sampler.params.alpha_high == 0.8
    assert cfg.search.mutation.params.w_max == 0.1 and crossover.params.std == 0.01
    assert cfg.task_experts() == [1, 0]  # by name, then by the explicit key


def test_overrides(tmp_path: Path) -> None:
    cfg = load_config(
        minimal(tmp_path),
        overrides=["search.generations=7", "tasks.1.bc.range=[0, 0.75]", "seed=3"],
    )
    assert cfg.search.generations == 7 and cfg.seed == 3
    assert cfg.tasks[1].bc.range == (0.0, 0.75)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.sampler.kind=best", "search.sampler.kind"),
        ("search.crossover.stdd=1", "search.crossover.stdd: unknown key"),
        ("tasks.0.bc.range=[1, 0]", "tasks.0.bc.range"),
        ("tasks.5.bc.bins=3", "tasks.5"),
        ("experts.1.name=a", "duplicate expert name 'a'"),
        ("nokey", "expected key.path=value"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(CycleQDError) as err:
        load_config(minimal(tmp_path), overrides=[override])
    assert message in str(err.value)


def test_unknown_expert_reference(tmp_path: Path) -> None:
    cfg = load_config(minimal(tmp_path), overrides=["tasks.1.expert=zzz"])
    with pytest.raises(CycleQDError, match=r"tasks\.1\.expert: no expert named 'zzz'"):
        cfg.task_experts()


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("seed: [1,\n")
    with pytest.raises(CycleQDError, match=r"broken\.yaml"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(CycleQDError, match="top level must be a mapping"):
        load_config(path)
