"""docs/config.md is generated from the config's models: it must be what they say now."""

from __future__ import annotations

from pathlib import Path

from cycleqd.config import RunConfig
from cycleqd.report.config_doc import OPERATORS, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_the_committed_reference_is_current() -> None:
    assert DOC.read_text() == render(), (
        "docs/config.md is stale: python -m cycleqd.report.config_doc > docs/config.md"
    )


def test_the_reference_names_every_key_and_operator_kind() -> None:
    text = render()
    for section in ("search", "basis", "engine", "executor"):
        model = RunConfig.model_fields[section].annotation
        for key in model.model_fields:  # type: ignore[union-attr]
            assert f"`{section}.{key}`" in text, (section, key)
    for path, registry in OPERATORS.items():
        for kind in registry.names():
            assert f"| `{kind}` |" in text, (path, kind)
            for param in registry.get(kind).params.model_fields:
                assert f"`{param}`" in text
