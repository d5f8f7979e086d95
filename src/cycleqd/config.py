"""The run configuration: one pydantic model per YAML section, and every default in one place.

Validation is strict (unknown keys are errors) because a misspelt key silently falling back to a
default is the most expensive kind of bug in a search that runs for days. Errors name the key path
(``tasks.0.bc.bins``) so the user can find the line in the YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from cycleqd.errors import CycleQDError
from cycleqd.schema import StrictModel, format_validation_error
from cycleqd.search.operators import (
    CROSSOVERS,
    FINAL_MERGES,
    MUTATIONS,
    SAMPLERS,
    choice_type,
)


class ExpertConfig(StrictModel):
    """One fine-tuned expert: a Hugging Face model directory sharing the base's architecture,
    or a peft LoRA adapter directory of the base (``adapter_config.json``), used as it is."""

    name: str = Field(description="The expert's name (a task of the same name uses its basis).")
    path: Path = Field(description="Model or adapter directory, relative to the config file.")


class BCConfig(StrictModel):
    """How a task's score is binned when it serves as a behaviour characteristic (BC).

    ``range: auto`` is the paper's rule: 85% of the weakest expert's score to 115% of the
    strongest. Scores outside the range fall into the edge bins.
    """

    range: Literal["auto"] | tuple[float, float] = Field(
        default="auto",
        description="auto: 85% of the weakest expert's score to 115% of the strongest (the "
        "paper's rule); or [low, high].",
    )
    bins: int = Field(default=15, ge=1, le=1000, description="Bins of this BC axis.")

    @field_validator("range")
    @classmethod
    def _ordered(cls, value: Any) -> Any:
        if isinstance(value, tuple) and not value[0] < value[1]:
            raise ValueError(f"range must be [low, high] with low < high, got {list(value)}")
        return value


class TaskConfig(StrictModel):
    """One skill: its evaluator (``type`` in the task registry), its expert and its BC grid."""

    name: str = Field(description="The task's name (its archive's and its score's).")
    type: str = Field(description="A registered task type (code, agentbench-os, dbbench, ...).")
    expert: str | None = Field(
        default=None,
        description="Expert whose SVD basis drives mutation while this task's archive is active. "
        "Default: the expert with the task's name, else the expert at the same position.",
    )
    bc: BCConfig = BCConfig()
    params: dict[str, Any] = Field(
        default_factory=dict, description="The task type's own parameters (data file, limits)."
    )


class ConstraintConfig(StrictModel):
    """A task the search must not lose ground on: it has a floor instead of an archive.

    Every child is scored on it as well; a child that scores more than ``max_drop`` below the
    base model (scored once, when the archives are seeded) enters no archive, so it can neither
    be an elite nor a parent nor the final model. The paper's method has no such thing (it is
    off unless configured); it exists because a merge of agent experts can lose general
    language ability without any agent task noticing.
    """

    name: str
    type: str
    params: dict[str, Any] = Field(default_factory=dict)
    max_drop: float = Field(
        default=0.0, ge=0.0, le=1.0, description="largest drop below the base model's score"
    )


Sampler = choice_type(SAMPLERS, "elite")
Crossover = choice_type(CROSSOVERS, "linear")
Mutation = choice_type(MUTATIONS, "svd")
FinalMerge = choice_type(FINAL_MERGES, "softmax")


class EmitterConfig(StrictModel):
    """Who proposes each generation's child: the paper's operators or CMA-ME emitters.

    ``cma_me`` (Fontaine et al., 2020, through pyribs): one CMA-ES emitter per task archive,
    ranked by archive improvement; the cycle picks whose emitter proposes each generation, and
    every child still enters every archive. Its search space is one scale per expert per group
    of tensors (``groups``; see :mod:`cycleqd.merging.groups`), small enough for CMA-ES to
    learn in a few hundred evaluations. The sampler, crossover and mutation sections are not
    used (the mutation only with ``mutate``).
    """

    kind: Literal["paper", "cma_me"] = Field(
        default="paper",
        description="paper: parents sampled from the active archive, crossed over and mutated. "
        "cma_me: one CMA-ES emitter per archive proposes children (pyribs).",
    )
    groups: Literal["model", "block", "tensor_kind"] = Field(
        default="block",
        description="cma_me: the tensors that share one scale per expert: the whole model, each "
        "transformer block, or each kind of tensor across blocks (q_proj, ...).",
    )
    x0: Literal["expert", "sum"] = Field(
        default="expert",
        description="cma_me: where each archive's emitter starts: its own expert (scale 1 on "
        "that expert, 0 on the others) or the experts' sum (1 on every expert).",
    )
    sigma0: float = Field(default=0.2, gt=0, description="cma_me: CMA-ES's initial step size.")
    batch_size: int = Field(
        default=4, ge=2, description="cma_me: solutions per CMA-ES iteration of each emitter."
    )
    ranker: Literal["imp", "2imp"] = Field(
        default="imp",
        description="cma_me: pyribs' improvement ranker (imp), or its two-stage variant (2imp).",
    )
    archive_learning_rate: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="cma_me: none for CMA-ME; a learning rate below 1 makes it CMA-MAE (each "
        "emitter ranks by a soft threshold per cell, annealed at this rate).",
    )
    mutate: bool = Field(
        default=False,
        description="cma_me: also apply the configured mutation to each proposed child.",
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_kind(cls, data: Any) -> Any:
        """``emitter: cma_me`` is ``emitter: {kind: cma_me}``."""
        return {"kind": data} if isinstance(data, str) else data


class SearchConfig(StrictModel):
    """The CycleQD loop: its budget and its operators, each chosen by name.

    Each operator section is ``{kind: NAME, ...that operator's parameters}`` (or ``NAME``
    alone); the kinds and their parameters are registered in :mod:`cycleqd.search.operators`.
    """

    generations: int = Field(default=1200, ge=0, description="Children bred and evaluated.")
    sampler: Sampler = Field(
        description="Parent selection. elite: the paper's elite sampling (alpha_low, "
        "alpha_high); random: its ablation.",
    )
    crossover: Crossover = Field(
        description="linear: the paper's weighted average of the parents' task vectors with "
        "N(mean, std) weights (per_layer: one pair per layer). per_expert: the same per expert "
        "slice of the genome, weighted by how much of that expert each parent carries, so a "
        "skill only one parent has passes on whole.",
    )
    mutation: Mutation = Field(
        description="svd: terms along the active task's expert's singular vectors, "
        "u ~ U[0, w_max) (signed: U(-w_max, w_max)). gaussian: dense N(0, std) noise. none.",
    )
    final_model: Literal["merge", "best_of"] = Field(
        default="merge",
        description="merge: the final merge of each archive's best elite. best_of: that merge "
        "or an archived individual, whichever has the best mean validation score.",
    )
    final_merge: FinalMerge = Field(
        description="How the final merge combines each archive's best elite. softmax: the "
        "paper's weights softmax(quality / temperature). ties: mergekit's TIES over the distinct "
        "elites' task vectors (trim to density, elect signs, average agreeing entries). "
        "assemble: each expert's slice of the genome from the best elite of its task's archive, "
        "in full (task arithmetic at weight 1 when those elites are the experts), for experts "
        "whose task vectors do not interfere (anchored experts).",
    )
    plot_every: int = Field(default=50, ge=0, description="Redraw elite maps every N generations.")
    emitter: EmitterConfig = Field(
        default_factory=EmitterConfig,
        description="Who proposes each child: paper (the operators above) or cma_me (CMA-ES "
        "emitters, one per archive; a bare name is its kind with default settings).",
    )


class BasisConfig(StrictModel):
    """Expert SVD bases: numerical-rank cut-off, optional energy truncation, on-disk cache."""

    energy: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Below 1: keep the smallest prefix of singular values holding this share of "
        "each task vector's squared norm.",
    )
    rtol: float = Field(
        default=1e-4,
        ge=0.0,
        lt=1.0,
        description="Singular values below rtol * s_max are dropped: the float32 rounding noise of "
        "theta_expert - theta_base, which would otherwise make a LoRA expert look full rank.",
    )
    max_rank: int | None = Field(
        default=None,
        ge=1,
        description="At most this many directions per expert and tensor (full fine-tunes of "
        "large models); far below a tensor's size, a randomized SVD finds them. The loss is "
        "recorded as the expert's relative error (state.json basis_fidelity).",
    )
    kind: Literal["svd", "tsv"] = Field(
        default="svd",
        description="svd: each expert's own singular vectors (an expert's genome is exact). "
        "tsv: the experts' concatenated singular vectors orthogonalised per tensor (Task "
        "Singular Vectors), so different experts' directions no longer overlap.",
    )
    combine: Literal["sum", "ties"] = Field(
        default="sum",
        description="How a genome's per-expert parts form its task vector. sum: added (the "
        "paper's; linear in the coefficients, so children can share forward passes). ties: "
        "TIES-merged per tensor (trim to density, elect signs, average agreeing entries), so "
        "the whole search runs in a space where conflicting skills do not simply add up; an "
        "expert's own genome is still the expert exactly.",
    )
    density: float = Field(
        default=0.5, gt=0.0, le=1.0, description="combine: ties: share of each part kept"
    )
    cache_dir: Path | None = Field(
        default=None, description="Bases' cache (default $CYCLEQD_CACHE or ~/.cache/cycleqd)."
    )
    device: str = Field(default="cpu", description="Where the SVDs run (cuda for big models).")


class EngineConfig(StrictModel):
    """The resident inference model."""

    kind: Literal["hf", "vllm"] = Field(
        default="hf",
        description="hf: transformers' model with cycleqd's batched greedy loop (several "
        "children can share forward passes); vllm: vLLM (pip install 'cycleqd[vllm]'), one "
        "child at a time, its weights reloaded in place.",
    )
    device: str = Field(default="auto", description="auto: CUDA when available; cpu; cuda.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="auto: on a GPU the checkpoint's 16-bit dtype (bfloat16 for a float32 "
        "checkpoint); bfloat16 on a CPU with native bf16; float32 elsewhere.",
    )
    batch_size: int = Field(default=16, ge=1, description="Rows per forward pass.")
    population_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Rows per forward pass when several children share passes "
        "(executor.children_per_batch > 1); default: batch_size per child.",
    )
    vllm_kv_cache_gb: float = Field(
        default=2.0,
        gt=0.0,
        description="kind: vllm: memory for keys and values (vLLM would otherwise take most "
        "of the machine's, or 90% of the GPU's).",
    )
    vllm_max_model_len: int | None = Field(
        default=None, ge=16, description="kind: vllm: context length (default: the model's)."
    )
    vllm_compile: bool = Field(
        default=True,
        description="kind: vllm: torch.compile the model (faster steps; about a minute of "
        "start-up on first use, cached after); false runs eagerly.",
    )


class ExecutorConfig(StrictModel):
    """Where children are evaluated: in this process, or on a pool of Ray actors.

    With Ray, every actor holds a resident engine and its task environments; the main process
    keeps the archives and keeps ``in_flight`` children evaluating at once (default:
    ``children_per_batch`` per actor), sampling the next child as soon as one returns. Each actor
    (or the serial executor) evaluates up to ``children_per_batch`` children in shared passes.
    """

    kind: Literal["serial", "ray"] = Field(
        default="serial", description="serial: this process; ray: a pool of Ray actors."
    )
    children_per_batch: int = Field(
        default=1,
        ge=1,
        description="Children evaluated together on one engine: their rows share every forward "
        "pass, each row adding its own child's low-rank delta over the expert bases.",
    )
    population: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="auto: a measured cost model picks shared passes or per-child "
        "materialisation for each group; on: always share what can be shared; off: always "
        "materialise one child at a time.",
    )
    actors: int = Field(default=2, ge=1, description="Ray actors, each with its own engine.")
    in_flight: int | None = Field(
        default=None,
        ge=1,
        description="Children evaluating at once (default: actors x children_per_batch).",
    )
    actor_cpus: float = Field(default=1.0, ge=0.0, description="CPUs Ray reserves per actor.")
    actor_gpus: float = Field(default=0.0, ge=0.0, description="GPUs Ray reserves per actor.")
    ray_address: str | None = Field(
        default=None,
        description="An existing cluster (e.g. 'auto' or 'ray://head:10001'); "
        "by default cycleqd starts a local Ray itself.",
    )
    temp_dir: Path | None = Field(
        default=None, description="Ray's session files; default: ray/ inside the run directory."
    )


class RunConfig(StrictModel):
    """A complete CycleQD run."""

    seed: int = Field(default=0, description="Every random choice of the run derives from it.")
    base_model: Path = Field(
        description="The base's Hugging Face directory (safetensors), relative to the config."
    )
    experts: list[ExpertConfig] = Field(min_length=1, description="One per skill.")
    tasks: list[TaskConfig] = Field(
        min_length=2, description="At least two; archive k uses task k's score as quality."
    )
    search: SearchConfig = SearchConfig()
    basis: BasisConfig = BasisConfig()
    engine: EngineConfig = EngineConfig()
    executor: ExecutorConfig = ExecutorConfig()
    constraints: list[ConstraintConfig] = Field(
        default_factory=list,
        description="Tasks scored on every child that keep their archives' elites from falling "
        "below the base model (see ConstraintConfig); none by default, as in the paper.",
    )

    @model_validator(mode="after")
    def _names(self) -> RunConfig:
        for kind, names in (
            ("expert", [e.name for e in self.experts]),
            ("task or constraint", [t.name for t in (*self.tasks, *self.constraints)]),
        ):
            seen = {n for n in names if names.count(n) > 1}
            if seen:
                raise ValueError(f"duplicate {kind} name {sorted(seen)[0]!r}")
        if self.engine.kind == "vllm" and self.executor.children_per_batch > 1:
            raise ValueError(
                "engine.kind: vllm evaluates one child at a time; executor.children_per_batch "
                f"{self.executor.children_per_batch} (children sharing forward passes) needs "
                "engine.kind: hf"
            )
        return self

    def task_experts(self) -> list[int]:
        """Index of the expert that drives SVD mutation for each task (see TaskConfig.expert)."""
        names = [e.name for e in self.experts]
        out: list[int] = []
        for i, task in enumerate(self.tasks):
            if task.expert is not None:
                if task.expert not in names:
                    raise CycleQDError(
                        f"config error: tasks.{i}.expert: no expert named {task.expert!r} "
                        f"(experts: {', '.join(names)})"
                    )
                out.append(names.index(task.expert))
            elif task.name in names:
                out.append(names.index(task.name))
            elif i < len(names):
                out.append(i)
            else:
                raise CycleQDError(
                    f"config error: tasks.{i}.expert: task {task.name!r} has no expert of the same "
                    "name or position; set its 'expert' key"
                )
        return out


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply one ``--set key.path=value`` override; list items are addressed by index.

    An operator given by name alone (``final_merge: ties``) opens as ``{kind: ties}`` when a
    path goes into it (``search.final_merge.density=1``).
    """
    parts = dotted.split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        path = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise CycleQDError(
                    f"--set {dotted}: {path} is not an index of a list of {len(node)}"
                )
            key: Any = int(part)
        elif isinstance(node, dict):
            key = part
        else:
            raise CycleQDError(f"--set {dotted}: {'.'.join(parts[:depth])} is not a section")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            elif isinstance(node, dict) and isinstance(node[key], str):
                node[key] = {"kind": node[key]}
            node = node[key]


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """Parse ``key.path=value`` strings; values are read as YAML (numbers, lists, booleans)."""
    out = []
    for item in items:
        if "=" not in item:
            raise CycleQDError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise CycleQDError(f"--set {key}: value is not valid YAML: {exc}") from exc
        out.append((key.strip(), value))
    return out


