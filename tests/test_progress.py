"""Progress displays: a bar on a terminal, periodic plain lines in logs (`ray job logs`, CI). No Ray."""

from __future__ import annotations

import io

from rich.console import Console

from raydspy.cli.progress import ProgressDisplay, RunProgressBar, TrainProgressBar
from raydspy.core.stats import RolloutStats
from raydspy.pipeline import RunProgress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _log_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=200), out


def test_off_a_terminal_a_line_every_interval_and_a_last_one():
    console, out = _log_console()
    clock = Clock()
    display = ProgressDisplay(console, "rollouts", every_s=30, clock=clock)
    display.start(10)
    clock.now += 5
    display.update(1, status="errors 0")  # within 30 s of the first line: nothing
    clock.now += 30
    display.update(4, status="errors 1")
    clock.now += 2
    display.update(10, status="errors 1")
    display.stop()
    lines = out.getvalue().splitlines()
    assert lines == [
        "rollouts 0/10  elapsed 0:00:00",
        "rollouts 4/10  errors 1  elapsed 0:00:35  left 0:00:52",  # 35 s x 6 / 4
        "rollouts 10/10  errors 1  elapsed 0:00:37  left 0:00:00",
    ]
    display.stop()  # nothing new: no repeated line
    assert len(out.getvalue().splitlines()) == 3


def test_on_a_terminal_a_bar_and_no_lines():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    display = ProgressDisplay(console, "rollouts", every_s=0)
    display.start(4)
    display.update(4, status="errors 0")
    display.stop()
    assert "rollouts" in out.getvalue() and "4/4" in out.getvalue()
    assert "elapsed" not in out.getvalue()  # the bar's own columns, not the log line


def test_run_and_train_progress_print_their_numbers_in_logs():
    console, out = _log_console()
    with RunProgressBar(console, every_s=0) as bar:
        progress = RunProgress(planned=8, resumed=2)
        bar.start(progress)
        stats = RolloutStats(rows=3, errors_by_type={"ValueError": 1}, reward_sum=1.5, reward_count=3)
        progress.add({"file": "part-0.parquet", "stats": stats.to_json()})
        bar.update(progress)
    with TrainProgressBar(console, "sft", every_s=0) as train:
        train.update({"step": 2, "max_steps": 4, "loss": 1.5})
    text = out.getvalue()
    assert "resuming: 2 of 8 rollouts already committed; 6 to do" in text
    assert "rollouts 3/6  " in text and "errors 1  reward 0.500" in text
    assert "sft steps 0/?  loading the model and the data" in text
    assert "sft steps 2/4  loss 1.500" in text
