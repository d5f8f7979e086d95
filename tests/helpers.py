"""Builders shared by the tests: tiny real transformer families and task data, made locally."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cycleqd.testing.tiny import build_char_tokenizer, build_random_model


def perturbed_copy(model: torch.nn.Module, seed: int, *, rank: int | None, scale: float) -> dict:
    """A fake expert: base weights plus a seeded task vector (low rank when ``rank`` is set)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.dim() == 2 and rank is not None:
            b = torch.randn(tensor.shape[0], rank, generator=gen)
            a = torch.randn(rank, tensor.shape[1], generator=gen)
            delta = scale * (b @ a) / rank**0.5
        else:
            delta = scale * torch.randn(tensor.shape, generator=gen)
        state[name] = tensor + delta
    return state


def write_model_family(
    root: Path,
    arch: str = "llama",
    *,
    n_experts: int = 3,
    hidden: int = 32,
    intermediate: int = 64,
    heads: int = 4,
) -> dict:
    """A base model directory and ``n_experts`` expert directories sharing its tokenizer."""
    tok = build_char_tokenizer()
    size = {"hidden": hidden, "intermediate": intermediate, "layers": 2, "heads": heads}
    base = build_random_model(arch, tok, seed=0, **size)
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    experts = {}
    for i in range(n_experts):
        name = f"e{i}"
        model = build_random_model(arch, tok, seed=0, **size)
        model.load_state_dict(perturbed_copy(base, i + 1, rank=4 if i % 2 else None, scale=0.05))
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        experts[name] = root / name
    return {"base": root / "base", "experts": experts}


def lora_like_family(root: Path, n_experts: int = 3, rank: int = 3) -> dict:
    """Base + experts whose task vectors are low rank on 2-D tensors and zero on 1-D ones.

    Expert 0 also changes the (tied) embedding, so the embedding and LM-head hooks are exercised.
    """
    tok = build_char_tokenizer()
    base = build_random_model("llama", tok, seed=0, hidden=32, intermediate=64, layers=2)
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    experts = {}
    for i in range(n_experts):
        gen = torch.Generator().manual_seed(100 + i)
        state = {}
        for name, t in base.state_dict().items():
            if t.dim() == 2 and ("embed" not in name or i == 0):
                b = torch.randn(t.shape[0], rank, generator=gen)
                a = torch.randn(rank, t.shape[1], generator=gen)
                t = t + 0.05 * (b @ a) / rank**0.5
            state[name] = t.clone()
        model = build_random_model("llama", tok, seed=0, hidden=32, intermediate=64, layers=2)
        model.load_state_dict(state)
        model.save_pretrained(root / f"e{i}")
        tok.save_pretrained(root / f"e{i}")
        experts[f"e{i}"] = root / f"e{i}"
    return {"base": root / "base", "experts": experts}


def write_tasks(root: Path) -> dict[str, Path]:
    """Two small prompt/target files: enough for exact-match and likelihood tasks."""
    files = {}
    for task, pairs in {
        "copy": [(f"copy {w}=", w) for w in ("ab", "cd", "efg", "hi")],
        "add": [(f"{a}+{b}=", str(a + b)) for a, b in ((1, 2), (3, 4), (2, 2), (5, 1))],
    }.items():
        path = root / f"{task}.jsonl"
        path.write_text("".join(json.dumps({"prompt": p, "target": t}) + "\n" for p, t in pairs))
        files[task] = path
    return files


def base_config(family: dict, tmp: Path, generations: int = 4) -> dict:
    """A complete run config (as YAML data) over the ``family`` fixture."""
    return {
        "seed": 0,
        "base_model": str(family["base"]),
        "experts": [
            {"name": "copy", "path": str(family["experts"]["e0"])},
            {"name": "add", "path": str(family["experts"]["e1"])},
        ],
        "tasks": [
            {
                "name": "copy",
                "type": "likelihood",
                "params": {"data": str(family["data"]["copy"])},
                "bc": {"bins": 5},
            },
            {
                "name": "add",
                "type": "exact_match",
                "params": {"data": str(family["data"]["add"]), "max_new_tokens": 3},
                "bc": {"bins": 5},
            },
        ],
        "search": {"generations": generations},
        "basis": {"cache_dir": str(tmp / "cache")},
    }


def child_work(n: int, *, progress: object = False, fail: str = "") -> dict:
    """Work for ``run_in_child`` tests: counts ``n`` steps on its own bar (the parent's, relayed),
    touches 300 MiB so its peak shows, and raises ``CycleQDError(fail)`` when ``fail`` is set
    (``killed``: the child kills itself, as the out-of-memory killer would)."""
    import os
    import signal

    from rich.progress import Progress

    from cycleqd.errors import CycleQDError

    if fail == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    if fail:
        raise CycleQDError(fail)
    block = bytearray(300 * 2**20)
    block[::4096] = b"x" * len(block[::4096])
    if isinstance(progress, Progress):
        task = progress.add_task("child steps", total=n, info="")
        for i in range(n):
            progress.update(task, completed=i + 1, info=f"step {i + 1}")
        progress.remove_task(task)
    return {"pid": os.getpid(), "n": n, "relayed": isinstance(progress, Progress)}


def allocator_report(*, progress: object = False) -> dict:
    """For ``run_in_child`` tests: the child's pid, the allocator it runs on and the
    ``LD_PRELOAD`` it would hand on to the programs it starts."""
    import os

    from cycleqd.allocator import in_use

    return {"pid": os.getpid(), "allocator": in_use(), "LD_PRELOAD": os.environ.get("LD_PRELOAD")}


def release_report(*, progress: object = False) -> dict:
    """For ``run_in_child`` tests: resident bytes before 256 MiB of 1 MiB blocks are allocated,
    after they are freed, and after the allocator's free memory is released."""
    from cycleqd.allocator import in_use, release_free_memory
    from cycleqd.resources import rss_bytes

    before = rss_bytes()
    blocks = [bytearray(2**20) for _ in range(256)]
    for block in blocks:
        block[::4096] = b"x" * len(block[::4096])
    del blocks
    after_free = rss_bytes()
    release_free_memory()
    return {
        "allocator": in_use(),
        "before": before,
        "after_free": after_free,
        "after_release": rss_bytes(),
    }


def decommit_report(*, progress: object = False) -> dict:
    """For ``run_in_child`` tests: resident bytes before, and after 256 MiB of 1 MiB blocks were
    allocated and freed inside ``returning_freed_memory``; whether TCMalloc's setting is back
    off after the block."""
    import ctypes

    from cycleqd.allocator import in_use, returning_freed_memory
    from cycleqd.resources import rss_bytes

    before = rss_bytes()
    with returning_freed_memory():
        blocks = [bytearray(2**20) for _ in range(256)]
        for block in blocks:
            block[::4096] = b"x" * len(block[::4096])
        del blocks
        inside = rss_bytes()
    value = ctypes.c_size_t(7)
    ctypes.CDLL(None).MallocExtension_GetNumericProperty(
        b"tcmalloc.aggressive_memory_decommit", ctypes.byref(value)
    )
    return {"allocator": in_use(), "before": before, "inside": inside, "after": value.value}
