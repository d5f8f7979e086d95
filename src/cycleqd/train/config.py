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
    """Every knob of expert training; the ``train-expert`` command's options are these fields.

    ``anchor_weight`` keeps an expert's behaviour on other skills' prompts at the base's, so task
    vectors add with less interference (see ``loop``); LoRA only.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "full"] = Field(default="lora", description="lora or full.")
    save: Literal["merged", "adapter"] = Field(
        default="merged",
        description="LoRA: a full checkpoint with the adapters merged in, or the peft adapter "
        "alone (megabytes; an expert wherever a model is expected, its base named by path).",
    )
    epochs: int = Field(default=1, ge=1, description="Passes over the training conversations.")
    lr: float | None = Field(
        default=None, gt=0, description="Peak learning rate (default 1e-3 LoRA, 3e-5 full)."
    )
    batch_size: int = Field(default=8, ge=1, description="Conversations per optimizer step.")
    max_len: int = Field(
        default=1024, ge=8, description="Longer conversations (tokens) are dropped and counted."
    )
    lora_r: int = Field(default=16, ge=1, description="LoRA rank.")
    lora_alpha: float = Field(default=32.0, gt=0, description="LoRA alpha.")
    lora_dropout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="LoRA dropout (peft's default, 0: on a CPU its random masks, drawn anew "
        "for each adapted layer, cost as much as the rest of the forward pass).",
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"],
        description="Modules given adapters (all-linear: every linear projection of the blocks, "
        "not the output head); repeatable.",
    )
    seed: int = Field(default=0, description="Adapter init, data generation and data order.")
    n_train: int | None = Field(
        default=200,
        ge=1,
        description="Suites: samples generated per suite; files: the first n (default all).",
    )
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1, description="Share of warmup steps.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, ge=0, description="Gradient clipping norm.")
    anchor_weight: float = Field(
        default=0.0,
        ge=0,
        description="Weight of the KL to the base on the anchor conversations (the other skills' "
        "data; 0: plain fine-tuning, the paper's).",
    )
    anchor_batch: int = Field(default=4, ge=1, description="Anchor conversations per step.")
    max_batch_tokens: int | None = Field(
        default=None,
        ge=1,
        description="At most this many tokens computed per forward pass (a batch's shared prefix "
        "counts once): longer batches are split into micro-batches whose gradients add up to the "
        "batch's (bounds training's peak memory, 2 to 6 MB per token for SmolLM2-135M; none: a "
        "batch in one pass).",
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="Matmul precision: bfloat16 autocast (weights and optimizer stay float32) or "
        "float32; auto is bf16 on a GPU and on CPUs with native bf16, float32 elsewhere.",
    )
    device: str = Field(default="auto", description="auto (CUDA when available), cpu, cuda...")
    workers: int = Field(
        default=2, ge=1, description="Environments replaying gold trajectories at once."
    )
    db_url: str | None = Field(
        default=None, description="An existing MySQL server (default: a private MariaDB)."
    )
    unsandboxed: bool = Field(
        default=False, description="Grade code references without bubblewrap (unsafe)."
    )

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
        if self.save == "merged" or self.method == "full":  # the key merged experts always had
            out.pop("save")
        if self.max_batch_tokens is None:  # one pass per batch: the key it always had
            out.pop("max_batch_tokens")
        return out
