"""Shared fixtures: tiny real transformer models built locally (no hub, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_model_family, write_tasks

from cycleqd.testing.tiny import build_char_tokenizer, build_random_model


@pytest.fixture(scope="session")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("family")
    fam = write_model_family(root)
    fam["data"] = write_tasks(root)
    return fam


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama with a character tokenizer: the demo's base in its miniature."""
    root = tmp_path_factory.mktemp("tiny-base")
    tok = build_char_tokenizer()
    build_random_model("llama", tok, seed=0, hidden=32, intermediate=64, layers=2).save_pretrained(
        root
    )
    tok.save_pretrained(root)
    return root
