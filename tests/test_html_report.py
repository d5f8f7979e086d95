"""The demo's HTML report: self-contained, escaped, with every section it was given."""

from __future__ import annotations

import base64
from pathlib import Path

from cycleqd.report.html import write_report

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def test_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    png = tmp_path / "map.png"
    png.write_bytes(PNG)
    rows = [
        {"name": "base", "scores": {"code": 0.1, "os": 0.2}, "average": 0.15},
        {"name": "cycleqd", "scores": {"code": 0.3, "os": 0.4}, "average": 0.35},
    ]
    hostile = {
        "sample_id": "s1",
        "score": 1.0,
        "messages": [{"role": "assistant", "content": "<script>alert(1)</script>"}],
    }
    out = write_report(
        tmp_path / "report.html",
        title="demo",
        intro="a & b",
        tables=[("Test splits", rows, ["code", "os"])],
        images=[("elite map code", png)],
        timings={"train": 12.5, "search": 30.0},
        transcripts={"os": [hostile]},
        notes=["measured on 2 cores"],
    )
    text = out.read_text()
    assert "data:image/png;base64," in text and 'src="http' not in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert '<tr class="best"><td>cycleqd</td><td>0.300</td><td>0.400</td><td>0.350</td>' in text
    assert "<td>total</td><td>42.5</td>" in text
    assert "a &amp; b" in text and "measured on 2 cores" in text
