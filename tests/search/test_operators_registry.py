"""Operators by name: configs pick them with ``kind``, each validates its own parameters, the
loop runs whatever is registered, and configs of earlier versions still load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cycleqd.config import dump_config, load_config
from cycleqd.errors import CycleQDError
from cycleqd.search.operators import CROSSOVERS, FINAL_MERGES, MUTATIONS, SAMPLERS

FAMILIES = {
    "sampler": SAMPLERS,
    "crossover": CROSSOVERS,
    "mutation": MUTATIONS,
    "final_merge": FINAL_MERGES,
}


def minimal(tmp_path: Path, search: dict | None = None) -> dict:
    for name in ("base", "a", "b"):
        (tmp_path / name).mkdir(exist_ok=True)
    return {
        "base_model": str(tmp_path / "base"),
        "experts": [{"name": "a", "path": str(tmp_path / "a")}, {"name": "b", "path": "b"}],
        "tasks": [{"name": "a", "type": "likelihood"}, {"name": "b", "type": "likelihood"}],
        "search": search or {},
    }


@pytest.mark.parametrize(
    ("section", "kind"),
    [(s, k) for s, reg in FAMILIES.items() for k in reg.names()],
)
def test_every_operator_round_trips_through_a_config_file(
    tmp_path: Path, section: str, kind: str
) -> None:
    config = load_config(data=minimal(tmp_path, {section: kind}))
    choice = getattr(config.search, section)
    assert choice.kind == kind
    assert choice.params == FAMILIES[section].get(kind).params()  # the defaults
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(config))
    again = load_config(path)
    assert again == config and dump_config(again) == dump_config(config)


def test_parameters_are_the_chosen_operators_own(tmp_path: Path) -> None:
    search = {"mutation": {"kind": "gaussian", "std": 1e-3}, "final_merge": "ties"}
    config = load_config(data=minimal(tmp_path, search), overrides=["search.final_merge.density=1"])
    assert config.search.mutation.params.std == 1e-3
    assert (config.search.final_merge.kind, config.search.final_merge.params.density) == ("ties", 1)
    dumped = yaml.safe_load(dump_config(config))["search"]
    assert dumped["mutation"] == {"kind": "gaussian", "std": 1e-3}
    assert dumped["final_merge"] == {"kind": "ties", "density": 1.0}


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"mutation": {"kind": "svd", "std": 1e-3}}, "search.mutation.std: unknown key (mutation "),
        ({"crossover": "blend"}, "search.crossover.kind: unknown crossover 'blend' (known: linear"),
        ({"final_merge": {"kind": "ties", "density": 2}}, "search.final_merge.density"),
        ({"final_merge": {"kind": "assemble", "density": 1}}, "takes: no parameters"),
        ({"sampler": 3}, "search.sampler: expected a sampler name"),
    ],
)
def test_bad_operator_settings_name_the_key(tmp_path: Path, search: dict, message: str) -> None:
    with pytest.raises(CycleQDError) as err:
        load_config(data=minimal(tmp_path, search))
    assert message in str(err.value)


def test_a_config_of_the_earlier_layout_still_loads(tmp_path: Path) -> None:
    # what a run directory's config.yaml held before operators had their own parameter models:
    # every operator's parameters side by side, the final merge's as top-level search keys
    old = minimal(tmp_path) | {
        "search": {
            "generations": 5,
            "sampler": {"kind": "random", "alpha_low": 0.5, "alpha_high": 0.8},
            "crossover": {"mean": 1.0, "std": 0.01, "per_layer": False, "kind": "per_expert"},
            "mutation": {"kind": "svd", "w_max": 0.2, "signed": True, "std": 0.0003},
            "final_temperature": 0.5,
            "final_model": "best_of",
            "final_merge": "ties",
            "final_density": 0.7,
            "plot_every": 0,
        }
    }
    config = load_config(data=old).search
    assert config.sampler.kind == "random" and config.crossover.kind == "per_expert"
    assert config.mutation.params.w_max == 0.2 and config.mutation.params.signed
    assert config.final_merge.kind == "ties" and config.final_merge.params.density == 0.7
    assert config.final_model == "best_of" and config.generations == 5


def test_the_config_schema_lists_every_operator_and_its_parameters() -> None:
    search = run_config_schema()["$defs"]["SearchConfig"]["properties"]
    for section, registry in FAMILIES.items():
        options = search[section]["anyOf"]
        assert options[0] == {"enum": registry.names()}
        kinds = {o["title"]: o["properties"] for o in options[1:]}
        assert list(kinds) == registry.names()
        for kind, props in kinds.items():
            params = set(registry.get(kind).params.model_fields)
            assert set(props) == {"kind", *params}, (section, kind)


def run_config_schema() -> dict:
    from cycleqd.config import RunConfig

    return RunConfig.model_json_schema()
