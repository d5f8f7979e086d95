"""The segmentation model (a small Segformer) and the engine the search evaluates through.

Segformer is a standard transformers architecture, so every model in and out of the track is an
ordinary Hugging Face directory (``save_pretrained`` / ``from_pretrained``) that mergekit can merge
and anyone can load. The configuration is built here (no hub download): three stages of one block
each, overlapping patch embeddings of stride 2, an all-MLP decoder; about 66k parameters, so
training and thousands of evaluations fit a 2-core CPU. Convolution kernels (patch embeddings,
sequence reduction, depth-wise convolutions) go through the merging layer's SVD as ``(out, -1)``
matrices like any other weight.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from cycleqd.errors import CycleQDError
from cycleqd.models.gguf import quiet_transformers

#: Pixel normalisation, also written into the saved image processor so the directory says it.
MEAN, STD = 0.5, 0.25


def segformer_config(num_labels: int = 2) -> SegformerConfig:
    """The small Segformer of the track (logits at half the input resolution)."""
    return SegformerConfig(
        num_channels=3,
        num_encoder_blocks=3,
        depths=[1, 1, 1],
        sr_ratios=[4, 2, 1],
        hidden_sizes=[16, 32, 48],
        patch_sizes=[3, 3, 3],
        strides=[2, 2, 2],
        num_attention_heads=[1, 1, 2],
        mlp_ratios=[2, 2, 2],
        decoder_hidden_size=32,
        num_labels=num_labels,
        id2label={0: "background", 1: "target"},
        label2id={"background": 0, "target": 1},
    )


def new_model(seed: int) -> SegformerForSemanticSegmentation:
    """A freshly initialised model; the same seed gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SegformerForSemanticSegmentation(segformer_config())
    return model.eval()


def save_model(model: SegformerForSemanticSegmentation, out: Path) -> Path:
    """Write a Hugging Face directory: weights, config and the image processor's settings."""
    try:  # transformers 5 names its torchvision-free processor apart
        from transformers import SegformerImageProcessorPil as Processor
    except ImportError:
        from transformers import SegformerImageProcessor as Processor

    out.mkdir(parents=True, exist_ok=True)
    settings = {"do_resize": False, "do_rescale": False, "image_mean": [MEAN] * 3}
    settings["image_std"] = [STD] * 3
    with quiet_transformers():
        model.save_pretrained(out)
        try:
            Processor(**settings).save_pretrained(out)
        except ImportError:
            # transformers releases before 5.20 (the ones vLLM pins) refuse to build any Segformer
            # processor without torchvision; the file holds the settings alone, so it is written
            # as the processor would write it
            settings |= {"do_normalize": True, "image_processor_type": "SegformerImageProcessor"}
            (out / "preprocessor_config.json").write_text(json.dumps(settings, indent=2) + "\n")
    return out


def load_model(path: Path) -> SegformerForSemanticSegmentation:
    """Load a model directory; anything that is not a Segformer directory is named as such."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CycleQDError(f"{path} is not a Hugging Face model directory (no config.json)")
    try:
        with quiet_transformers():
            model = SegformerForSemanticSegmentation.from_pretrained(path)
    except Exception as exc:  # transformers raises many kinds; name the directory
        raise CycleQDError(f"{path}: not a loadable Segformer model ({exc})") from exc
    return model.eval()


def normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - MEAN) / STD


def logits_at(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class logits ``(N, C, H, W)`` at the images' own resolution (bilinear upsampling)."""
    out = model(pixel_values=normalise(images)).logits
    return nn.functional.interpolate(
        out, size=images.shape[-2:], mode="bilinear", align_corners=False
    )


class SegmentationEngine:
    """Holds the resident model the materialiser writes into; predicts masks in batches.

    The search hands this object to every task's ``evaluate``; the weights change under it
    between children, nothing else does.
    """

    def __init__(self, module: SegformerForSemanticSegmentation, *, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise CycleQDError(f"engine batch_size must be at least 1, got {batch_size}")
        self.module = module.eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, H, W)`` predicted class indices for images ``(N, 3, H, W)`` in [0, 1]."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise CycleQDError(f"images must be (N, 3, H, W), got {list(images.shape)}")
        parts = [
            logits_at(self.module, images[i : i + self.batch_size]).argmax(1)
            for i in range(0, images.shape[0], self.batch_size)
        ]
        return torch.cat(parts)
