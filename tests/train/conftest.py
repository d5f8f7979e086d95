"""Fixtures of the expert-training tests: a tiny char-level model with room for real prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cycleqd.testing.tiny import build_char_tokenizer, build_random_model

# ChatML's shape as SmolLM2 / Qwen write it (no {% generation %} markers), with the turn closed
# by the EOS text and a newline, as SmolLM2's <|im_end|>\n (its EOS), in the char vocabulary.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama (char tokenizer, chat template) that fits code-mini prompts."""
    out = tmp_path_factory.mktemp("train-base") / "base"
    tok = build_char_tokenizer()
    model = build_random_model(
        "llama", tok, seed=0, hidden=64, intermediate=128, layers=2, max_positions=1024
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def chatml_tokenizer():
    """The char tokenizer with a ChatML template whose end-of-turn is the EOS text."""
    tok = build_char_tokenizer()
    tok.chat_template = CHATML
    return tok
