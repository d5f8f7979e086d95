"""The demo's skills: which procedural suite, task type and file format each one uses."""

from __future__ import annotations

# skill -> (suite, task type, file suffix of the suite's data format)
SKILLS: dict[str, tuple[str, str, str]] = {
    "code": ("code-mini", "code", ".jsonl"),
    "os": ("os-mini", "agentbench-os", ".json"),
    "db": ("db-mini", "dbbench", ".jsonl"),
}
LANGUAGE = "language"  # the table's column of general language ability (MMLU)
