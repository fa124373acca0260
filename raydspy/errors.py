"""raydspy's exceptions: one small hierarchy, each carrying what went wrong and where.

Every error raised before a run starts (bad input, unreachable teacher, unreadable URI) is a
`RaydspyError`, so callers (the CLI, the job entry points, the HTTP service) can turn it into a
one-line message without a traceback. Failures *inside* one rollout are never raised: they are
recorded in that rollout's row (see `raydspy.core.rollouts`).
"""

from __future__ import annotations

__all__ = [
    "RaydspyError",
    "ConfigError",
    "InputError",
    "StorageError",
    "TeacherUnreachableError",
    "NotAllowedError",
    "ClusterUnreachableError",
]


class RaydspyError(Exception):
    """Base class of every error raydspy raises on purpose."""


class ConfigError(RaydspyError, ValueError):
    """A setting, program spec or reward spec is invalid (says which, and how to fix it)."""


class InputError(RaydspyError, ValueError):
    """The examples cannot feed the program: missing fields, no rows, unreadable records.

    Attributes:
        uri: where the examples came from ("<memory>" for in-process lists).
        missing: the program's input fields absent from the examples, if that is the problem.
    """

    def __init__(self, message: str, *, uri: str = "<memory>", missing: list[str] | None = None):
        super().__init__(message)
        self.uri = uri
        self.missing = list(missing or [])


class StorageError(RaydspyError, OSError):
    """A URI cannot be read or written (bad scheme, missing bucket or folder, no credentials)."""


class TeacherUnreachableError(RaydspyError, ConnectionError):
    """The teacher endpoint does not answer, or does not serve the model asked for."""


class NotAllowedError(RaydspyError, PermissionError):
    """A spec, URI or teacher lies outside what the operator allowed (the HTTP service's
    allow-lists and prefixes; HTTP 403). Says what was refused and what is allowed."""


class ClusterUnreachableError(RaydspyError, ConnectionError):
    """The Ray cluster a command was pointed at (``--ray-address``, ``$RAY_ADDRESS``, a local
    ``ray start``) does not answer. Says the address, where it came from, and what to do."""
