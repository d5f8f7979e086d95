"""Text with square brackets reaches the terminal as written (rich would read ``[ray]`` as markup).

The CLI runs in-process through :func:`cycleqd.cli.main` (so its error handling is the real one)
or, once, as the installed command in a subprocess; each test checks the exact line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from helpers import base_config

from cycleqd import cli

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    """Exit code and the non-empty stderr lines of ``cycleqd *args`` run in this process."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(args))
    err = capsys.readouterr().err
    return int(exit_info.value.code or 0), [x for x in err.splitlines() if x.strip()]


def test_missing_ray_names_the_extra_verbatim(
    family: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(base_config(family, tmp_path)))
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    args = ("run", str(config), "--out", str(tmp_path / "out"), "--set", "executor.kind=ray")
    code, lines = run_main(capsys, *args)
    assert code == 2  # after the expert bases' progress bar, one error line
    assert lines[-1] == (
        "error: executor.kind: ray needs the ray package (pip install 'cycleqd[ray]')"
    )
    assert sum(x.startswith("error") for x in lines) == 1


def test_user_values_with_brackets_print_verbatim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "runs[1]" / "config[copy].yaml"
    code, lines = run_main(capsys, "run", str(missing))
    assert (code, lines) == (2, [f"error: config file not found: {missing}"])
    config = tmp_path / "c[1].yaml"
    config.write_text("seed: 0\n")
    code, lines = run_main(capsys, "run", str(config), "--set", "tasks[0]")
    assert (code, lines) == (2, ["error: --set 'tasks[0]': expected key.path=value"])


def test_installed_cli_prints_a_list_in_an_error(tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    args = ["data", "generate", "code-mini", "--level", "9", "--out", str(out)]
    res = subprocess.run(
        [sys.executable, "-m", "cycleqd.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert res.returncode == 2
    assert res.stderr.strip() == "error: --level 9: code-mini has levels [1, 2, 3]"


def _optional_packages() -> list[tuple[str, str]]:
    """Every (extra, package) of pyproject's optional-dependencies."""
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    return [
        (extra, req.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip())
        for extra, reqs in extras.items()
        for req in reqs
    ]


@pytest.mark.parametrize(("extra", "package"), _optional_packages())
def test_any_missing_optional_package_names_its_extra(
    extra: str, package: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = package.lower().replace("-", "_")

    def needs_it() -> None:
        # The edge of this unit test: what Python raises when the extra is not installed.
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    cli.app.command("needs-optional")(needs_it)
    try:
        code, lines = run_main(capsys, "needs-optional")
    finally:
        cli.app.registered_commands.pop()
    assert code == 2
    assert lines == [f"error: this needs the {package} package (pip install 'cycleqd[{extra}]')"]


def test_a_missing_required_module_keeps_its_traceback() -> None:
    def broken() -> None:
        raise ModuleNotFoundError("No module named 'nosuchmodule'", name="nosuchmodule")

    cli.app.command("broken")(broken)
    try:
        with pytest.raises(ModuleNotFoundError):
            cli.main(["broken"])
    finally:
        cli.app.registered_commands.pop()


def test_tables_and_progress_keep_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    summary = {
        "best_quality": {"copy[0]": 0.5},
        "expert_scores": {"e[1]": {"copy[0]": 0.25}},
        "final": {"scores": {"copy[0]": 0.75}, "model": "runs/[x]/final"},
    }
    cli._print_summary(summary, Path("runs/[x]"))
    out = capsys.readouterr().out
    for text in ("cycleqd run runs/[x]", "copy[0]", "expert e[1]", "final model: runs/[x]/final"):
        assert text in out
    with cli.RunProgress(3) as progress:
        progress(
            {
                "phase": "search",
                "generation": 0,
                "task": "copy",
                "done": 1,
                "best_quality": {"copy[0]": 0.5},
            }
        )
    err = capsys.readouterr().err
    assert "generation 1 [copy]" in err and "best copy[0]=0.500" in err
