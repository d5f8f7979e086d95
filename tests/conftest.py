"""Shared fixtures: tiny real transformer models built locally (no hub, no network)."""

from __future__ import annotations

import pytest
from helpers import write_model_family, write_tasks


@pytest.fixture(scope="session")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("family")
    fam = write_model_family(root)
    fam["data"] = write_tasks(root)
    return fam
