"""Progress of long work: a live bar on a terminal, plain periodic lines in logs.

rich draws a `Progress` bar only on a terminal; elsewhere (`ray job logs`, CI, a pipe into a file)
it prints nothing until the end, so a run of an hour would look hung. `ProgressDisplay` prints a
line at most every ``every_s`` seconds there instead, with the same numbers.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.spinner import Spinner

if TYPE_CHECKING:
    from raydspy.pipeline import RunProgress

__all__ = ["ProgressDisplay", "RunProgressBar", "TrainProgressBar", "live_redirects", "status"]


def live_redirects(console: Console) -> bool:
    """Whether a live display on ``console`` may route ``sys.stdout`` and ``sys.stderr`` through it
    (rich's default, which keeps other output above the bar): only when the console writes to them.
    A console bound to the terminal while they point at the log file (`raydspy.cli.logs`) must not
    carry what the libraries write there back to the terminal."""
    return console.file in (sys.stdout, sys.stderr)


def status(console: Console, text: str) -> Live:
    """``console.status(text)`` (a spinner while ``with`` runs), under `live_redirects`' rule."""
    redirect = live_redirects(console)
    return Live(
        Spinner("dots", text=text, style="status.spinner"),
        console=console,
        transient=True,
        refresh_per_second=12.5,
        redirect_stdout=redirect,
        redirect_stderr=redirect,
    )


class ProgressDisplay:
    """One task's progress: ``start(total)``, then ``update(completed, ...)``, then ``stop()``.

    On a terminal (``console.is_terminal``) a rich bar: label, bar, done/total, status, elapsed,
    time left. Elsewhere one line per ``every_s`` seconds of updates (and a last one at ``stop``):
    ``"rollouts 120/800  1.83/s  errors 3  elapsed 0:01:05  left 0:06:10"``; time left is
    elapsed × remaining / done, as rich estimates it from the recent rate.
    """

    def __init__(
        self, console: Console, label: str, *, every_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ):
        self.console, self.label, self.every_s, self._clock = console, label, every_s, clock
        self._live = console.is_terminal
        redirect = live_redirects(console)
        self._progress = (
            Progress(
                TextColumn(f"[bold]{label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                redirect_stdout=redirect,
                redirect_stderr=redirect,
            )
            if self._live
            else None
        )
        self._task = None
        self._started = self._clock()
        self._state: tuple[int, int | None, str] = (0, None, "")
        self._printed: tuple[int, int | None, str] | None = None
        self._last_line = -math.inf

    def start(self, total: int | None = None, status: str = "") -> None:
        """Show the task (``total`` None: unknown yet) and start its clock."""
        self._started = self._clock()
        self._state = (0, total, status)
        if self._progress is not None:
            self._task = self._progress.add_task(self.label, total=total, status=status)
            self._progress.start()
        else:
            self._line()

    def update(self, completed: int, total: int | None = None, status: str = "") -> None:
        """``completed`` of ``total`` (None: keep the last total) done; ``status`` is rich markup."""
        total = total if total is not None else self._state[1]
        self._state = (completed, total, status)
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, total=total, status=status)
        elif self._clock() - self._last_line >= self.every_s:
            self._line()

    def stop(self) -> None:
        """Stop the bar, or print the last line if it changed since the previous one."""
        if self._progress is not None:
            self._progress.stop()
        elif self._state != self._printed:
            self._line()

    def _line(self) -> None:
        completed, total, status = self._state
        elapsed = self._clock() - self._started
        parts = [f"[bold]{self.label}[/] {completed}/{total if total is not None else '?'}"]
        if status:
            parts.append(status)
        parts.append(f"elapsed {_clock_time(elapsed)}")
        if total and completed:
            parts.append(f"left {_clock_time(elapsed * (total - completed) / completed)}")
        self.console.print("  ".join(parts), highlight=False)
        self._printed, self._last_line = self._state, self._clock()


def _clock_time(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class RunProgressBar:
    """``with RunProgressBar(console) as bar: run_pipeline(..., on_start=bar.start, on_progress=bar.update)``.

    Shows rollouts done of those to do, rate, time left, errors, deferred teacher failures and the
    mean reward (a bar on a terminal, a line every 30 s in logs: `ProgressDisplay`). Ray Data's own
    per-operator bars are turned off while it runs: one bar, not five.
    """

    def __init__(self, console: Console, *, every_s: float = 30.0):
        self._display = ProgressDisplay(console, "rollouts", every_s=every_s)
        self._saved_bars: bool | None = None

    def __enter__(self) -> RunProgressBar:
        import ray.data

        # Before run_pipeline reads the examples: the dataset copies the current context then.
        context = ray.data.DataContext.get_current()
        self._saved_bars = context.enable_progress_bars
        context.enable_progress_bars = False
        return self

    def __exit__(self, *exc) -> None:
        import ray.data

        self._display.stop()
        ray.data.DataContext.get_current().enable_progress_bars = self._saved_bars

    def start(self, progress: RunProgress) -> None:
        todo = progress.planned - progress.resumed
        if progress.resumed:
            self._display.console.print(
                f"resuming: {progress.resumed} of {progress.planned} rollouts already committed; {todo} to do"
            )
        self._display.start(todo)

    def update(self, progress: RunProgress) -> None:
        rate = progress.finished / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
        status = [f"{rate:.2f}/s", f"errors {progress.errors}"]
        if progress.deferred:
            status.append(f"[yellow]teacher failures {progress.deferred}[/]")
        if progress.mean_reward is not None:
            status.append(f"reward {progress.mean_reward:.3f}")
        self._display.update(progress.finished, status="  ".join(status))


class TrainProgressBar:
    """Rank 0's progress: steps done of all, loss, elapsed and time left (a bar on a terminal, a
    line every 30 s in logs: `raydspy.cli.progress.ProgressDisplay`). Steps appear once the first one
    ends (model loading and dataset preparation come before)."""

    def __init__(self, console, method: str, *, every_s: float = 30.0):
        self._display = ProgressDisplay(console, f"{method} steps", every_s=every_s)

    def __enter__(self) -> TrainProgressBar:
        self._display.start(status="loading the model and the data")
        return self

    def __exit__(self, *exc) -> None:
        self._display.stop()

    def update(self, snapshot: dict) -> None:
        status = []
        for key, fmt in (
            ("loss", "loss {:.3f}"),
            ("reward", "reward {:.3f}"),
            ("mean_token_accuracy", "token acc {:.2f}"),
        ):
            if key in snapshot:
                status.append(fmt.format(snapshot[key]))
        self._display.update(snapshot["step"], total=snapshot.get("max_steps") or None, status="  ".join(status))
