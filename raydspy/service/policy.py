"""What a submitted run may touch: programs and rewards from allow-listed modules only, input and
output URIs under configured prefixes, teachers under configured base URLs.

URIs are compared after normalisation, so ``/data/in/../../etc`` or a symlink out of a prefix
does not pass: local paths are made absolute and resolved (``os.path.realpath``); object-store
URIs keep their scheme and bucket and have ``.``/``..`` segments folded. Object-store URIs with a
query string are refused (``?endpoint_override=`` would point the run at another server).
"""

from __future__ import annotations

import os
import posixpath
import urllib.parse
from collections.abc import Sequence

from raydspy.errors import RaydspyError

__all__ = ["PolicyError", "check_module", "check_uri", "check_teacher", "normalize_uri"]


class PolicyError(RaydspyError, PermissionError):
    """A request asks for something the service's settings do not allow (HTTP 403)."""


def check_module(spec: str, allowed: Sequence[str], what: str) -> None:
    """Allow ``MODULE:ATTR`` only when MODULE is one of ``allowed`` or inside one of them.

    Raises:
        PolicyError: the module is not allow-listed.
    """
    module = spec.partition(":")[0].strip()
    if not any(module == m or module.startswith(m + ".") for m in allowed):
        raise PolicyError(f"{what} {spec!r}: module {module!r} is not allowed; allowed modules: {list(allowed)}")


def normalize_uri(uri: str) -> str:
    """``uri`` in a canonical form for prefix checks (see the module docstring).

    Raises:
        PolicyError: an unsupported scheme, or an object-store URI with a query or no bucket.
    """
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file"):
        path = parsed.path if scheme == "file" else uri
        return os.path.realpath(os.path.expanduser(path))
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
    """Allow a teacher base URL only under one of ``prefixes`` (the service's only outbound calls).

    Raises:
        PolicyError: the URL is not allowed.
    """
    parsed = urllib.parse.urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.username or parsed.password:
        raise PolicyError(f"teacher URL {base_url!r} must be http(s)://host[:port]/path without credentials")
    canonical = base_url.rstrip("/")
    if not any(_teacher_under(canonical, p) for p in prefixes):
        raise PolicyError(f"teacher URL {base_url!r} is not allowed; allowed: {list(prefixes)}")
