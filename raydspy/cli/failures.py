"""One line for a command that failed: what failed, where the logs are, and whether the same command
resumes. The traceback goes to the command's log file (to the terminal with ``-v``).

A failure deep in Ray arrives wrapped: a `ray.exceptions.RayTaskError` carrying the remote
traceback in its text, inside Ray Data's ``UserCodeException``, inside the error of the dataset's
execution. The line names the innermost cause (`root_cause`), which is the one a person can act on.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["root_cause", "one_line", "RESUME"]

#: What running the same command again does, per command.
_KEPT = "the rollouts committed so far are kept: run the same command again to do only the rest"
RESUME = {
    "collect": _KEPT,
    "demo": _KEPT,
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
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: A traceback's "module.Type: message" line (the exception it ends with).
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b: .*$", re.MULTILINE)


def _cut(message: str) -> str:
    return message if len(message) <= _MAX_CHARS else message[: _MAX_CHARS - 1] + "…"


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of ``exc``: following ``__cause__``, and the ``cause`` that a
    `ray.exceptions.RayTaskError` keeps of the exception its task raised, down to the last that is
    not a marker (`_is_marker`)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None)
        if not isinstance(inner, BaseException):
            inner = exc.__cause__
        if inner is None or _is_marker(inner):
            return exc
        exc = inner
    return exc


def _is_marker(exc: BaseException) -> bool:
    """Ray Data's ``SystemException``: raised *from* (as the ``__cause__`` of) an error of its
    own or Ray's code, to mark it; it carries no message, and the error it marks is the cause."""
    return type(exc).__name__ == "SystemException" and type(exc).__module__.startswith("ray.data")


def one_line(exc: BaseException, command: str, logs: Path | None) -> str:
    """``"<command> failed: <Cause>: <first line of its message> (logs: <folder>; -v shows the
    traceback). <what the same command again does>."``"""
    cause = root_cause(exc)
    name = type(cause).__name__
    text = _ANSI.sub("", str(cause))
    message = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if getattr(cause, "actor_init_failed", False):
        # Ray keeps only the text of the error an actor's __init__ raised: its traceback's last
        # "Type: message" line is that error.
        raised = [m.group(0) for m in _RAISED.finditer(text)]
        what = "an actor could not start: " + _cut(raised[-1] if raised else message)
    elif name in _LOST:
        what = f"a Ray worker or node was lost ({name}: {_cut(message)})"
    else:
        what = f"{name}: {_cut(message)}" if message else name
    where = f"logs: {logs}; " if logs is not None else ""
    resume = RESUME.get(command, "run the same command again")
    return f"{command} failed: {what} ({where}-v shows the traceback). {resume[0].upper()}{resume[1:]}."
