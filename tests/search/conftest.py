"""Fixtures shared by the search tests."""

from __future__ import annotations

import pytest
from helpers import lora_like_family, write_tasks


@pytest.fixture(scope="module")
def lora_family(tmp_path_factory) -> dict:
    """A base, two LoRA-rank experts and the copy/add task files (rebuilt per module)."""
    root = tmp_path_factory.mktemp("lora")
    family = lora_like_family(root, n_experts=2)
    family["data"] = write_tasks(root)
    return family
