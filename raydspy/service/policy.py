"""What a submitted run may touch: programs and rewards from allow-listed modules only, input and
output URIs under configured prefixes, teachers under configured base URLs.

`RunPolicy` holds the operator's allow-lists. The replica applies it to a submission (403 when a
request leaves it) and records it with the run; the run's worker applies it again when it starts
and resolves program and rewards under it (`raydspy.core.specs`), so a worker never runs what the
replica would refuse.

URIs are compared after normalisation, so ``/data/in/../../etc`` or a symlink out of a prefix
does not pass: local paths are made absolute and resolved (``os.path.realpath``); object-store
URIs keep their scheme and bucket and have ``.``/``..`` segments folded. Object-store URIs with a
query string are refused (``?endpoint_override=`` would point the run at another server). That
check is made at submission and at the worker's start; between them, and below the top folder,
local paths are held by the run's storage (`RunPolicy.storage`): every file the run opens is
opened inside the local prefixes, through no symbolic link (`raydspy.core.confined`).
"""

from __future__ import annotations

import os
import posixpath
import stat
import urllib.parse
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from raydspy.core.specs import in_modules
from raydspy.core.storage import StorageOptions
from raydspy.errors import ConfigError, NotAllowedError

__all__ = [
    "PolicyError",
    "RunPolicy",
    "check_module",
    "check_uri",
    "check_teacher",
    "check_prefix_owner",
    "normalize_uri",
]


class PolicyError(NotAllowedError):
    """A request asks for something the service's settings do not allow (HTTP 403)."""


def check_module(spec: str, allowed: Sequence[str], what: str) -> None:
    """Allow ``MODULE:ATTR`` only when MODULE is one of ``allowed`` or inside one of them (the
    first, cheap look; `raydspy.core.specs.load_object` checks the whole path).

    Raises:
        PolicyError: the module is not allow-listed.
    """
    module = spec.partition(":")[0].strip()
    if not in_modules(module, allowed):
        raise PolicyError(f"{what} {spec!r}: module {module!r} is not allowed; allowed modules: {list(allowed)}")


def _is_local(uri: str) -> bool:
    return urllib.parse.urlparse(uri).scheme.lower() in ("", "file")


def _local_path(uri: str) -> str:
    parsed = urllib.parse.urlparse(uri)
    return os.path.abspath(os.path.expanduser(parsed.path if parsed.scheme.lower() == "file" else uri))


def _check_names(uri: str, what: str) -> None:
    """Local file names hold at most ``NAME_MAX`` (255) bytes; the request's pattern counts characters."""
    if _is_local(uri) and any(len(part.encode()) > 255 for part in _local_path(uri).split("/")):
        raise ConfigError(f"{what} {uri!r} has a path part longer than 255 bytes, more than a file name may hold")


def normalize_uri(uri: str) -> str:
    """``uri`` in a canonical form for prefix checks (see the module docstring).

    Raises:
        PolicyError: an unsupported scheme, or an object-store URI with a query or no bucket.
    """
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file"):
        return os.path.realpath(_local_path(uri))
    if scheme in ("s3", "gs", "gcs"):
        if parsed.query or parsed.fragment or parsed.params:
            raise PolicyError(f"{uri!r}: object-store URIs may not carry a query string")
        if not parsed.netloc:
            raise PolicyError(f"{uri!r}: no bucket")
        path = posixpath.normpath("/" + parsed.path.lstrip("/")) if parsed.path.strip("/") else ""
        return f"{'gs' if scheme == 'gcs' else scheme}://{parsed.netloc}{path if path != '/' else ''}"
    raise PolicyError(f"{uri!r}: unsupported scheme {scheme!r} (use a local path, s3:// or gs://)")


def _under(uri: str, prefix: str) -> bool:
    return uri == prefix or uri.startswith(prefix.rstrip("/") + "/")


def check_uri(uri: str, prefixes: Sequence[str], what: str) -> str:
    """Allow ``uri`` only under one of ``prefixes``.

    Returns:
        The URI as given (the run uses it as the user wrote it).

    Raises:
        PolicyError: not under any prefix, or not a supported URI.
    """
    normalized = normalize_uri(uri)
    if not any(_under(normalized, normalize_uri(p)) for p in prefixes):
        raise PolicyError(f"{what} {uri!r} is not under an allowed prefix; allowed: {list(prefixes)}")
    return uri


def _teacher_under(url: str, prefix: str) -> bool:
    # A prefix ending in "/" or ":" is open-ended ("http://10.0.0.5:" allows any port there);
    # otherwise it must match whole path segments, so "http://host" never allows "http://host.evil".
    if prefix.endswith((":", "/")) and url.startswith(prefix):
        return True
    return url == prefix.rstrip("/") or url.startswith(prefix.rstrip("/") + "/")


