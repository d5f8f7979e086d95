"""A genome as a peft LoRA adapter: the search's result in the form LoRA users deploy.

Per 2-D tensor a genome's task vector is ``U diag(c) Vh`` over the experts' concatenated bases,
so it is exactly a LoRA update of rank ``nnz(c)``: ``B = U[:, c != 0] diag(c)``, ``A = Vh[c != 0]``
at scale 1 (``lora_alpha = r`` per module, through peft's ``rank_pattern`` / ``alpha_pattern``).
For experts that are LoRA adapters this is exact and small; a genome with anything a LoRA update
cannot carry (a dense delta from Gaussian mutation or a TIES merge, a changed norm or bias, a
TIES-combined genome space) is refused with the reason, and the full export is the way out.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from cycleqd.errors import CycleQDError
from cycleqd.merging.basis import ExpertBasis
from cycleqd.merging.genome import Combine, Genome

_PREFIX = "base_model.model."


def _refuse(why: str) -> CycleQDError:
    return CycleQDError(
        f"cannot export as a LoRA adapter: {why}; export the full model instead (without --adapter)"
    )


def _modules(base_dir: Path) -> dict[str, nn.Module]:
    """The base architecture's modules by name, built on the meta device (no weights read)."""
    config = AutoConfig.from_pretrained(base_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return dict(model.named_modules())


def genome_adapter(
    basis: ExpertBasis,
    genome: Genome,
    base_dir: Path,
    *,
    combine: Combine = "sum",
) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    """The peft config and adapter weights of ``genome`` (float32), or an error saying why not."""
    if combine != "sum":
        raise _refuse(
            f"basis.combine is {combine!r}: the genome's parts are TIES-merged, not added"
        )
    for name, delta in genome.dense.items():
        if bool(delta.ne(0).any()):
            raise _refuse(f"tensor {name!r} carries a dense delta (Gaussian mutation or TIES)")
    for name, vector in basis.vectors.items():
        tau = genome.coeffs[name].to(vector.taus) @ vector.taus
        if bool(tau.ne(0).any()):
            raise _refuse(f"1-D tensor {name!r} (a norm or bias) differs from the base")
    modules = _modules(base_dir)
    weights: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    conv1d = False
    for name in sorted(basis.matrices):
        m = basis.matrices[name]
        c = genome.coeffs[name].to(m.U.device, torch.float32)
        keep = c.ne(0)
        rank = int(keep.sum())
        if rank == 0:
            continue
        # delta (2-D view) = left @ right; the basis may be stored in a 16-bit checkpoint dtype
        left, right = m.U[:, keep].float() * c[keep], m.Vh[keep].float()
        module_name = name.removesuffix(".weight")
        module = modules.get(module_name) if name.endswith(".weight") else None
        key = _PREFIX + module_name
        if isinstance(module, nn.Embedding):  # peft: delta = (B @ A)^T, A (r, vocab)
            weights[f"{key}.lora_embedding_A"] = left.T.contiguous()
            weights[f"{key}.lora_embedding_B"] = right.T.contiguous()
        elif isinstance(module, Conv1D):  # weight (in, out); peft (fan_in_fan_out): (B @ A)^T
            weights[f"{key}.lora_A.weight"] = left.T.contiguous()
            weights[f"{key}.lora_B.weight"] = right.T.contiguous()
            conv1d = True
        elif isinstance(module, nn.Linear):
            weights[f"{key}.lora_A.weight"] = right.contiguous()
            weights[f"{key}.lora_B.weight"] = left.contiguous()
        else:
            kind = type(module).__name__ if module is not None else "no module"
            raise _refuse(f"tensor {name!r} belongs to {kind}, which peft's LoRA does not adapt")
        ranks[module_name] = rank
    if not ranks:
        raise _refuse("the genome is the base model itself (no task vector to adapt)")
    patterns = {re.escape(module): r for module, r in ranks.items()}
    config = LoraConfig(
        r=max(ranks.values()),
        lora_alpha=max(ranks.values()),
        rank_pattern=patterns,
        alpha_pattern=dict(patterns),  # alpha = r per module: scale 1, the task vector as is
        target_modules=sorted(ranks),
        lora_dropout=0.0,
        bias="none",
        fan_in_fan_out=conv1d,
        task_type="CAUSAL_LM",
        base_model_name_or_path=str(base_dir),
    )
    return config, weights


def write_adapter(
    basis: ExpertBasis,
    genome: Genome,
    base_dir: Path,
    out: Path,
    *,
    combine: Combine = "sum",
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``genome`` to ``out`` as a peft adapter (``adapter_config.json`` and weights)."""
    config, weights = genome_adapter(basis, genome, base_dir, combine=combine)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out))
    save_file(
        {k: v.to(dtype).contiguous() for k, v in weights.items()},
        str(out / "adapter_model.safetensors"),
        metadata={"format": "pt"},
    )
    return out
