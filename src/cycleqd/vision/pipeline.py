"""``cycleqd demo --track vision``: CycleQD over segmentation experts, end to end, on a CPU.

Stages (each timed; the timings go into the report):

1. data: validation and test scenes of every expert task, plus general scenes (all seeded);
2. base: a Segformer trained on the general ``objects`` task (cached by its inputs);
3. experts: one fine-tune of the base per task (cached);
4. merge baselines: linear and TIES of all experts through mergekit, and each pair of experts
   (the similarity finding);
5. search: CycleQD on the *validation* scenes, through the language path's own search loop;
6. test: every model on the held-out *test* scenes: the table, with bootstrap intervals;
7. report: ``table.md``, ``table.json``, the masks picture, elite maps, ``report.html``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from cycleqd.config import SearchConfig, set_path
from cycleqd.errors import CycleQDError
from cycleqd.schema import format_validation_error
from cycleqd.vision.model import SegmentationEngine, load_model
from cycleqd.vision.presets import VARIANT, VARIANT_LABEL, VisionPreset
from cycleqd.vision.scenes import EXPERT_TASKS, SceneSet, generate
from cycleqd.vision.task import SegmentationTask
from cycleqd.vision.train import TrainSpec, train_cached

Say = Callable[[str], None]
MERGE_LABELS = {"linear": "merge: linear", "ties": "merge: TIES"}
OUTPUTS = (
    "baselines",
    "pairs",
    "cycleqd",
    "cycleqd-variant",
    "table.md",
    "table.json",
    "report.html",
    "figures",
)


class VisionDemo:
    """Runs the stages in order; :meth:`run` returns the test table's rows."""

    def __init__(
        self, out: Path, preset: VisionPreset, *, cache: Path | None = None, say: Say | None = None
    ) -> None:
        from cycleqd.merging.basis import default_cache_dir

        self.out = Path(out)
        self.p = preset
        self.cache = Path(cache) if cache is not None else default_cache_dir() / "vision"
        self.say = say or (lambda message: None)
        self.tasks = list(EXPERT_TASKS)
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.say(f"[stage] {name}")
        started = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - started, 1)
        self.say(f"[stage] {name}: {self.timings[name]:.1f}s")

    # -- stages ----------------------------------------------------------------------------------
    def data(self) -> dict[str, dict[str, SceneSet]]:
        p = self.p
        sets = {
            split: {t: generate(t, split, n, p.image_size, p.seed) for t in self.tasks}
            for split, n in (("validation", p.n_val), ("test", p.n_test))
        }
        sets["general"] = {"objects": generate("objects", "test", p.n_test, p.image_size, p.seed)}
        return sets

    def _train(self, task: str, start: Path | None) -> Path:
        p = self.p
        base = start is None
        spec = TrainSpec(
            task=task,
            n_train=p.n_train,
            image_size=p.image_size,
            steps=p.base_steps if base else p.expert_steps,
            batch_size=p.batch_size,
            lr=p.base_lr if base else p.expert_lr,
            seed=p.seed if base else p.seed + 1 + EXPERT_TASKS.index(task),
        )
        every = max(1, spec.steps // 4)

        def progress(step: int, total: int, loss: float) -> None:
            if step % every == 0 or step == total:
                self.say(f"  {task}: step {step}/{total} loss {loss:.4f}")

        path, cached = train_cached(spec, start, self.cache / p.name, progress=progress)
        if cached:
            self.say(f"  {task}: cached ({path})")
        return path

    def base(self) -> Path:
        return self._train("objects", None)

    def experts(self, base: Path) -> dict[str, Path]:
        return {t: self._train(t, base) for t in self.tasks}

    def merges(self, base: Path, experts: dict[str, Path]) -> dict[str, Path]:
        return {
            m: _merge(m, base, list(experts.values()), self.out / "baselines" / m)
            for m in ("linear", "ties")
        }

    def pair_merges(self, base: Path, experts: dict[str, Path]) -> dict[tuple[str, str, str], Path]:
        from cycleqd.vision.similarity import pairs

        out = {}
        for a, b in pairs(self.tasks):
            for m in self.p.pair_methods:
                target = self.out / "pairs" / f"{a}+{b}-{m}"
                out[(a, b, m)] = _merge(m, base, [experts[a], experts[b]], target)
        return out

    def search(
        self,
        base: Path,
        experts: dict[str, Path],
        val: dict[str, SceneSet],
        *,
        run_name: str = "cycleqd",
        operators: dict[str, Any] | None = None,
    ) -> tuple[Path, dict[str, Any]]:
        """CycleQD on the validation scenes; the run directory and its summary.

        ``operators``: overrides of the search settings (the variant's), by run-config key path
        (``search.crossover.kind``).
        """
        from cycleqd.config import BCConfig
        from cycleqd.merging.basis import basis_key, build_basis
        from cycleqd.merging.materialise import Materialiser
        from cycleqd.merging.sources import DictSource
        from cycleqd.report.run import plot_run
        from cycleqd.search.loop import CycleQD
        from cycleqd.search.store import RunStore
        from cycleqd.vision.model import save_model

        base_source = DictSource(load_model(base).state_dict(), label=str(base))
        sources = {
            t: DictSource(load_model(path).state_dict(), label=str(path))
            for t, path in experts.items()
        }
        basis = build_basis(base_source, sources)
        basis.fingerprint = basis_key(base_source, sources, energy=1.0, rtol=1e-4)
        resident = load_model(base)
        engine = SegmentationEngine(resident)
        materialiser = Materialiser(basis, base_source, resident, torch.device("cpu"))
        store = RunStore(self.out / run_name)
        shutil.rmtree(store.root, ignore_errors=True)
        store.create(json.dumps({"track": "vision", "preset": self.p.__dict__}, default=str))

        def export(genome: Any) -> str:
            materialiser.load(genome)
            return str(save_model(resident, store.final_dir / "model"))

        def progress(event: dict[str, Any]) -> None:
            if event.get("phase") == "search":
                child = " ".join(f"{t}={q:.3f}" for t, q in event["scores"].items())
                best = " ".join(f"{t}={q:.3f}" for t, q in event["best_quality"].items())
                self.say(
                    f"  generation {event['done']}/{self.p.generations} [{event['task']}] "
                    f"child {child} | best {best}"
                )
            elif event.get("phase") == "seeding":
                self.say(f"  expert {event['expert']} scored")

        p = self.p
        search = CycleQD(
            basis=basis,
            materialiser=materialiser,
            engine=engine,
            tasks=[SegmentationTask(t, val[t]) for t in self.tasks],
            task_experts=list(range(len(self.tasks))),
            search=search_config(p, operators),
            seed=p.seed,
            bcs=[BCConfig(bins=p.bins) for _ in self.tasks],
            store=store,
            export=export,
            progress=progress,
            plot=plot_run,
        )
        summary = search.run()
        return store.root, summary

    def evaluate(self, model: Path, test: dict[str, SceneSet]) -> dict[str, list[float]]:
        """Per-image test mIoU of ``model`` on every task."""
        engine = SegmentationEngine(load_model(model))
        return {
            t: [r["score"] for r in SegmentationTask(t, test[t]).evaluate(engine).records]
            for t in test
        }

    # -- the whole demo --------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        """All stages, with torch on ``preset.threads`` threads (restored afterwards)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, self.p.threads))
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> list[dict[str, Any]]:
        from cycleqd.vision.report import ReportContext, table_row, write_outputs

        clean_vision_output(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        with self.stage("data"):
            data = self.data()
        with self.stage("base"):
            base = self.base()
        with self.stage("experts"):
            experts = self.experts(base)
        with self.stage("merge baselines"):
            merges = self.merges(base, experts)
            pair_models = self.pair_merges(base, experts)
        with self.stage("cycleqd search"):
            run_dir, summary = self.search(base, experts, data["validation"])
        final = Path(summary["final"]["model"])
        variant: Path | None = None
        vsummary: dict[str, Any] | None = None
        if self.p.variant:
            with self.stage("cycleqd search (variant)"):
                _, vsummary = self.search(
                    base, experts, data["validation"], run_name="cycleqd-variant", operators=VARIANT
                )
                variant = Path(vsummary["final"]["model"])
        models: list[tuple[str, Path]] = [("base", base)]
        models += [(f"expert: {t}", p) for t, p in experts.items()]
        models += [(MERGE_LABELS[m], p) for m, p in merges.items()]
        models += [("CycleQD", final)]
        if variant is not None:
            models += [(VARIANT_LABEL, variant)]
        rows: list[dict[str, Any]] = []
        with self.stage("test evaluation"):
            for name, path in models:
                per_image = self.evaluate(path, data["test"])
                rows.append(table_row(name, per_image, seed=self.p.seed))
                self.say(
                    f"  {name}: " + " ".join(f"{t}={q:.3f}" for t, q in rows[-1]["scores"].items())
                )
            pair_scores = {}
            for (a, b, m), path in pair_models.items():
                sub = {t: data["test"][t] for t in (a, b)}
                per_image = self.evaluate(path, sub)
                pair_scores[(a, b, m)] = {t: sum(v) / len(v) for t, v in per_image.items()}
        with self.stage("report"):
            write_outputs(
                ReportContext(out=self.out, p=self.p, tasks=self.tasks, timings=self.timings),
                rows=rows,
                models=models,
                pair_scores=pair_scores,
                experts=experts,
                base=base,
                data=data,
                run_dir=run_dir,
                summary=summary,
                variant_summary=vsummary,
            )
        return [{k: v for k, v in r.items() if k != "samples"} for r in rows]


def search_config(preset: VisionPreset, operators: dict[str, Any] | None = None) -> SearchConfig:
    """The paper's search settings with the preset's budget, then ``operators`` (run-config key
    paths such as ``search.crossover.kind``; only the ``search`` section applies here)."""
    settings: dict[str, Any] = {"generations": preset.generations, "plot_every": 0}
    for path, value in (operators or {}).items():
        section, _, key = path.partition(".")
        if section != "search" or not key:
            raise CycleQDError(f"vision search: {path}: only search.* settings apply here")
        set_path(settings, key, value)
    try:
        return SearchConfig.model_validate(settings)
    except ValidationError as err:
        raise CycleQDError(f"vision search: {format_validation_error(err, 'search')}") from err


def _merge(method: str, base: Path, experts: list[Path], out: Path) -> Path:
    """A mergekit merge (mergekit infers Segformer's layout from the weights; its notices about
    the unknown architecture and the missing tokenizer are expected here and kept quiet)."""
    from cycleqd.merging.baselines import merge

    params: dict[str, Any] = {"density": 0.5, "weight": 1.0} if method == "ties" else {}
    loggers = [logging.getLogger(), logging.getLogger("mergekit")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        return merge(method, base, experts, out, params, overwrite=True)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def clean_vision_output(out: Path) -> None:
    """Remove a previous vision demo's outputs (never the model cache)."""
    for name in OUTPUTS:
        path = Path(out) / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
