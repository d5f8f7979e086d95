"""Memory and time of a search at users' scale: LoRA adapter experts versus merged bf16 experts.

Builds on disk (no download) a Llama-shaped model with random bf16 weights (``--hidden``,
``--layers``, ``--intermediate``, ``--vocab``; the defaults give about 1.5B parameters), three
random LoRA adapters of it (``--rank``, every linear module of the blocks) made by peft, and the
same three merged into full bf16 checkpoints. For each expert form it runs the seeding and
``--children`` children of a search on the cost-free ``synthetic`` task in a child process
(engine in bfloat16), and prints one JSON line per form:

- ``model_bytes``: the base checkpoint's size; ``peak_rss_bytes`` and ``peak_rss_ratio``: the
  child process's peak resident memory, and its ratio to the model's size;
- ``basis_seconds``: building the expert bases; ``child_seconds_median``: per child, from the
  run's metrics; ``kept_rank``: per expert, the median kept rank over its adapted tensors;
  ``basis_bytes``: the bases in memory.

A last line extrapolates the memory model of docs/architecture.md to Llama-3-8B in bf16 with
three rank-16 adapters and with three full fine-tunes at ``basis.max_rank`` 256: bytes of the
resident model, the materialiser's base (on a GPU), the bases, and the totals on a GPU and a CPU.

Usage::

    python benchmarks/scale_memory.py [--out DIR] [--hidden 2048 --layers 26 ...] [--forms ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(root: Path, args: argparse.Namespace) -> dict[str, object]:
    """The base, the adapters and the merged experts under ``root`` (reused when present)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from cycleqd.testing.tiny import build_char_tokenizer

    base_dir = root / "base"
    names = [f"e{i}" for i in range(3)]
    if not (base_dir / "config.json").is_file():
        config = LlamaConfig(
            vocab_size=args.vocab,
            hidden_size=args.hidden,
            intermediate_size=args.intermediate,
            num_hidden_layers=args.layers,
            num_attention_heads=args.hidden // 128,
            num_key_value_heads=max(1, args.hidden // 512),
            max_position_embeddings=512,
            dtype="bfloat16",
        )
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(base_dir)
        build_char_tokenizer().save_pretrained(base_dir)
        del model
    for i, name in enumerate(names):
        adapter = root / "adapters" / name
        if not (adapter / "adapter_config.json").is_file():
            torch.manual_seed(100 + i)
            model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16)
            lora = LoraConfig(
                r=args.rank, lora_alpha=2 * args.rank, target_modules=TARGETS,
                init_lora_weights=False,
            )  # fmt: skip
            get_peft_model(model, lora).save_pretrained(adapter)
            del model
        merged = root / "merged" / name
        if not (merged / "config.json").is_file():
            model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16)
            PeftModel.from_pretrained(model, adapter).merge_and_unload().save_pretrained(merged)
            build_char_tokenizer().save_pretrained(merged)
            del model
    size = sum(p.stat().st_size for p in base_dir.glob("*.safetensors"))
    return {"base": base_dir, "names": names, "model_bytes": size}


def child(config_path: Path, result_path: Path) -> None:
    """Run in the child process: build the session (timing the bases), then the search."""
    from cycleqd.config import dump_config, load_config
    from cycleqd.search.run import _search
    from cycleqd.search.session import Session
    from cycleqd.search.store import RunStore

    config = load_config(config_path)
    started = time.perf_counter()
    session = Session(config, engine=False)
    basis_seconds = time.perf_counter() - started
    basis = session.basis
    session = Session(config, basis=basis)
    store = RunStore(config_path.parent / "run")
    store.create(dump_config(config), force=True)
    _search(session, store, None)
    seconds = [json.loads(x)["seconds"] for x in store.metrics_path.read_text().splitlines()]
    adapted = [n for n in basis.matrices if any(t in n for t in TARGETS)]
    kept = {
        e: statistics.median(basis.matrices[n].offsets[i + 1] - basis.matrices[n].offsets[i]
                             for n in adapted)
        for i, e in enumerate(basis.experts)
    }  # fmt: skip
    result_path.write_text(
        json.dumps(
            {
                "basis_seconds": round(basis_seconds, 2),
                "child_seconds_median": round(statistics.median(seconds), 3),
                "kept_rank": kept,
                "basis_bytes": basis.nbytes(),
                "basis_fidelity": basis.fidelity,
            }
        )
    )