def _resolve_paths(data: dict[str, Any], root: Path) -> None:
    """Make model paths absolute relative to the config file, so runs resume from anywhere."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).is_absolute():
            return str((root / value).resolve())
        return value

    if "base_model" in data:
        data["base_model"] = fix(data["base_model"])
    for expert in data.get("experts") or []:
        if isinstance(expert, dict) and "path" in expert:
            expert["path"] = fix(expert["path"])
    basis = data.get("basis")
    if isinstance(basis, dict) and basis.get("cache_dir"):
        basis["cache_dir"] = fix(basis["cache_dir"])
    executor = data.get("executor")
    if isinstance(executor, dict) and executor.get("temp_dir"):
        executor["temp_dir"] = fix(executor["temp_dir"])
    for task in [*(data.get("tasks") or []), *(data.get("constraints") or [])]:
        params = task.get("params") if isinstance(task, dict) else None
        if isinstance(params, dict):
            resolve_task_paths(params, root)


def resolve_task_paths(params: dict[str, Any], root: Path) -> None:
    """Make a task's data paths (``data``, ``scripts``) absolute relative to ``root``."""
    for key in ("data", "scripts"):
        value = params.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            params[key] = str((root / value).resolve())


# The operator keys of configs written before operators were chosen by name: every operator's
# parameters sat side by side, and the final merge's were top-level search keys.
_LEGACY_FINAL = {
    "final_temperature": ("softmax", "temperature"),
    "final_density": ("ties", "density"),
}


