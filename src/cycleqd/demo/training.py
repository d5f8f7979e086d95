"""Expert training for the demo: the preset's hyperparameters, cached by the inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.progress import Progress

from cycleqd.demo.presets import Preset


def train_cached(
    base: Path,
    files: Sequence[Path],
    out: Path,
    *,
    preset: Preset,
    say: Callable[[str], None],
    anchors: Sequence[Path] = (),
    bar: Progress | None = None,
) -> Path:
    """Train (or reuse) a LoRA expert of ``base`` on the gold trajectories in ``files``.

    ``train_expert`` keys the expert by the base's and the data's content and the
    hyperparameters, so a second demo run with the same inputs skips training. ``anchors`` (the
    other skills' files) hold the expert to the base there when the preset anchors experts.
    Training runs in a child process (:mod:`cycleqd.isolation`): what it leaves behind would
    otherwise stay in the demo's process through the search and the test evaluation.
    """
    from cycleqd.isolation import run_in_child
    from cycleqd.train import cached_expert, train_expert

    arguments: dict[str, Any] = dict(
        epochs=preset.train_epochs,
        lr=preset.train_lr,
        batch_size=preset.train_batch_size,
        anchor_batch=preset.train_anchor_batch,
        anchor_weight=preset.anchor_weight if anchors else 0.0,  # all-data: nothing to anchor
        anchor_specs=[str(f) for f in anchors],
        max_len=preset.train_max_len,
        max_batch_tokens=preset.train_max_batch_tokens,
        n_train=None,
        seed=preset.seed,
        save=preset.expert_form,
    )
    specs = [str(f) for f in files]
    report = cached_expert(base, specs, out, **arguments) or run_in_child(
        train_expert, base, specs, out, bar=bar, **arguments
    )
    if report.skipped:
        say(f"  {out.name}: cached ({out})")
    else:
        loss = report.final_loss
        say(
            f"  {out.name}: {report.n_train} conversations, {report.steps} steps, "
            f"final loss {loss:.3f}, {report.seconds:.0f}s"
            + (f", {report.dropped} gold replies dropped" if report.dropped else "")
        )
    return out
