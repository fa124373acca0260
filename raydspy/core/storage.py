"""Where rollouts and examples live: a URI becomes a pyarrow filesystem and a path in it.

Accepted URIs:
    ``/abs/or/relative/path`` or ``file:///path``  the local filesystem (the default);
    ``s3://bucket/prefix``  Amazon S3 or any S3-compatible store (MinIO, moto, R2, ...);
    ``gs://bucket/prefix``  Google Cloud Storage.

Credentials come from the usual places (environment, ``~/.aws``, instance metadata, ADC). For an
S3-compatible store, give its endpoint either as ``StorageOptions(s3_endpoint_url=...)`` (the CLI's
``--s3-endpoint``) or as pyarrow's own query parameters, ``s3://bucket/p?endpoint_override=...``.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs

from raydspy.errors import StorageError

__all__ = ["StorageOptions", "Location", "resolve", "check_readable", "check_writable"]


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage.

    Attributes:
        s3_endpoint_url: endpoint of an S3-compatible server, e.g. ``http://127.0.0.1:5000``;
            None for AWS itself.
        s3_region: the bucket's region; pyarrow looks it up when None (AWS only).
        local_roots: when set, local paths resolve only inside these folders, to a filesystem
            that opens every file through no symbolic link below them
            (`raydspy.core.confined`): the HTTP service's runs. None: the plain local filesystem.
    """

    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    local_roots: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Location:
    """A resolved URI: the filesystem to use and the path inside it (no scheme).

    ``Location`` pickles (pyarrow filesystems do), so Ray ships it to workers as is.
    """

    uri: str
    filesystem: pafs.FileSystem
    path: str

    def join(self, *parts: str) -> str:
        """The path of ``parts`` under this location, in the filesystem's own syntax."""
        return "/".join([self.path.rstrip("/"), *parts])

    def child(self, name: str) -> Location:
        """The location of the folder (or prefix) ``name`` under this one."""
        return Location(f"{self.uri.rstrip('/')}/{name}", self.filesystem, self.join(name))


def resolve(uri: str, options: StorageOptions | None = None) -> Location:
    """Resolve ``uri`` to a filesystem and a path.

    Args:
        uri: a local path, ``file://``, ``s3://`` or ``gs://`` URI.
        options: endpoint and region for S3-compatible stores.

    Returns:
        The `Location`.

    Raises:
        StorageError: the scheme is not supported, pyarrow cannot build the filesystem, or a local
            path lies outside ``options.local_roots`` (or reaches through a symbolic link below one).
    """
    options = options or StorageOptions()
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    try:
        if scheme in ("", "file"):
            path = os.path.abspath(os.path.expanduser(parsed.path if scheme == "file" else uri))
            if options.local_roots is None:
                return Location(uri, pafs.LocalFileSystem(), path)
            from raydspy.core.confined import confined_filesystem

            fs = confined_filesystem(options.local_roots)
            fs.get_file_info(path)  # a path outside the roots, or through a link below them, fails now
            return Location(uri, fs, path)
        if scheme == "s3":
            if options.s3_endpoint_url and "endpoint_override" not in parsed.query:
                endpoint = urllib.parse.urlparse(options.s3_endpoint_url)
                fs = pafs.S3FileSystem(
                    endpoint_override=endpoint.netloc or endpoint.path,
                    scheme=endpoint.scheme or "https",
                    region=options.s3_region or "us-east-1",
                    allow_bucket_creation=True,
                )
                return Location(uri, fs, (parsed.netloc + parsed.path).rstrip("/"))
            fs, path = pafs.FileSystem.from_uri(uri)
            return Location(uri, fs, path.rstrip("/"))
        if scheme in ("gs", "gcs"):
            fs, path = pafs.FileSystem.from_uri(uri)
            return Location(uri, fs, path.rstrip("/"))
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot open {uri!r}: {e}") from e
    raise StorageError(f"unsupported URI scheme {scheme!r} in {uri!r}: use a local path, s3://, or gs://")


def check_readable(location: Location) -> pafs.FileInfo:
    """Fail early, with the URI in the message, when ``location`` does not exist or cannot be read.

    Raises:
        StorageError: missing file or folder, missing bucket, or access denied.
    """
    try:
        info = location.filesystem.get_file_info(location.path)
    except OSError as e:
        raise StorageError(f"cannot read {location.uri!r}: {e}") from e
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"input not found: {location.uri!r} does not exist")
    return info


def check_writable(location: Location) -> None:
    """Create the output folder (or prefix) and prove a file can be written and deleted in it.

    Raises:
        StorageError: the folder or bucket cannot be created or written (the message says which URI).
    """
    probe = location.join(f".raydspy-write-probe-{uuid.uuid4().hex}")
    try:
        location.filesystem.create_dir(location.path, recursive=True)
        with location.filesystem.open_output_stream(probe) as f:
            f.write(b"ok")
        location.filesystem.delete_file(probe)
    except OSError as e:
        raise StorageError(f"cannot write to {location.uri!r}: {e}") from e


def _renames_atomically(fs: pafs.FileSystem) -> bool:
    """Local disks (plain or confined), where a rename is atomic and a PUT-like write is not."""
    from raydspy.core.confined import is_confined

    return isinstance(fs, pafs.LocalFileSystem) or is_confined(fs)


def write_atomic(location: Location, name: str, data: bytes) -> str:
    """Write ``data`` to ``name`` under ``location`` so readers never see a partial file.

    Local folders: written to a hidden temporary name, then renamed (atomic on POSIX). Object
    stores: a single PUT (or a multipart upload completed on close) is already all-or-nothing.

    Returns:
        The path written, in the filesystem's syntax.

    Raises:
        StorageError: the write failed (the message names the URI).
    """
    final = location.join(name)
    fs = location.filesystem
    try:
        fs.create_dir(location.path, recursive=True)
        if _renames_atomically(fs):
            tmp = location.join(f".{name}.{uuid.uuid4().hex}.tmp")
            with fs.open_output_stream(tmp) as f:
                f.write(data)
            fs.move(tmp, final)
        else:
            with fs.open_output_stream(final) as f:
                f.write(data)
    except OSError as e:
        raise StorageError(f"cannot write {name!r} to {location.uri!r}: {e}") from e
    return final
