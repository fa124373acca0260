"""One line for a command that failed: what failed, where the logs are, and whether the same command
resumes. The traceback goes to the command's log file (to the terminal with ``-v``).

A failure deep in Ray arrives wrapped: a `ray.exceptions.RayTaskError` carrying the remote
traceback in its text, inside Ray Data's ``UserCodeException``, inside the error of the dataset's
execution. The line names the innermost cause (`root_cause`), which is the one a person can act on.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["root_cause", "one_line", "RESUME"]

#: What running the same command again does, per command.
RESUME = {
    "collect": "the rollouts committed so far are kept: run the same command again to do only the rest",
    "demo": "the rollouts committed so far are kept: run the same command again to do only the rest",
    "export": "run the same command again: it writes the export anew",
    "train": "run the same command again to train from the start",
    "evaluate": "run the same command again",
}

#: Ray's errors for lost processes and nodes, which no code of the user's raised.
_LOST = frozenset(
    {
        "ActorDiedError",
        "ActorUnavailableError",
        "NodeDiedError",
        "ObjectLostError",
        "OwnerDiedError",
        "WorkerCrashedError",
        "LocalRayletDiedError",
        "RaySystemError",
    }
)

_MAX_CHARS = 400


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of ``exc``: following ``__cause__``, and the ``cause`` that a
    `ray.exceptions.RayTaskError` keeps of the exception its task raised."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None)
        if not isinstance(inner, BaseException):
            inner = exc.__cause__
        if inner is None:
            return exc
        exc = inner
    return exc


def one_line(exc: BaseException, command: str, logs: Path | None) -> str:
    """``"<command> failed: <Cause>: <first line of its message> (logs: <folder>; -v shows the
    traceback). <what the same command again does>."``"""
    cause = root_cause(exc)
    name = type(cause).__name__
    message = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
    if len(message) > _MAX_CHARS:
        message = message[: _MAX_CHARS - 1] + "…"
    what = f"{name}: {message}" if message else name
    if name in _LOST:
        what = f"a Ray worker or node was lost ({what})"
    where = f"logs: {logs}; " if logs is not None else ""
    resume = RESUME.get(command, "run the same command again")
    return f"{command} failed: {what} ({where}-v shows the traceback). {resume[0].upper()}{resume[1:]}."