def run_form(root: Path, built: dict, form: str, args: argparse.Namespace) -> dict:
    folder = root / f"run-{form}"
    folder.mkdir(parents=True, exist_ok=True)
    experts = [
        {"name": n, "path": str(root / ("adapters" if form == "adapter" else "merged") / n)}
        for n in built["names"]  # type: ignore[attr-defined]
    ]
    config = {
        "base_model": str(built["base"]),
        "experts": experts,
        "tasks": [
            {"name": n, "type": "synthetic", "params": {"seed": i}, "bc": {"bins": 5}}
            for i, n in enumerate(built["names"])  # type: ignore[arg-type]
        ],
        "search": {"generations": args.children, "plot_every": 0},
        "basis": {"cache_dir": str(folder / "cache"), "max_rank": args.max_rank},
        "engine": {"dtype": "bfloat16", "device": "cpu"},
    }
    (folder / "config.yaml").write_text(json.dumps(config))
    result = folder / "result.json"
    result.unlink(missing_ok=True)
    # a fresh process, so that its peak RSS is the search's alone (not the model building's)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", str(folder / "config.yaml"), str(result)]
    )
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0 or not result.is_file():
        raise SystemExit(f"{form}: the child process failed (status {status})")
    out = json.loads(result.read_text())
    peak = usage.ru_maxrss * 1024
    return {
        "benchmark": "scale_memory",
        "form": form,
        "model_bytes": built["model_bytes"],
        "peak_rss_bytes": peak,
        "peak_rss_ratio": round(peak / int(built["model_bytes"]), 2),  # type: ignore[arg-type]
        **out,
        "children": args.children,
        "threads": torch.get_num_threads(),
    }


# Llama-3-8B (hidden 4096, 32 layers, intermediate 14336, 8 KV heads of 128, vocabulary 128256)
LLAMA3_8B = {
    "layers": 32,
    "block": {  # (out, in) of each linear module of a block
        "q_proj": (4096, 4096),
        "k_proj": (1024, 4096),
        "v_proj": (1024, 4096),
        "o_proj": (4096, 4096),
        "gate_proj": (14336, 4096),
        "up_proj": (14336, 4096),
        "down_proj": (4096, 14336),
    },
    "embeddings": [(128256, 4096), (128256, 4096)],  # input embeddings and LM head (untied)
    "norms": 2 * 32 + 1,
    "hidden": 4096,
}


def extrapolate(experts: int = 3, adapter_rank: int = 16, max_rank: int = 256) -> dict:
    """docs/architecture.md's memory model for Llama-3-8B in bf16 (bases' vectors in bf16,
    singular values and 1-D task vectors in float32)."""
    from cycleqd.merging.basis import stored_dtype

    vec = torch.tensor([], dtype=stored_dtype(torch.bfloat16)).element_size()
    m = LLAMA3_8B
    block = [shape for shape in m["block"].values() for _ in range(m["layers"])]
    params = sum(a * b for a, b in block + m["embeddings"]) + m["norms"] * m["hidden"]
    model = 2 * params

    def bases(shapes: list[tuple[int, int]], rank: int) -> int:
        kept = [experts * min(rank, a, b) for a, b in shapes]
        matrices = sum((a + b) * r * vec + 4 * r for (a, b), r in zip(shapes, kept, strict=True))
        return matrices + 4 * experts * m["norms"] * m["hidden"]

    out: dict[str, object] = {"benchmark": "scale_memory", "form": "llama-3-8b-extrapolated"}
    out["model_bytes"] = model
    for form, size in (
        ("adapters_rank16", bases(block, adapter_rank)),
        ("full_max_rank256", bases(block + m["embeddings"], max_rank)),
    ):
        out[form] = {
            "basis_bytes": size,
            "gpu_bytes": 2 * model + size,  # resident model + the base kept on the device
            "cpu_bytes": model + size,  # the base read from the page cache, tensor by tensor
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/cycleqd-scale"))
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=26)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--children", type=int, default=20)
    parser.add_argument("--max-rank", type=int, default=64, help="basis.max_rank of the runs")
    parser.add_argument("--forms", nargs="+", default=["adapter", "merged"])
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    built = build(args.out, args)
    for form in args.forms:
        print(json.dumps(run_form(args.out, built, form, args)), flush=True)
    print(json.dumps(extrapolate(adapter_rank=args.rank)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
