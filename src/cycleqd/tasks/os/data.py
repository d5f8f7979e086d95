"""Loading AgentBench OS-interaction data files (``.json`` list/object or ``.jsonl``).

The format, as AgentBench v0.2 reads it: ``description``; optional ``create`` with ``image`` and
``init`` (one script or a list); optional ``start`` (a command typed into the agent's shell);
``evaluation`` with either ``match`` (a string, or ``{"answer"|"regex", "strip"}``) or ``check``
(one script or a list, where ``null`` means "the example script") plus ``example``. A script is a
bare string (bash code) or ``{"language", "file"|"code"}``; ``file`` is relative to the scripts
folder of the data file. We resolve files at load time so a bad path fails before any episode.

Quirks of the public data are handled the way AgentBench handles them: a ``create`` that is not an
object (dev.json has a list there) means "default image, no init"; ``example`` outside
``evaluation`` is ignored; unknown keys (``labels``, ``local``, our ``trajectory``) are kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cycleqd.errors import CycleQDError
from cycleqd.tasks.files import iter_jsonl, read_text

DEFAULT_IMAGES = {"default", "local-os/default"}


@dataclass(frozen=True)
class Script:
    language: str
    code: str


@dataclass
class OSSample:
    """One AgentBench OS problem, scripts resolved."""

    sample_id: str
    index: int
    description: str
    image: str | None = None
    init: list[Script] = field(default_factory=list)
    start: Script | None = None
    match: dict[str, Any] | None = None
    check: list[Script | None] | None = None
    example: Script | None = None
    trajectory: list[str] | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def default_scripts_dir(data: Path) -> Path | None:
    """The scripts folder of a data file in AgentBench's layout, if it exists.

    ``<root>/data/dev.json`` pairs with ``<root>/scripts/dev/`` and a group file
    ``<root>/data/<n>/<name>.json`` with ``<root>/scripts/<n>/`` (AgentBench's ``configs/tasks/
    os.yaml``). A group whose samples are all ``match`` has no scripts folder upstream, so a
    missing folder is no error here: only a sample that names a script file needs one.
    """
    for candidate in (
        data.parent.parent / "scripts" / data.stem,
        data.parent.parent.parent / "scripts" / data.parent.name,
    ):
        if candidate.is_dir():
            return candidate
    return None


def _script(obj: Any, scripts: Path | None, where: str) -> Script | None:
    if obj is None:
        return None
    if isinstance(obj, str):
        return Script("bash", obj)
    if not isinstance(obj, dict):
        raise CycleQDError(f"{where}: a script must be a string or an object, got {obj!r}")
    language = str(obj.get("language", "bash"))
    if "file" in obj:
        name = str(obj["file"])
        if scripts is None:
            raise CycleQDError(
                f"{where}: names script file {name!r} but no scripts folder is known "
                "(pass --scripts, or set the task's `scripts` parameter)"
            )
        if not scripts.is_dir():
            raise CycleQDError(
                f"{where}: names script file {name!r} but the scripts folder {scripts} "
                "does not exist"
            )
        path = scripts / name
        if not path.is_file():
            raise CycleQDError(f"{where}: script file {name!r} not found: {path}")
        # AgentBench reads a file script once at load time and runs its text exactly like an
        # inline ``code`` script (bash -c / python3 -c); a shebang line is only a comment.
        return Script(language, path.read_text(encoding="utf-8"))
    if "code" in obj:
        return Script(language, str(obj["code"]))
    raise CycleQDError(f"{where}: a script object needs 'file' or 'code'")


def parse_sample(item: Any, index: int, prefix: str, scripts: Path | None, where: str) -> OSSample:
    """One raw item to an :class:`OSSample`; errors name ``where``."""
    if not isinstance(item, dict) or not isinstance(item.get("description"), str):
        raise CycleQDError(f"{where}: expected an object with a string 'description'")
    sample = OSSample(
        sample_id=f"{prefix}{index:05d}", index=index, description=item["description"], raw=item
    )
    create = item.get("create")
    if isinstance(create, dict):
        if "image" in create:
            sample.image = str(create["image"])
        if "init" in create:
            inits = create["init"] if isinstance(create["init"], list) else [create["init"]]
            sample.init = [
                s
                for i, obj in enumerate(inits)
                if (s := _script(obj, scripts, f"{where}.create.init[{i}]")) is not None
            ]
    if "start" in item:
        sample.start = _script(item["start"], scripts, f"{where}.start")
    evaluation = item.get("evaluation")
    if not isinstance(evaluation, dict):
        raise CycleQDError(f"{where}: missing 'evaluation' object")
    if "match" in evaluation:
        match = evaluation["match"]
        sample.match = {"answer": match, "strip": True} if isinstance(match, str) else match
        if not isinstance(sample.match, dict) or not (
            "answer" in sample.match or "regex" in sample.match
        ):
            raise CycleQDError(f"{where}.evaluation.match: need a string, 'answer' or 'regex'")
    elif "check" in evaluation:
        checks = evaluation["check"]
        checks = checks if isinstance(checks, list) else [checks]
        sample.check = [
            _script(obj, scripts, f"{where}.evaluation.check[{i}]") for i, obj in enumerate(checks)
        ]
        if "example" in evaluation:
            sample.example = _script(evaluation["example"], scripts, f"{where}.evaluation.example")
    else:
        raise CycleQDError(f"{where}.evaluation: 'check' or 'match' must exist")
    traj = item.get("trajectory")
    if traj is not None:
        if not isinstance(traj, list) or not all(isinstance(t, str) for t in traj):
            raise CycleQDError(f"{where}.trajectory: expected a list of strings")
        sample.trajectory = list(traj)
    return sample


def read_raw(path: Path) -> list[Any]:
    if path.suffix == ".jsonl":
        return [item for _, item in iter_jsonl(path, "AgentBench OS")]
    text = read_text(path, "AgentBench OS")
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise CycleQDError(f"{path}: not valid JSON ({exc})") from exc
    if isinstance(raw, dict):
        return [raw]
    if not isinstance(raw, list):
        raise CycleQDError(f"{path}: expected a list of samples")
    return raw


def load_samples(
    path: Path, scripts: Path | None = None, limit: int | None = None
) -> list[OSSample]:
    """Read a data file; ``scripts`` defaults to :func:`default_scripts_dir`.

    Sample ids follow AgentBench's index scheme: ``<file stem>-<index:05d>``. The scripts folder
    (given or default) is only looked at for samples that name a script file, so a file of
    ``match`` samples loads without one; the error for a sample that does need it names the
    sample and the script.
    """
    path = Path(path)
    scripts = Path(scripts) if scripts is not None else default_scripts_dir(path)
    raw = read_raw(path)
    if limit is not None:
        raw = raw[:limit]
    prefix = f"{path.stem}-"
    samples = [
        parse_sample(item, i, prefix, scripts, f"{path}[{i}] ({prefix}{i:05d})")
        for i, item in enumerate(raw)
    ]
    if not samples:
        raise CycleQDError(f"{path}: no samples")
    return samples


# What a sample's own scripts would need the internet for; episodes have no network.
_NETWORK = [
    (re.compile(r"\bapt(-get)?\b[^\n;&|]*\binstall\b"), "installs Debian packages (apt)"),
    (re.compile(r"\bpip3?\b[^\n;&|]*\binstall\b"), "installs Python packages (pip)"),
    (re.compile(r"\bnpm\b[^\n;&|]*\binstall\b"), "installs npm packages"),
    (re.compile(r"\b(curl|wget)\b[^\n;&|]*\b(https?|ftp)://"), "downloads from the internet"),
    (re.compile(r"\bgit\s+clone\b"), "clones a remote git repository"),
]


def unsupported_reason(sample: OSSample) -> str | None:
    """Why we cannot faithfully run this sample (None when we can).

    Samples that need the network or an image other than the default are reported, never
    silently failed: their score would say nothing about the model.
    """
    if sample.image is not None and sample.image.split("/")[-1] not in {
        i.split("/")[-1] for i in DEFAULT_IMAGES
    }:
        return f"needs the docker image {sample.image!r}; only the default image is provided"
    scripts: list[tuple[str, Script | None]] = [("init", s) for s in sample.init]
    scripts += [("start", sample.start), ("example", sample.example)]
    scripts += [("check", s) for s in sample.check or []]
    for role, script in scripts:
        if script is None:
            continue
        if script.language not in ("bash", "python"):
            return f"its {role} script is {script.language}, which needs a compiler the image lacks"
        for pattern, why in _NETWORK:
            if pattern.search(script.code):
                return f"its {role} script {why}, and episodes have no network"
    if sample.check is not None and None in sample.check and sample.example is None:
        return "its check list runs the example script, but it has none"
    return None