def check_teacher(base_url: str, prefixes: Sequence[str]) -> None:
    """Allow a teacher base URL only under one of ``prefixes`` (the service's only outbound calls),
    and only in a plain form: ``http(s)://host[:port]/path``, no credentials, query or fragment,
    no whitespace or control characters, no ``.``/``..`` path segments (percent-encoded or not),
    so the URL the prefix check saw is the URL the run calls.

    Raises:
        PolicyError: the URL is not allowed.
    """
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F or c == "\\" for c in base_url):
        raise PolicyError(f"teacher URL {base_url!r} holds whitespace, a control character or a backslash")
    parsed = urllib.parse.urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.username or parsed.password:
        raise PolicyError(f"teacher URL {base_url!r} must be http(s)://host[:port]/path without credentials")
    if parsed.query or parsed.fragment or parsed.params:
        raise PolicyError(f"teacher URL {base_url!r} may not carry a query, fragment or parameters")
    if any(urllib.parse.unquote(part) in (".", "..") for part in parsed.path.split("/")):
        raise PolicyError(f"teacher URL {base_url!r} has '.' or '..' path segments")
    canonical = base_url.rstrip("/")
    if not any(_teacher_under(canonical, p) for p in prefixes):
        raise PolicyError(f"teacher URL {base_url!r} is not allowed; allowed: {list(prefixes)}")


def check_prefix_owner(prefix: str, what: str) -> None:
    """Refuse a local prefix that another local user could control: one that is world-writable,
    or owned by someone other than this process's user (or root), or, when it does not exist yet,
    one whose nearest existing parent is world-writable (as ``/tmp`` is: anyone could create the
    prefix there first, then plant files or links in it).

    Raises:
        ConfigError: the prefix is unsafe (the message says how to fix it).
    """
    if not _is_local(prefix):
        return
    path = os.path.realpath(_local_path(prefix))
    probe = path
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    info = os.stat(probe)
    writable_by_all = bool(info.st_mode & stat.S_IWOTH)
    if probe == path:
        if writable_by_all or info.st_uid not in (0, os.getuid()):
            raise ConfigError(
                f"{what} {prefix!r} is writable by every local user or owned by another user: any of them could "
                f"plant files or links in it; use a folder this service owns (chmod o-w {path})"
            )
    elif writable_by_all:
        raise ConfigError(
            f"{what} {prefix!r} does not exist and would be made in {probe!r}, which every local user can write: "
            f"one could create it first; create it yourself (mkdir -m 700 {path}) or use a folder this service owns"
        )


class RunPolicy(BaseModel):
    """The allow-lists a run is held to (`ServiceSettings.policy`), recorded with the run.

    Attributes:
        allowed_modules: module prefixes that programs and rewards may come from.
        input_prefixes, output_prefixes: URI prefixes inputs and outputs must lie under.
        teacher_prefixes: base URLs a teacher may have.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    allowed_modules: tuple[str, ...]
    input_prefixes: tuple[str, ...]
    output_prefixes: tuple[str, ...]
    teacher_prefixes: tuple[str, ...]

    def check(self, *, program: str, rewards: str | None, input_uri: str, output_uri: str, teacher_url: str) -> None:
        """Apply every allow-list to one run (programs and rewards: their modules; the whole spec
        is checked when it loads, `raydspy.core.specs`).

        Raises:
            PolicyError: the run leaves an allow-list.
            ConfigError: a local path part longer than a file name may be (a run that could only fail).
        """
        check_module(program, self.allowed_modules, "program")
        if rewards:
            check_module(rewards, self.allowed_modules, "rewards")
        for uri, what in ((input_uri, "input URI"), (output_uri, "output URI")):
            _check_names(uri, what)
        check_uri(input_uri, self.input_prefixes, "input URI")
        check_uri(output_uri, self.output_prefixes, "output URI")
        check_teacher(teacher_url, self.teacher_prefixes)

    @property
    def local_roots(self) -> tuple[str, ...]:
        """The local input and output prefixes, as absolute paths: where a run's local I/O stays."""
        return tuple(
            dict.fromkeys(_local_path(p) for p in (*self.input_prefixes, *self.output_prefixes) if _is_local(p))
        )

    def storage(self, s3_endpoint_url: str | None = None) -> StorageOptions:
        """Storage options for a run under this policy: local paths resolve to a filesystem that
        stays inside `local_roots` and opens nothing through a symbolic link."""
        return StorageOptions(s3_endpoint_url=s3_endpoint_url, local_roots=self.local_roots)
