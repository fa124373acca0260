"""Where a command's output goes: raydspy's own lines on the terminal, the libraries' logs in a file.

A command shows its progress, short status lines, its summary and one ``logs:`` line. What Ray,
Ray Data, Ray Serve, vLLM, DSPy, LiteLLM and the rest write in this process goes to
``raydspy-<command>-<random>.log`` in Ray's session log folder, beside the logs of Ray's workers and
Serve's replicas (the teacher's vLLM logs: ``serve/``, ``worker-*``) and Ray Data's (``ray-data/``).
``-v/--verbose`` shows them on the terminal instead, as Python's and Ray's defaults do.

Why file descriptors and not only `logging`: Ray, Ray Data, DSPy, LiteLLM and vLLM give their
loggers handlers of their own that do not propagate (Ray Data installs its console handler when
``ray.data`` is first imported, often after the command has started); some handlers hold the
stream they were made with; Python warnings, tqdm bars, ``print`` and C++ code (gRPC, Ray's core
worker) write to stdout and stderr directly. So `route_logs` points descriptors 1 and 2 at the log
file while the command runs and gives raydspy's consoles duplicates of the original descriptors,
the terminal. rich's live displays must then leave ``sys.stdout`` and ``sys.stderr`` alone
(`raydspy.cli.progress.live_redirects`), or they would carry the libraries' output back to the
terminal. Serve's replicas and Ray's workers (vLLM runs in one) are other processes: a local Ray
started with ``log_to_driver=False`` (`raydspy.cli.common.init_ray`) leaves their logs in the
session's files.

What still reaches the terminal is what a user must act on (`Actionable`). Messages Ray pushes to
the driver (``(raylet) ...``: too many workers starting at once, a task retried) are printed to
stdout by Ray and stay in the file: they are about Ray's internals, and a failure that stops a run
reaches the user as the command's own error.

Nothing here runs on import: `raydspy.cli.main.main` enters `route_logs` once, and
`raydspy.cli.common.init_ray` calls `ray_started`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.text import Text

__all__ = ["Actionable", "TerminalHandler", "LogRoute", "route_logs", "ray_started"]

#: Library warnings a user must act on: ``(logger name prefix, words of the message)``. Every other
#: library warning goes to the log file: Ray's and Ray Data's are about their own tuning (an
#: operator "running but has no outputs" is what a slow LM looks like), Serve's about its
#: internals, DSPy's and LiteLLM's about calls whose failures a rollout records in its ``error``.
ACT_ON: tuple[tuple[str, str], ...] = (
    # Ray Data cannot schedule any task of an operator with the cluster's resources, so the run
    # would hang: the user gives Ray more CPUs (--num-cpus) or asks for fewer --actors.
    ("ray.data", "may hang forever"),
)

#: Loggers whose errors stay in the log file: they announce an exception the command then raises.
_FILE_ONLY_ERRORS = ("ray.data.exceptions",)

#: Where the libraries' `TerminalHandler` listens: the root logger, and the loggers that keep their
#: own handlers and do not propagate to it: Ray's ("ray", with ``ray.serve`` below it) and Ray
#: Data's. raydspy's own records have a handler on the "raydspy" logger: Ray Serve LLM empties the
#: root logger's handlers when it is imported (``ray.llm._internal.serve.observability``: the demo
#: and ``evaluate`` import it to deploy), and raydspy's warnings must survive that.
_RAY_LOGGERS = ("ray", "ray.data")

_active: LogRoute | None = None


class Actionable(logging.Filter):
    """Passes the records a user must see on the terminal:

    - raydspy's own warnings and errors (loggers ``raydspy.*``): an interrupted run, skipped
      input rows, a predictor with its own LM, a commit still in flight;
    - errors of any library (rare in the driver, and they come before a failure the user has to
      understand), except records their library marks ``hide`` (Ray Data's full stack traces,
      which its own console handler hides too) and Ray Data's announcement of a failed execution
      (`_FILE_ONLY_ERRORS`: the command's own error line says it);
    - the library warnings listed in `ACT_ON`.

    Python warnings (``py.warnings``) stay in the file: raydspy reports through `logging`, and the
    warnings libraries raise here are deprecations meant for their callers' code, not for users.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "hide", False) or record.levelno < logging.WARNING:
            return False
        if record.name == "raydspy" or record.name.startswith("raydspy."):
            return True
        if record.name == "py.warnings":
            return False
        if record.levelno >= logging.ERROR:
            # Ray Data logs a failed execution before raising it; the command's own one-line
            # error (`raydspy.cli.failures`) reports the failure, with the cause.
            return not record.name.startswith(_FILE_ONLY_ERRORS)
        message = record.getMessage()
        return any(record.name.startswith(prefix) and words in message for prefix, words in ACT_ON)


class TerminalHandler(logging.Handler):
    """Prints a record as one line through a rich console (``warning: ...`` in yellow, ``error: ...``
    in red), so it lands above a live progress bar instead of breaking it. A traceback goes to the
    log file only: the terminal gets the exception's type and message."""

    def __init__(self, console: Console, level: int = logging.WARNING):
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            style = "red" if record.levelno >= logging.ERROR else "yellow"
            self.console.print(
                Text.assemble((f"{record.levelname.lower()}: ", style), text), highlight=False, soft_wrap=True
            )
        except Exception:
            self.handleError(record)


class LogRoute:
    """One command's routing of output; made by `route_logs`.

    Attributes:
        verbose: libraries log to the terminal (nothing is redirected).
        log_file: raydspy's log file (None when verbose): this process's stdout, stderr and log
            records at INFO and above. It starts in the temp folder and moves into Ray's session
            log folder once Ray is up (`ray_started`).
        folder: the folder the ``logs:`` line names (None until known).
    """

    def __init__(self, command: str, *, verbose: bool, console: Console, consoles: Sequence[Console] = ()):
        self.command, self.verbose, self.console = command, verbose, console
        self._consoles = [console, *consoles]
        self.log_file: Path | None = None
        self.folder: Path | None = None
        self._announced = False
        self._libraries_handler: TerminalHandler | None = None
        self._undo = contextlib.ExitStack()

    # -- set up and undo ------------------------------------------------------------------------

    def start(self) -> None:
        """Quiet: descriptors 1 and 2 to the log file, the consoles kept on the terminal, log
        records to the file and the actionable ones to the terminal. Verbose: log at INFO to stderr."""
        if self.verbose:
            # As before this module: every library's INFO on the terminal, in their own formats.
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
            return
        fd, name = tempfile.mkstemp(prefix=f"raydspy-{self.command}-", suffix=".log")
        os.close(fd)
        self.log_file = Path(name)
        log_stream = open(self.log_file, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
        self._undo.callback(log_stream.close)
        for console in self._consoles:
            self._keep_on_terminal(console)
        for fd in (1, 2):
            self._redirect(fd, log_stream)

        file_handler = logging.StreamHandler(log_stream)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        raydspy_handler, libraries_handler = TerminalHandler(self.console), TerminalHandler(self.console)
        for handler in (raydspy_handler, libraries_handler):
            handler.addFilter(Actionable())
        libraries_handler.addFilter(_not_raydspy)  # raydspy's records have their own handler
        root = logging.getLogger()
        self._add_handlers(root, file_handler, libraries_handler)
        self._add_handlers(logging.getLogger("raydspy"), raydspy_handler)
        previous_level = root.level
        root.setLevel(logging.INFO)
        self._undo.callback(root.setLevel, previous_level)
        logging.captureWarnings(True)
        self._undo.callback(logging.captureWarnings, False)
        self._libraries_handler = libraries_handler

    def stop(self) -> None:
        """Undo `start` (descriptors, consoles, handlers); say where the log file is if it was not
        said yet and holds something; delete it if it holds nothing."""
        try:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
        finally:
            self._undo.close()
        if self.log_file is None or not self.log_file.exists():
            return
        if self.log_file.stat().st_size == 0 and self.folder is None:
            self.log_file.unlink()
        elif not self._announced:
            self.console.print(f"logs: {self.log_file}", highlight=False, soft_wrap=True)

    def _keep_on_terminal(self, console: Console) -> None:
        """Bind ``console`` to a duplicate of the descriptor it writes to now, so that it keeps
        writing to the terminal once descriptors 1 and 2 point at the log file."""
        stream = console.file
        fd = _fd_of(stream)
        if fd not in (1, 2):
            return  # a console of its own (a file, pytest's capture): unaffected by the redirect
        terminal = os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8")
        console.file = terminal
        self._undo.callback(terminal.close)
        self._undo.callback(setattr, console, "file", None)  # back to sys.stdout / sys.stderr

    def _redirect(self, fd: int, log_stream: IO[str]) -> None:
        stream = sys.stdout if fd == 1 else sys.stderr
        with contextlib.suppress(Exception):
            stream.flush()
        saved = os.dup(fd)
        os.dup2(log_stream.fileno(), fd)

        def restore() -> None:
            with contextlib.suppress(Exception):
                stream.flush()
            os.dup2(saved, fd)
            os.close(saved)

        self._undo.callback(restore)

    def _add_handlers(self, logger: logging.Logger, *handlers: logging.Handler) -> None:
        for handler in handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
                self._undo.callback(logger.removeHandler, handler)

    def where(self) -> Path | None:
        """Where the logs are, for a message that names them (then `stop` does not say it again):
        Ray's session log folder once Ray is up, else this command's log file."""
        self._announced = True
        return self.folder or self.log_file

    # -- once Ray is up ---------------------------------------------------------------------------

    def ray_started(self) -> None:
        """Move the log file into Ray's session log folder, let Ray's and Ray Data's actionable
        warnings through, and print the ``logs:`` line (once)."""
        import ray.data

        session_logs = _session_logs()
        if not self.verbose:
            # Ray's loggers do not propagate to the root logger: listen on them too (imported now,
            # since importing ray.data resets its logger's handlers). Their own handlers write to
            # stderr, which is the log file.
            for name in _RAY_LOGGERS:
                if self._libraries_handler is not None:
                    self._add_handlers(logging.getLogger(name), self._libraries_handler)
            # Ray Data's progress bars would only fill the log file with redraws; raydspy's bars
            # (`raydspy.cli.progress`) show the progress.
            context = ray.data.DataContext.get_current()
            self._undo.callback(setattr, context, "enable_progress_bars", context.enable_progress_bars)
            context.enable_progress_bars = False
            if session_logs is not None and self.log_file is not None:
                target = session_logs / self.log_file.name  # unique: two commands may share a session
                with contextlib.suppress(OSError):  # another file system: the file stays where it is
                    self.log_file.rename(target)
                    self.log_file = target
        self.folder = session_logs or (self.log_file.parent if self.log_file else None)
        if self._announced or self.folder is None:
            return
        self._announced = True
        if self.verbose:
            self.console.print(
                f"logs: {self.folder} (Ray's, Serve's and the workers')", highlight=False, soft_wrap=True
            )
        elif self.log_file is not None and self.log_file.parent == self.folder:
            self.console.print(
                f"logs: {self.folder} ({self.log_file.name}: this command; -v prints them here)",
                highlight=False,
                soft_wrap=True,
            )
        else:
            self.console.print(
                f"logs: {self.folder} (this command: {self.log_file}; -v prints them here)",
                highlight=False,
                soft_wrap=True,
            )


def _not_raydspy(record: logging.LogRecord) -> bool:
    return not (record.name == "raydspy" or record.name.startswith("raydspy."))


def _fd_of(stream: IO[str]) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _session_logs() -> Path | None:
    """Ray's session log folder on this node (``<temp dir>/<session>/logs``), None when Ray does not
    tell (a Ray Client connection)."""
    import ray

    try:
        context = ray.get_runtime_context()
        folder = Path(context.get_temp_dir()) / context.get_session_name() / "logs"
    except Exception:  # noqa: BLE001 - Ray Client and older Rays answer neither; the file stays put
        return None
    return folder if folder.is_dir() else None


@contextlib.contextmanager
def route_logs(
    command: str, *, verbose: bool, console: Console, consoles: Sequence[Console] = ()
) -> Iterator[LogRoute]:
    """Route this process's output for one command (`raydspy.cli.main.main` enters it once).

    Args:
        command: the command's name, in the log file's name (``raydspy-collect-<random>.log``).
        verbose: leave the libraries' logs on the terminal (``-v``): nothing is redirected.
        console: where raydspy's messages and `Actionable` records go (stderr's console).
        consoles: other consoles that must keep writing to the terminal (stdout's, for summaries).

    Yields:
        The `LogRoute`; `ray_started` reaches it while it is active.

    Example:
        >>> with route_logs("collect", verbose=False, console=Console(stderr=True)) as route:  # doctest: +SKIP
        ...     init_ray(None, 8)  # prints "logs: /tmp/ray/session_.../logs (raydspy-collect-k2j4.log: ...)"
    """
    global _active
    route = LogRoute(command, verbose=verbose, console=console, consoles=consoles)
    route.start()
    previous, _active = _active, route
    try:
        yield route
    finally:
        _active = previous
        route.stop()


def ray_started() -> None:
    """Called once Ray is up: the active `LogRoute`, if any, learns Ray's log folder and prints the
    ``logs:`` line."""
    if _active is not None:
        _active.ray_started()
