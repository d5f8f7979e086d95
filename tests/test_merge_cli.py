"""``cycleqd merge`` from the command line: a task-arithmetic baseline equals its formula."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_merge_command_task_arithmetic(family: dict, tmp_path: Path) -> None:
    e0, e1 = family["experts"]["e0"], family["experts"]["e1"]
    out = tmp_path / "ta"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "cycleqd.cli",
            "merge",
            "--method",
            "task_arithmetic",
            "--base",
            str(family["base"]),
            "--experts",
            str(e0),
            "--experts",
            str(e1),
            "--param",
            "weight=0.5",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    base, a, b, merged = (_weights(p) for p in (family["base"], e0, e1, out))
    name = "model.layers.0.mlp.down_proj.weight"
    want = base[name] + 0.5 * (a[name] - base[name]) + 0.5 * (b[name] - base[name])
    torch.testing.assert_close(merged[name].float(), want, rtol=1e-4, atol=1e-5)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "cycleqd.cli",
            "merge",
            "--method",
            "nosuch",
            "--experts",
            str(e0),
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and "nosuch" in bad.stderr
