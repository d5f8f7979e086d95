"""How an engine turns a prompt into token ids, shared by every engine.

Why one place: the transformers and vLLM engines must feed their models the same tokens (the
chat template applied as text, then encoded without special tokens, a BOS put in front where the
tokenizer would add one itself), or their answers could differ for a reason that has nothing to
do with the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from cycleqd.errors import CycleQDError
from cycleqd.models.checkpoints import adapter_base, checkpoint_dtype
from cycleqd.models.devices import pick_device, pick_dtype

Prompt = str | list[dict[str, str]]


class PromptEncoder:
    """Prompt formatting and encoding for an engine that holds ``tokenizer`` and ``model_dir``."""

    tokenizer: Any
    model_dir: Path
    base_dir: Path
    device: torch.device
    checkpoint_dtype: torch.dtype
    dtype: torch.dtype

    def _open(self, model_dir: Path, device: str, dtype: str) -> None:
        """What every engine settles first: the model directory and, for a peft adapter
        directory, its base; the device; the checkpoint's dtype (what adapters are merged and
        exports saved in) and the compute dtype; the tokenizer (the model's own, else the
        base's), with a pad token."""
        self.model_dir = Path(model_dir)
        self.base_dir = adapter_base(self.model_dir) or self.model_dir
        if not (self.base_dir / "config.json").is_file():
            raise CycleQDError(
                f"{self.model_dir}: not a Hugging Face model directory (no config.json)"
            )
        self.device = pick_device(device)
        self.checkpoint_dtype = checkpoint_dtype(self.base_dir)
        self.dtype = pick_dtype(dtype, self.device, self.checkpoint_dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @property
    def tokenizer_dir(self) -> Path:
        """Where the tokenizer comes from: the model directory if it has one, else the base."""
        own = (self.model_dir / "tokenizer_config.json").is_file()
        return self.model_dir if own else self.base_dir

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
