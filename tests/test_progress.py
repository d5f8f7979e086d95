"""Progress without a terminal: plain lines with counts, elapsed time and ETA, and a heartbeat."""

from __future__ import annotations

import io
import time

from rich.console import Console

from cycleqd.progress import PlainProgress, progress_bar


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, markup=False, width=200), out


def test_a_terminal_gets_live_bars_and_a_log_gets_plain_lines() -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert not isinstance(progress_bar(terminal), PlainProgress)
    log, _ = plain_console()
    assert isinstance(progress_bar(log), PlainProgress)


def test_plain_lines_say_what_changes_and_beat_while_a_step_takes_long() -> None:
    console, out = plain_console()
    with PlainProgress(console=console, heartbeat=0.05) as bar:
        task = bar.add_task("train", total=None, info="")
        bar.update(task, completed=1, total=4, info="loss 1.000")  # same description: no line
        assert out.getvalue() == ""
        time.sleep(0.03)
        bar.update(task, completed=2, info="loss 0.500")
        time.sleep(0.3)  # one long step: the heartbeat reports it meanwhile
        beats = out.getvalue().splitlines()
        assert len(beats) >= 3
        assert all(line.startswith("train 2/4 loss 0.500 elapsed 0:00:0") for line in beats)
        assert "ETA 0:00:0" in beats[-1]
        bar.update(task, description="train (epoch 2)")  # a new description: one line now
        assert out.getvalue().splitlines()[-1].startswith("train (epoch 2) 2/4")
        bar.update(task, completed=4)
        last = out.getvalue().splitlines()[-1]
        assert last.startswith("train (epoch 2) 4/4") and last.endswith("done")
        said = len(out.getvalue().splitlines())
        time.sleep(0.2)  # a finished task beats no more
        assert len(out.getvalue().splitlines()) == said
    time.sleep(0.1)  # stopped: nothing after the context
    assert len(out.getvalue().splitlines()) == said
