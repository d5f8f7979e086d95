"""The demo's presets: how many samples, generations and tokens each stage gets, and the
search's settings beyond the paper's.

Each preset is a YAML file in ``cycleqd/configs/demo/`` (``cpu`` for a 2-core machine, ``full``
for a GPU, ``mini`` the CI miniature on tiny models): its ``sizes`` are the fields below (the
demo's cost is generation, so every knob that multiplies it is here), its ``run`` the overrides
of the run config that the demo's searches get, as ``cycleqd run --set`` paths. The paper's
operators are ``cycleqd/configs/paper.yaml``; an ablation variant is a named set of overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cycleqd.configs import ROOT as CONFIGS
from cycleqd.configs import overlay, read_yaml
from cycleqd.errors import CycleQDError


@dataclass(frozen=True)
class Preset:
    name: str
    n_train: int  # per suite, for expert training
    n_val: int  # per suite: what the search selects on
    n_test: int  # per suite: held out, only for the final table
    generations: int
    bins: int = 10
    seed: int = 0
    # questions (a seeded sample of the language file) for the table's language column
    n_language: int = 200
    # questions of the searches' language constraint (--language-constraint), drawn
    # apart from the column's
    n_language_search: int = 100
    max_new_tokens: dict[str, int] = field(
        default_factory=lambda: {"code": 160, "os": 96, "db": 96}
    )
    max_rounds: dict[str, int] = field(default_factory=lambda: {"os": 4, "db": 3})
    train_epochs: int = 2
    train_lr: float | None = None  # peak learning rate of expert training (None: 1e-3 for LoRA)
    train_batch_size: int = 8  # conversations per optimizer step
    # anchor conversations per step (anchored experts): the anchor's three passes over them
    # (the base's forward, the expert's forward and backward) are most of a step's extra cost
    train_anchor_batch: int = 4
    # KL to the base on the other skills' training conversations while an expert trains
    # (``anchor_weight`` of TrainConfig; 0: plain fine-tuning, the paper's experts)
    anchor_weight: float = 0.0
    train_max_len: int = 2048  # tokens; longer conversations are dropped (and counted)
    # tokens computed per training pass (train-expert's ``max_batch_tokens``; None: a batch in
    # one pass): bounds training's peak memory
    train_max_batch_tokens: int | None = None
    # how the LoRA experts and the all-data fine-tune are kept: ``merged`` into full checkpoints,
    # or as their peft ``adapter`` (train-expert's ``save``); the search, merges and evaluations
    # take either
    expert_form: str = "merged"
    # the engine that evaluates every model and child: ``hf`` (transformers) or ``vllm``
    # (``cycleqd demo --engine`` overrides it)
    engine: str = "hf"
    batch_size: int = 16
    # engine: vllm: memory for keys and values (engine.vllm_kv_cache_gb), in the searches and
    # the evaluations alike; it is most of the engine's resident memory
    vllm_kv_cache_gb: float = 2.0
    # the real benchmarks' development data (MBPP validation, DBBench dev, AgentBench OS dev)
    real_limit: int | None = 30
    # task_arithmetic adds the task vectors at weight 1/3 each, task_arithmetic_full at 1 (the
    # sum, which anchored experts are trained to survive). ``linear`` (the experts' mean) is
    # left out: it is the weight-1/3 task arithmetic, the same model up to rounding (the `cpu`
    # table had them one sample apart), and each row costs a full test evaluation.
    merges: tuple[str, ...] = (
        "task_arithmetic",
        "task_arithmetic_full",
        "ties",
        "dare_ties",
    )
    # the search's settings beyond a run config's defaults: ``cycleqd run --set`` paths of the
    # demo's run config (``search.crossover.kind: per_expert``); the paper's operators are the
    # defaults
    run: dict[str, Any] = field(default_factory=dict)


def load_preset(path: Path) -> Preset:
    """A preset from its YAML file: ``sizes`` (the :class:`Preset` fields) and ``run``."""
    data = read_yaml(path)
    unknown = sorted(set(data) - {"sizes", "run"})
    if unknown:
        raise CycleQDError(f"{path}: unknown key {unknown[0]!r} (a preset has sizes and run)")
    sizes = dict(data.get("sizes") or {})
    fields = set(Preset.__dataclass_fields__) - {"name", "run"}
    bad = sorted(set(sizes) - fields)
    if bad:
        raise CycleQDError(f"{path}: sizes.{bad[0]}: unknown key")
    for key, allowed in (("engine", ("hf", "vllm")), ("expert_form", ("merged", "adapter"))):
        if key in sizes and sizes[key] not in allowed:
            raise CycleQDError(f"{path}: sizes.{key}: {sizes[key]!r} is not one of {allowed}")
    if "merges" in sizes:  # a YAML list; the dataclass is frozen, so a tuple
        sizes["merges"] = tuple(sizes["merges"])
    run = dict(data.get("run") or {})
    return Preset(name=path.stem, run=run, **sizes)


PRESETS: dict[str, Preset] = {
    p.stem: load_preset(p) for p in sorted((CONFIGS / "demo").glob("*.yaml"))
}

# The search's operators as the paper has them: ``cycleqd demo --ablation`` searches with these,
# then with each of a preset's departures from them alone. TSV bases are ablated even though no
# preset uses them yet, so their measured effect is in the table beside the rest.
PAPER_OPERATORS: dict[str, Any] = overlay("paper")


# CMA-ME emitters (``search.emitter``) in place of the preset's operators: the report's next step.
CMA_ME: dict[str, Any] = {"search.emitter.kind": "cma_me"}


def ablations(preset: Preset) -> list[tuple[str, dict[str, Any]]]:
    """``(label, overrides)``: the paper's operators, then each of ``preset``'s changes alone,
    then the preset with CMA-ME emitters proposing its children.

    Each variant's overrides go on top of the preset's own (``preset.run``), so everything but
    the operators (children per batch, say) stays the preset's.
    """
    paper = {**preset.run, **PAPER_OPERATORS}
    variants = [("paper's operators", paper)]
    for key, paper_value in PAPER_OPERATORS.items():
        value = preset.run.get(key, paper_value)
        if key == "basis.kind" and value == paper_value:
            value = "tsv"
        if value == paper_value:
            continue
        shown = "true" if value is True else value
        variants.append((f"paper + {key}: {shown}", {**paper, key: value}))
    variants.append(("preset + search.emitter: cma_me", {**preset.run, **CMA_ME}))
    return variants
