"""The demo's merge baselines: which mergekit merges, with which parameters, reused by key.

Every baseline's parameters are here (:data:`MERGES`), so the table's rows say exactly what
they are; a baseline on disk is reused when its :func:`~cycleqd.keys.merge_key` (method,
parameters, base and expert files, mergekit and merging code) is the one stored beside it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cycleqd.keys import merge_key, models_digest
from cycleqd.merging.baselines import merge
from cycleqd.search.store import atomic_write_text

MERGE_LABELS = {
    "linear": "merge: linear",
    "task_arithmetic": "merge: task arithmetic",
    "task_arithmetic_full": "merge: task arithmetic (weight 1)",
    "ties": "merge: TIES",
    "dare_ties": "merge: DARE-TIES",
    "dare_linear": "merge: DARE-linear",
}
# merges that draw at random (DARE's drop masks): repeated with the searches' seeds
RANDOM_MERGES = ("dare_ties", "dare_linear")
SEED_SUFFIX = re.compile(r" \(seed (\d+)\)$")


def merge_label(method: str) -> str:
    """The table's name of a merge baseline; ``dare_ties-seed1`` is DARE-TIES with drop seed 1."""
    name, _, seed = method.partition("-seed")
    label = MERGE_LABELS.get(name, name)
    return f"{label} (seed {seed})" if seed else label


def merge_parameters(method: str, n_experts: int, seed: int) -> tuple[str, dict[str, Any]]:
    """The mergekit method and parameters of a baseline: TIES and DARE keep half of each task
    vector at weight 1; task arithmetic weighs each expert 1/n (``task_arithmetic_full``: 1,
    every task vector added in full); DARE draws its drop masks from ``seed``."""
    if method == "task_arithmetic":
        return method, {"weight": 1.0 / n_experts}
    if method == "task_arithmetic_full":
        return "task_arithmetic", {"weight": 1.0}
    params: dict[str, Any] = {}
    if method in ("ties", "dare_ties", "dare_linear"):
        params = {"density": 0.5, "weight": 1.0}
    if method in RANDOM_MERGES:
        params["seed"] = seed
    return method, params


def build_merges(
    out: Path,
    base: Path,
    experts: dict[str, Path],
    methods: Sequence[str],
    seeds: Sequence[int],
    say: Callable[[str], None],
) -> dict[str, Path]:
    """The merge baselines under ``out``, each reused when its key is the one stored beside it
    in ``<method>.key``.

    A random merge (DARE's drop masks) is built once per seed of ``seeds``: ``dare_ties`` with
    the first, ``dare_ties-seed{s}`` with the others. Why: CycleQD is reported over its search
    seeds; one draw of a random baseline set beside that mean is a lucky or unlucky draw (on the
    `cpu` preset DARE-TIES scored 0.833, 0.743 and 0.785 on test with drop seeds 0, 1 and 2).
    """
    built: dict[str, Path] = {}
    models = models_digest([base, *experts.values()])
    builds = [(m, seeds[0]) for m in methods]
    builds += [(m, s) for m in methods if m in RANDOM_MERGES for s in seeds[1:]]
    for method, seed in builds:
        name = method if seed == seeds[0] else f"{method}-seed{seed}"
        target = out / name
        mergekit_method, params = merge_parameters(method, len(experts), seed)
        key = merge_key(mergekit_method, params, models)
        key_file = out / f"{name}.key"
        stored = key_file.read_text().strip() if key_file.is_file() else None
        if stored == key and (target / "config.json").is_file():
            say(f"  {name}: reused (same experts, parameters and code)")
        else:
            key_file.unlink(missing_ok=True)
            merge(mergekit_method, base, list(experts.values()), target, params, overwrite=True)
            atomic_write_text(key_file, key + "\n")
        built[name] = target
    return built
