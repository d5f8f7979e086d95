"""The in-place growing KV cache: the same keys, values and generations as transformers' own."""

from __future__ import annotations

import pytest
import torch
from helpers import write_model_family
from transformers.cache_utils import DynamicLayer

from cycleqd.models.engine import HFEngine
from cycleqd.models.kv_cache import GrowingLayer, grows_in_place


def test_layer_holds_what_concatenation_holds() -> None:
    gen = torch.Generator().manual_seed(0)
    grow, cat = GrowingLayer(), DynamicLayer()
    steps = [torch.randn(3, 2, n, 4, generator=gen) for n in (5, 1, 1, 70, 1)]
    for k in steps:
        got, want = grow.update(k, -k), cat.update(k, -k)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert grow.get_seq_length() == cat.get_seq_length() == 78
    assert grow._keys.shape[-2] > 78  # spare room: the next step writes in place
    keep = torch.tensor([2, 0])
    grow.batch_select_indices(keep)
    cat.batch_select_indices(keep)
    assert torch.equal(grow.keys, cat.keys) and torch.equal(grow.values, cat.values)
    grow.batch_repeat_interleave(2)
    cat.batch_repeat_interleave(2)
    k = torch.randn(4, 2, 1, 4, generator=gen)
    got, want = grow.update(k, k), cat.update(k, k)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    grow.crop(-3)
    cat.crop(-3)
    assert torch.equal(grow.keys, cat.keys)
    with pytest.raises(ValueError, match="negative"):
        grow.crop(2)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_generations_equal_transformers_cache(arch: str, tmp_path) -> None:
    """Long enough for the buffers to grow twice, with rows leaving the batch at different
    steps and a shared prefix repeated over the rows."""
    family = write_model_family(tmp_path, arch, n_experts=0)
    growing = HFEngine(family["base"], batch_size=4, min_shared_prefix=2)
    plain = HFEngine(family["base"], batch_size=4, min_shared_prefix=2, grow_cache=False)
    assert growing.grow_cache and not plain.grow_cache
    prompts = ["say: copy ab=", "say: copy abcd=", "say: 1+2=", "say: rev abcdef="]
    lengths = []
    for until in (None, lambda text: len(text) >= 20 and "a" in text):
        # the tiny models know 128 positions: prompts of about 15 characters and 100 new ones
        got = growing.generate(prompts, max_new_tokens=100, chat=False, until=until)
        want = plain.generate(prompts, max_new_tokens=100, chat=False, until=until)
        assert got == want
        lengths.append(max(len(t) for t in got))
    assert lengths[0] > 64  # past the first buffer's room


def test_sliding_window_models_keep_transformers_cache() -> None:
    from types import SimpleNamespace

    def model(**config: object) -> torch.nn.Module:
        module = torch.nn.Module()
        module.config = SimpleNamespace(**config)
        return module

    assert not grows_in_place(model(layer_types=["sliding_attention", "full_attention"]))
    assert not grows_in_place(model(layer_types=["full_attention"], sliding_window=4096))
    assert grows_in_place(model(layer_types=["full_attention", "full_attention"]))
    assert grows_in_place(model())
