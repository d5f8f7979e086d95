"""Loss masks: only the gold replies (and their end-of-turn) are learned, nothing else."""

from __future__ import annotations

import pytest

from cycleqd.errors import CycleQDError
from cycleqd.tasks.db.protocol import opening_messages
from cycleqd.testing.tiny import build_char_tokenizer
from cycleqd.train.masking import IGNORE, encode_conversation, leading_bos

REPLIES = [
    "I count.\nAction: Operation\n```sql\nSELECT COUNT(*) FROM `t`;\n```",
    "There are 3.\nAction: Answer\nFinal Answer: [3]",
]


def conversation() -> list[dict[str, str]]:
    """A real DBBench opening (instruction, canned "Ok.", question) and a two-reply episode."""
    messages = opening_messages("How many rows?\nThe name of this table is t.")
    messages.append({"role": "assistant", "content": REPLIES[0]})
    messages.append({"role": "user", "content": "[(3,)]"})
    messages.append({"role": "assistant", "content": REPLIES[1]})
    return messages


def learned_runs(tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """Decode each maximal run of learned tokens."""
    runs, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r) for r in runs]


def test_tiny_template_learns_replies_and_their_newline_only() -> None:
    tok = build_char_tokenizer()
    enc = encode_conversation(tok, conversation(), train_from=3)
    assert learned_runs(tok, enc.input_ids, enc.labels) == [r + "\n" for r in REPLIES]


def test_chatml_template_learns_through_eos_not_after(chatml_tokenizer) -> None:
    enc = encode_conversation(chatml_tokenizer, conversation(), train_from=3)
    runs = learned_runs(chatml_tokenizer, enc.input_ids, enc.labels)
    assert runs == [r + "</s>" for r in REPLIES]


def test_canned_opening_reply_is_learned_only_when_asked(chatml_tokenizer) -> None:
    enc = encode_conversation(chatml_tokenizer, conversation(), train_from=0)
    runs = learned_runs(chatml_tokenizer, enc.input_ids, enc.labels)
    assert runs == ["Ok.</s>", *(r + "</s>" for r in REPLIES)]


@pytest.mark.parametrize("chatml", [False, True])
def test_prompt_tokens_equal_what_the_engine_sends(chatml: bool, chatml_tokenizer) -> None:
    """Each reply follows exactly the tokens the engine would feed at evaluation."""
    tok = chatml_tokenizer if chatml else build_char_tokenizer()
    messages = conversation()
    enc = encode_conversation(tok, messages, train_from=3)
    for i in (3, 5):
        text = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        prompt = leading_bos(tok) + tok(text, add_special_tokens=False)["input_ids"]
        assert enc.input_ids[: len(prompt)] == prompt
        assert enc.labels[len(prompt) - 1] == IGNORE and enc.labels[len(prompt)] != IGNORE


def test_template_that_is_not_prefix_stable_is_refused() -> None:
    tok = build_char_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}{{ m['content'] }}{% if loop.last %}!{% endif %}{% endfor %}"
    )
    with pytest.raises(CycleQDError, match="incrementally"):
        encode_conversation(tok, conversation(), train_from=3)
