"""Which models may take turns in one engine: :func:`model_signature`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import write_model_family

from cycleqd.models.engines import model_signature


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_model_family(tmp_path_factory.mktemp("family"), n_experts=2)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_experts_of_one_base_share_the_signature(family: dict) -> None:
    signatures = {model_signature(p) for p in [family["base"], *family["experts"].values()]}
    assert len(signatures) == 1


def test_a_checkpoint_name_does_not_change_it(family: dict, tmp_path: Path) -> None:
    other = _copy(family["base"], tmp_path / "renamed")
    config = json.loads((other / "config.json").read_text())
    config["_name_or_path"] = "somewhere/else"
    (other / "config.json").write_text(json.dumps(config))
    assert model_signature(other) == model_signature(family["base"])


@pytest.mark.parametrize(
    ("file", "change"),
    [
        ("config.json", lambda c: {**c, "num_hidden_layers": c["num_hidden_layers"] + 1}),
        ("config.json", lambda c: {**c, "dtype": "bfloat16"}),
        ("tokenizer_config.json", lambda c: {**c, "chat_template": "{{ messages }}"}),
    ],
)
def test_architecture_dtype_and_tokenizer_change_it(
    family: dict, tmp_path: Path, file: str, change
) -> None:
    other = _copy(family["base"], tmp_path / "changed")
    data = json.loads((other / file).read_text())
    (other / file).write_text(json.dumps(change(data)))
    assert model_signature(other) != model_signature(family["base"])
