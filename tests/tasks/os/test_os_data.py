"""Loading AgentBench OS files (the shared dev split and its quirks) and grading them for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cycleqd.errors import CycleQDError
from cycleqd.tasks.os.data import load_samples, parse_sample, unsupported_reason
from cycleqd.tasks.os.reference import check_samples


def test_dev_json_loads_with_inferred_scripts_folder(dev_json: Path) -> None:
    samples = load_samples(dev_json)
    assert len(samples) == 26 and samples[3].sample_id == "dev-00003"
    assert sum(s.match is not None for s in samples) == 5
    calc = samples[3]
    assert calc.check is not None and "calc" in calc.check[0].code  # check/0.sh, read from disk
    assert samples[10].init == [] and samples[10].image is None  # "create" is a list there
    assert samples[21].init[0].code.startswith("echo 123>/root/.tmp")  # bare-string init
    assert samples[13].example is not None and samples[13].example.code == "nproc"
    assert all(unsupported_reason(s) is None for s in samples)


def test_missing_paths_are_user_errors(tmp_path: Path, dev_json: Path) -> None:
    with pytest.raises(CycleQDError, match="not found"):
        load_samples(tmp_path / "nope.json")
    lonely = tmp_path / "data.json"
    lonely.write_text(json.dumps([json.loads(dev_json.read_text())[3]]))
    with pytest.raises(CycleQDError, match=r"data-00000.*'check/0.sh'.*no scripts folder"):
        load_samples(lonely)
    with pytest.raises(CycleQDError, match=r"data-00000.*'check/0.sh'.*missing does not exist"):
        load_samples(lonely, tmp_path / "missing")


def test_network_and_foreign_images_are_unsupported() -> None:
    def sample(**kw: object) -> object:
        item = {"description": "d", "evaluation": {"match": "x"}, **kw}
        return parse_sample(item, 0, "t-", None, "t")

    assert "apt" in (unsupported_reason(sample(create={"init": "apt-get install -y jq"})) or "")
    assert "pip" in (unsupported_reason(sample(start="pip3 install requests")) or "")
    assert "internet" in (unsupported_reason(sample(start="curl -s https://x.org/a")) or "")
    assert "image" in (unsupported_reason(sample(create={"image": "local-os/packages"})) or "")
    assert unsupported_reason(sample(create={"image": "local-os/default"})) is None


def test_every_dev_reference_passes_except_the_unparsable_du_size(
    dev_json: Path, rootfs: Path
) -> None:
    """All 26 dev samples through the real machine and grader (``cycleqd data check``).

    dev-00008 cannot pass anywhere: its checker ``size-match.py`` does ``int("4.0")`` on the
    example's own ``du -sh`` output, so AgentBench's reference fails the same way.
    """
    outcomes = list(check_samples(load_samples(dev_json), rootfs, workers=2))
    by_id = {o.sample_id: o for o in outcomes}
    assert by_id["dev-00008"].status == "failed" and "size-match" not in by_id["dev-00008"].detail
    assert "invalid literal for int()" in by_id["dev-00008"].detail
    others = [o for o in outcomes if o.sample_id != "dev-00008"]
    assert [o for o in others if o.status != "passed"] == []