def upgrade_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """A config dumped before operators had their own parameter models, in today's keys.

    Why: ``config.yaml`` of a run directory is what ``cycleqd resume`` reads; a run started by
    an earlier version must resume. Recognised by its top-level ``search.final_temperature`` or
    ``search.final_density`` (every dump of those versions wrote both); each operator section
    keeps only the keys its kind takes, and the final merge's parameter moves under it.
    """
    search = data.get("search")
    if not isinstance(search, dict) or not set(_LEGACY_FINAL) & set(search):
        return data
    search = dict(search)
    final = search.get("final_merge", "softmax")
    final = {"kind": final} if isinstance(final, str) else dict(final)
    for key, (kind, param) in _LEGACY_FINAL.items():
        value = search.pop(key, None)
        if value is not None and final.get("kind", "softmax") == kind:
            final[param] = value
    search["final_merge"] = final
    for section, registry, default in (
        ("sampler", SAMPLERS, "elite"),
        ("mutation", MUTATIONS, "svd"),
        ("crossover", CROSSOVERS, "linear"),
    ):
        spec = search.get(section)
        if isinstance(spec, dict) and spec.get("kind", default) in registry:
            kept = registry.get(spec.get("kind", default)).params.model_fields
            search[section] = {k: v for k, v in spec.items() if k == "kind" or k in kept}
    return {**data, "search": search}


def load_config(
    path: Path | None = None,
    *,
    data: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    values: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Read, override and validate a config; relative paths are taken from the file's folder.

    ``overrides``: ``key.path=value`` strings (``--set``); ``values``: the same as a mapping of
    key paths to parsed values (a preset's overlay), applied after them.
    """
    root = Path.cwd()
    if path is not None:
        if not path.is_file():
            raise CycleQDError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise CycleQDError(f"{path}: not valid YAML: {exc}") from exc
        root = path.resolve().parent
    if not isinstance(data, dict):
        raise CycleQDError(f"{path}: the top level must be a mapping of config keys")
    data = upgrade_legacy(dict(data))
    for key, value in [*parse_overrides(overrides or []), *(values or {}).items()]:
        set_path(data, key, value)
    _resolve_paths(data, root)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        where = f"{path}: " if path is not None else ""
        raise CycleQDError(f"config error: {where}{format_validation_error(err)}") from err


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML, stored in the run directory."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
