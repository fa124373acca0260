"""A live progress bar for a collection run, fed by `raydspy.pipeline.RunProgress` snapshots."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from raydspy.pipeline import RunProgress

__all__ = ["RunProgressBar"]


class RunProgressBar:
    """``with RunProgressBar(console) as bar: run_pipeline(..., on_start=bar.start, on_progress=bar.update)``.

    Shows rollouts done of those to do, rate, time left, errors, deferred teacher failures and the
    mean reward. Ray Data's own per-operator bars are turned off while it runs: one bar, not five.
    """

    def __init__(self, console: Console):
        self._progress = Progress(
            TextColumn("[bold]rollouts"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
            console=console, transient=False,
        )
        self._task = None
        self._saved_bars: bool | None = None

    def __enter__(self) -> "RunProgressBar":
        import ray.data

        context = ray.data.DataContext.get_current()
        self._saved_bars = context.enable_progress_bars
        context.enable_progress_bars = False
        return self

    def __exit__(self, *exc) -> None:
        import ray.data

        self._progress.stop()
        ray.data.DataContext.get_current().enable_progress_bars = self._saved_bars

    def start(self, progress: RunProgress) -> None:
        todo = progress.planned - progress.resumed
        if progress.resumed:
            self._progress.console.print(f"resuming: {progress.resumed} of {progress.planned} rollouts already "
                                         f"committed; {todo} to do")
        self._task = self._progress.add_task("collect", total=todo, rate="", status="")
        self._progress.start()

    def update(self, progress: RunProgress) -> None:
        rate = progress.finished / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
        status = [f"errors {progress.errors}"]
        if progress.deferred:
            status.append(f"[yellow]teacher failures {progress.deferred}[/]")
        if progress.mean_reward is not None:
            status.append(f"reward {progress.mean_reward:.3f}")
        self._progress.update(self._task, completed=progress.finished, rate=f"{rate:.2f}/s", status="  ".join(status))
