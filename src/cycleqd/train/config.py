"""Hyperparameters of expert training, with defaults sized for SmolLM2-135M on a small CPU.

One pydantic model holds every knob so the CLI, the demo and the cache key read the same
defaults were measured on SmolLM2-135M-Instruct with 2 CPU cores: LoRA r=16 on every linear
projection, 200 db-mini conversations, one epoch (25 steps of 8, about 11 s a step, 4-5 minutes)
takes the loss from 1.7 to 0.09 and the db-mini validation score from 0.0 to 0.67. The learning
rate follows the method unless given (LoRA needs a much larger one than full fine-tuning).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_LR = {"lora": 1e-3, "full": 3e-5}


class TrainConfig(BaseModel):
    """Attributes:
    method: ``lora`` (merged into the weights on save) or ``full`` fine-tuning.
    epochs: passes over the training conversations.
    lr: peak learning rate (None: 1e-3 for LoRA, 3e-5 for full fine-tuning).
    batch_size: conversations per optimizer step.
    max_len: conversations longer than this many tokens are dropped (and counted).
    lora_r, lora_alpha, lora_dropout, target_modules: the adapters (``all-linear``: every
        linear projection of the blocks, not the output head).
    seed: model init of the adapters, data generation and data order.
    n_train: suites: train samples generated per suite; files: first n samples (None = all).
    warmup_ratio, weight_decay, max_grad_norm: the optimizer schedule.
    anchor_weight: weight of the KL divergence from the base on the anchor conversations (the
        other skills' data, ``train_expert(anchor_specs=...)``; 0: plain fine-tuning, the
        paper's).
        It keeps an expert's behaviour on other skills' prompts at the base's, so task vectors
        add with less interference (see ``loop``). LoRA only.
    anchor_batch: anchor conversations per optimizer step.
    precision: matmul precision of training: ``bfloat16`` autocast (weights and optimizer stay
        float32) or ``float32``; ``auto`` is bf16 on a GPU and on CPUs with native bf16
        (about 1.5x faster steps there), float32 elsewhere. Resolved before the cache key.
    device: ``auto`` (CUDA when available), ``cpu``, ``cuda``...
    workers: environments replaying gold trajectories at once (and code graders).
    db_url: an existing MySQL server for DBBench data (default: a private MariaDB).
    unsandboxed: grade code references without bubblewrap (unsafe).
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "full"] = "lora"
    epochs: int = Field(default=1, ge=1)
    lr: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=8, ge=1)
    max_len: int = Field(default=1024, ge=8)
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: float = Field(default=32.0, gt=0)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"])
    seed: int = 0
    n_train: int | None = Field(default=200, ge=1)
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, ge=0)
    anchor_weight: float = Field(default=0.0, ge=0)
    anchor_batch: int = Field(default=4, ge=1)
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    device: str = "auto"
    workers: int = Field(default=2, ge=1)
    db_url: str | None = None
    unsandboxed: bool = False

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def hyperparameters(self) -> dict[str, Any]:
        """What decides the weights (the cache key's part); environment knobs left out."""
        out = self.model_dump(exclude={"device", "workers", "db_url", "unsandboxed"})
        out["lr"] = self.peak_lr
        if self.anchor_weight == 0:  # no anchoring: the same key as before anchors existed
            out.pop("anchor_weight")
            out.pop("anchor_batch")
        if self.method == "full":
            for key in ("lora_r", "lora_alpha", "lora_dropout", "target_modules"):
                out.pop(key)
        return out
