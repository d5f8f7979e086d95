"""One self-contained HTML page of a comparison: the table, the elite maps, curves, transcripts.

Everything is inlined (images as base64 data URIs, no scripts, no external styles) so the file can
be mailed, attached to an issue or opened from a laptop with nothing else around it. Text from
models and environments is escaped: transcripts are untrusted.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.best td { font-weight: bold; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
details { margin: .4em 0; }
pre { white-space: pre-wrap; background: #f7f7f7; padding: .5em; font-size: 85%; }
.role { font-weight: bold; color: #555; }
.muted { color: #777; }
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _cell(value: float, interval: Sequence[float] | None) -> str:
    if interval is None:
        return f"<td>{value:.3f}</td>"
    lo, hi = interval
    return f"<td>{value:.3f} <span class='muted'>[{lo:.2f}, {hi:.2f}]</span></td>"


def table_html(
    rows: Sequence[Mapping[str, Any]], tasks: Sequence[str], after: Sequence[str] = ()
) -> str:
    """Rows of ``{"name", "scores": {task: q}, "average"}``; the best average is bold.

    A row's optional ``intervals`` ({task: [low, high]}) and ``average_interval`` (95%) are shown
    in brackets after each score. ``after``: score columns shown after the average and not part
    of it (the demo's language column).
    """
    best = round(max((r["average"] for r in rows), default=0.0), 9)
    head = "".join(f"<th>{html.escape(t)}</th>" for t in tasks)
    tail = "".join(f"<th>{html.escape(t)}</th>" for t in after)
    out = [f"<table><tr><th>model</th>{head}<th>average</th>{tail}</tr>"]
    for r in rows:
        cls = ' class="best"' if round(r["average"], 9) == best else ""
        intervals = r.get("intervals") or {}

        def cells(names: Sequence[str], r: Mapping[str, Any] = r, iv: Mapping = intervals) -> str:
            return "".join(
                _cell(r["scores"][t], iv.get(t)) if t in r["scores"] else "<td>-</td>"
                for t in names
            )

        avg = _cell(r["average"], r.get("average_interval"))
        out.append(
            f"<tr{cls}><td>{html.escape(r['name'])}</td>{cells(tasks)}{avg}{cells(after)}</tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def transcript_html(record: Mapping[str, Any]) -> str:
    """One episode or sample, collapsed: its id and score in the summary line."""
    title = f"{record.get('sample_id', '?')}: score {float(record.get('score', 0.0)):.2f}"
    body = []
    for m in record.get("messages") or []:
        body.append(
            f'<div><span class="role">{html.escape(str(m.get("role")))}</span>'
            f"<pre>{html.escape(str(m.get('content')))}</pre></div>"
        )
    if not body:
        shown = {k: v for k, v in record.items() if k != "messages"}
        body.append(f"<pre>{html.escape(json.dumps(shown, indent=1, default=str))}</pre>")
    return f"<details><summary>{html.escape(title)}</summary>{''.join(body)}</details>"


def write_report(
    out: Path,
    *,
    title: str,
    intro: str,
    tables: Sequence[tuple[Any, ...]],
    images: Sequence[tuple[str, Path]] = (),
    timings: Mapping[str, float] | None = None,
    peaks_gb: Mapping[str, float] | None = None,
    transcripts: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write the page; ``tables`` are (heading, rows, tasks) or (heading, rows, tasks, after)
    (see :func:`table_html`), ``images`` (caption, png); ``peaks_gb``: each stage's peak
    resident memory, a column of the timings table."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>",
    ]
    for heading, rows, tasks, *after in tables:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(table_html(rows, tasks, after[0] if after else ()))
    for note in notes:
        parts.append(f"<p class='muted'>{html.escape(note)}</p>")
    if images:
        parts.append("<h2>Archives and progress</h2>")
        for caption, path in images:
            if path.is_file():
                parts.append(f"<figure>{_img(path, caption)}<figcaption>")
                parts.append(f"{html.escape(caption)}</figcaption></figure>")
    if timings:
        peaks = peaks_gb or {}
        head = "<th>peak memory (GB)</th>" if peaks else ""
        parts.append(f"<h2>Stage timings</h2><table><tr><th>stage</th><th>seconds</th>{head}</tr>")
        for stage, seconds in timings.items():
            peak = (
                (f"<td>{peaks[stage]:.2f}</td>" if stage in peaks else "<td></td>") if peaks else ""
            )
            parts.append(f"<tr><td>{html.escape(stage)}</td><td>{seconds:.1f}</td>{peak}</tr>")
        total = sum(timings.values())
        most = f"<td>{max(peaks.values()):.2f}</td>" if peaks else ""
        parts.append(f"<tr><td>total</td><td>{total:.1f}</td>{most}</tr></table>")
    if transcripts:
        parts.append("<h2>Transcripts</h2>")
        for name, records in transcripts.items():
            parts.append(f"<h3>{html.escape(name)}</h3>")
            parts.extend(transcript_html(r) for r in records)
    parts.append("</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(out)
    return out
