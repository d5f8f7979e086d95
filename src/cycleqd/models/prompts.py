"""How an engine turns a prompt into token ids, shared by every engine.

Why one place: the transformers and vLLM engines must feed their models the same tokens (the
chat template applied as text, then encoded without special tokens, a BOS put in front where the
tokenizer would add one itself), or their answers could differ for a reason that has nothing to
do with the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cycleqd.errors import CycleQDError

Prompt = str | list[dict[str, str]]


class PromptEncoder:
    """Prompt formatting and encoding for an engine that holds ``tokenizer`` and ``model_dir``."""

    tokenizer: Any
    model_dir: Path

    def format(self, prompt: Prompt, chat: bool) -> str:
        """Apply the tokenizer's chat template to a user message or a message list."""
        if not chat:
            if not isinstance(prompt, str):
                raise ValueError("a message list needs chat=True")
            return prompt
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if self.tokenizer.chat_template is None:
            raise CycleQDError(f"{self.model_dir}: the tokenizer has no chat template")
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _bos(self) -> list[int]:
        """A leading BOS when the tokenizer would add one itself (Llama-style)."""
        probe = self.tokenizer("a")["input_ids"]
        bos = self.tokenizer.bos_token_id
        return [bos] if bos is not None and probe and probe[0] == bos else []

    def prompt_ids(self, prompt: Prompt, chat: bool) -> list[int]:
        """The token ids an engine's model reads for ``prompt``."""
        return self._bos() + self._encode(self.format(prompt, chat))
