"""A pyarrow filesystem over the local disk that stays inside allowed folders and refuses symbolic links.

The HTTP service lets remote users name paths under folders the operator allows. Checking a path once
is not enough: a symbolic link planted inside an allowed folder, or a folder swapped for one after the
check, would let a run read or write anywhere; its reads and writes go through
:func:`confined_filesystem` instead. A path must be absolute and normalized (no ``.``, ``..``, NUL) and
lie at or under a root (in its configured or real form). Below the root it is walked openat-style:
each folder opened ``O_DIRECTORY | O_NOFOLLOW`` relative to its parent's descriptor, the last
component opened, stat'ed, listed, made, renamed or removed relative to its folder's, never following
a link. Nothing is checked by name and then used by name, so a component swapped for a link between
two operations is refused by the next one (no time-of-check/time-of-use gap). A symbolic link met
anywhere below a root (a folder on the way, the file, an entry listed or deleted) raises
``PermissionError``; the roots are the operator's, trusted, and may be or lie under links (``/tmp`` on
macOS). Only regular files are opened, non-blocking first, so a planted FIFO cannot hang a run.

Limits: Linux and other POSIX systems only (``dir_fd``, ``O_NOFOLLOW``, ``os.scandir`` of a descriptor).
Opening, listing and stat'ing run Python, slower than LocalFileSystem; the bytes go through pyarrow's
native file on the descriptor (no memory mapping). Hard links are not symbolic links and are not
detected: one inside a root to a file elsewhere on the same filesystem is used like any file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import pyarrow as pa
import pyarrow.fs as pafs

__all__ = ["CONFINED_TYPE_NAME", "ConfinedHandler", "confined_filesystem", "is_confined"]

CONFINED_TYPE_NAME = "raydspy-confined"

_ROOT = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_SUBDIR = _ROOT | os.O_NOFOLLOW
_FILE = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_READ = os.O_RDONLY | _FILE
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _FILE
_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | _FILE
# What opening a symbolic link with O_NOFOLLOW fails with (ENOTDIR with O_DIRECTORY, EMLINK on BSDs).
_LINK_ERRNOS = {errno.ELOOP, errno.ENOTDIR, errno.EMLINK}


class _Target(NamedTuple):
    """A path checked against the roots: the real form of its root and the caller's components."""

    real: str
    base: tuple[str, ...]  # the caller's components down to the root
    names: tuple[str, ...]  # the components below the root

    def shown(self, count: int | None = None) -> str:  # the caller's root and the first count names
        return "/" + "/".join(self.base + self.names[:count])


def _link_error(shown: str) -> PermissionError:
    return PermissionError(f"{shown!r} is a symbolic link; symbolic links are refused inside the allowed folders")


@contextlib.contextmanager
def _naming(shown: str) -> Iterator[None]:
    """Name ``shown`` in the OS errors of ``dir_fd`` calls, which only know the last component."""
    try:
        yield
    except OSError as error:
        if error.errno is None or (isinstance(error.filename, str) and error.filename.startswith("/")):
            raise
        raise OSError(error.errno, error.strerror, shown) from None


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _refuse_link(fd: int, name: str, shown: str) -> None:
    """Raise PermissionError when ``name`` under ``fd`` is a symbolic link (for the message only)."""
    try:
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except OSError:
        return
    if stat.S_ISLNK(mode):
        raise _link_error(shown)


def _open_at(fd: int, name: str, flags: int, shown: str) -> int:
    """``os.open(name, flags, dir_fd=fd)``, ``flags`` having O_NOFOLLOW; a link raises PermissionError."""
    with _naming(shown):
        try:
            return os.open(name, flags, 0o666, dir_fd=fd)
        except OSError as error:
            if error.errno in _LINK_ERRNOS:
                _refuse_link(fd, name, shown)
            raise


def _open_subdir(fd: int, name: str, shown: str, create: bool = False) -> int:
    """The descriptor of folder ``name`` under ``fd``, never through a link; made first when ``create``."""
    if create:
        with _naming(shown), contextlib.suppress(FileExistsError):  # mkdir never follows a link
            os.mkdir(name, 0o777, dir_fd=fd)
    return _open_at(fd, name, _SUBDIR, shown)


def _file_info(path: str, st: os.stat_result) -> pafs.FileInfo:
    if stat.S_ISDIR(st.st_mode):
        return pafs.FileInfo(path, pafs.FileType.Directory, mtime_ns=st.st_mtime_ns)
    kind = pafs.FileType.File if stat.S_ISREG(st.st_mode) else pafs.FileType.Unknown
    return pafs.FileInfo(path, kind, mtime_ns=st.st_mtime_ns, size=st.st_size)


def _entries(fd: int, shown: str) -> list[tuple[str, str, os.stat_result]]:
    """Name, path and stat of each entry of the folder open as ``fd``; a symbolic link raises PermissionError."""
    found = []
    with os.scandir(fd) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)  # fstatat on the folder's descriptor
            except FileNotFoundError:
                continue  # deleted since the folder was read
            if stat.S_ISLNK(st.st_mode):
                raise _link_error(f"{shown}/{entry.name}")
            found.append((entry.name, f"{shown}/{entry.name}", st))
    return found


def _delete_contents(fd: int, shown: str) -> None:
    for name, here, st in _entries(fd, shown):
        with _naming(here):
            if stat.S_ISDIR(st.st_mode):
                with _closing(_open_subdir(fd, name, here)) as child:
                    _delete_contents(child, here)
                os.rmdir(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)  # swapped for a link meanwhile: the link goes, not its target


class ConfinedHandler(pafs.FileSystemHandler):
    """The handler of :func:`confined_filesystem`: local files under ``roots`` only, no symbolic links.

    ``roots`` are absolute folders (``~`` expanded) that need not exist yet; ``ValueError`` if there is
    none or one is relative. Their real forms are resolved by name once, here, and pickled as resolved,
    so a root must not lie inside a folder users can write to (such as another root). Every operation
    raises ``PermissionError`` for a path that is relative, has a ``.`` or ``..`` segment, lies outside
    the roots or meets a symbolic link below its root, and ``ValueError`` for one with a NUL; otherwise
    what ``pyarrow.fs.LocalFileSystem`` would (``FileNotFoundError`` for a missing file, ...).
    ``FileInfo`` paths are in the caller's form.
    """

    def __init__(self, roots: Sequence[str]):
        roots = [roots] if isinstance(roots, str | os.PathLike) else list(roots)
        lexical = [os.path.normpath(os.path.expanduser(os.fspath(root))) for root in roots]
        if not lexical or not all(os.path.isabs(root) for root in lexical):
            raise ValueError(f"the allowed folders must be one or more absolute paths, got {roots}")
        self._roots = tuple(dict.fromkeys(lexical))
        forms = {form: os.path.realpath(root) for root in self._roots for form in (root, os.path.realpath(root))}
        # Longest first, so a root nested in another is reached through its own real form.
        prefixes = [(tuple(filter(None, form.split("/"))), real) for form, real in forms.items()]
        self._prefixes = sorted(prefixes, key=lambda item: -len(item[0]))

    @property
    def roots(self) -> tuple[str, ...]:
        """The allowed folders, as configured (normalized)."""
        return self._roots

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfinedHandler) and other._roots == self._roots

    def __hash__(self) -> int:
        return hash(self._roots)

    def _locate(self, path: str) -> _Target:
        if not isinstance(path, str):
            raise TypeError(f"expected a str path, got {type(path).__name__}")
        if "\0" in path:
            raise ValueError(f"{path!r} contains a NUL character")
        if not path.startswith("/"):
            raise PermissionError(f"{path!r} is not an absolute path; the allowed folders are {list(self._roots)}")
        parts = tuple(filter(None, path.split("/")))
        if "." in parts or ".." in parts:
            raise PermissionError(f"{path!r} has a '.' or '..' segment; give a normalized absolute path")
        for prefix, real in self._prefixes:
            if parts[: len(prefix)] == prefix:
                return _Target(real, parts[: len(prefix)], parts[len(prefix) :])
        raise PermissionError(f"{path!r} is outside the allowed folders {list(self._roots)}")

    def _leaf(self, path: str) -> tuple[_Target, str]:
        t = self._locate(path)
        if not t.names:
            raise PermissionError(f"{path!r} is an allowed folder itself; name a path under it")
        return t, t.names[-1]

    @contextlib.contextmanager
    def _opened(self, t: _Target, count: int, create: bool = False) -> Iterator[int]:
        """The descriptor of the root followed by ``t.names[:count]``, made when missing and ``create``."""
        try:
            fd = os.open(t.real, _ROOT)
        except OSError as error:
            raise OSError(error.errno, error.strerror, t.shown(0)) from None
        try:
            for i in range(count):
                fd, parent = _open_subdir(fd, t.names[i], t.shown(i + 1), create), fd
                os.close(parent)
            yield fd
        finally:
            os.close(fd)

    def _open_file(self, path: str, flags: int) -> int:
        t, name = self._leaf(path)
        with self._opened(t, len(t.names) - 1) as dir_fd:
            fd = _open_at(dir_fd, name, flags, t.shown())
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, "Is a directory", t.shown())
            raise PermissionError(f"{t.shown()!r} is not a regular file")
        os.set_blocking(fd, True)  # opened non-blocking only so that a FIFO could not block the open
        return fd

    def get_type_name(self) -> str:
        return CONFINED_TYPE_NAME

    def equals(self, other) -> bool:
        return self == getattr(other, "handler", other)

    def normalize_path(self, path: str) -> str:
        self._locate(path)
        return path

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [self._info(path) for path in paths]

    def _info(self, path: str) -> pafs.FileInfo:
        t = self._locate(path)
        try:
            if not t.names:
                st = os.stat(t.real)  # a root: trusted, may be reached through a link
            else:
                with self._opened(t, len(t.names) - 1) as fd, _naming(t.shown()):
                    st = os.stat(t.names[-1], dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return pafs.FileInfo(path, pafs.FileType.NotFound)
        if stat.S_ISLNK(st.st_mode):
            raise _link_error(t.shown())
        return _file_info(path, st)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        t, infos = self._locate(selector.base_dir), []
        if selector.allow_not_found and self._info(selector.base_dir).type == pafs.FileType.NotFound:
            return infos
        with self._opened(t, len(t.names)) as fd:
            self._list(fd, selector.base_dir.rstrip("/"), selector.recursive, infos)
        return infos

    def _list(self, fd: int, prefix: str, recursive: bool, infos: list[pafs.FileInfo]) -> None:
        for name, path, st in _entries(fd, prefix):
            infos.append(_file_info(path, st))
            if recursive and stat.S_ISDIR(st.st_mode):
                with _closing(_open_subdir(fd, name, path)) as child:
                    self._list(child, path, True, infos)

    def create_dir(self, path: str, recursive: bool) -> None:
        t = self._locate(path)
        if (recursive or not t.names) and not os.path.isdir(t.real):  # the root is trusted: made by name
            with contextlib.suppress(FileExistsError):
                (os.makedirs if recursive else os.mkdir)(t.real)
        if not t.names:
            return
        with self._opened(t, len(t.names) - 1, create=recursive) as fd:
            try:
                os.close(_open_subdir(fd, t.names[-1], t.shown(), create=True))
            except NotADirectoryError:
                raise FileExistsError(errno.EEXIST, "a non-directory entry exists", t.shown()) from None

    def delete_dir(self, path: str) -> None:
        t, name = self._leaf(path)
        with self._opened(t, len(t.names) - 1) as fd:
            with _closing(_open_subdir(fd, name, t.shown())) as child:
                _delete_contents(child, t.shown())
            with _naming(t.shown()):
                os.rmdir(name, dir_fd=fd)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        t = self._locate(path)
        if missing_dir_ok and self._info(path).type == pafs.FileType.NotFound:
            return
        with self._opened(t, len(t.names)) as fd:
            _delete_contents(fd, t.shown())

    def delete_root_dir_contents(self) -> None:
        raise PermissionError(f"deleting everything is refused; name a folder under {list(self._roots)}")

    def delete_file(self, path: str) -> None:
        t, name = self._leaf(path)
        with self._opened(t, len(t.names) - 1) as fd, _naming(t.shown()):
            _refuse_link(fd, name, t.shown())
            os.unlink(name, dir_fd=fd)  # a folder: IsADirectoryError

    def move(self, src: str, dest: str) -> None:
        (s, s_name), (d, d_name) = self._leaf(src), self._leaf(dest)
        with self._opened(s, len(s.names) - 1) as s_fd, self._opened(d, len(d.names) - 1) as d_fd:
            _refuse_link(s_fd, s_name, s.shown())  # renaming a link itself is harmless, refused all the same
            _refuse_link(d_fd, d_name, d.shown())
            with _naming(s.shown()):
                os.rename(s_name, d_name, src_dir_fd=s_fd, dst_dir_fd=d_fd)

    def copy_file(self, src: str, dest: str) -> None:
        with os.fdopen(self._open_file(src, _READ), "rb") as source:
            with os.fdopen(self._open_file(dest, _WRITE), "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return pa.OSFile(self._open_file(path, _READ), mode="r")  # seekable; it owns the descriptor

    open_input_file = open_input_stream

    def open_output_stream(self, path: str, metadata) -> pa.NativeFile:
        return pa.OSFile(self._open_file(path, _WRITE), mode="wb")

    def open_append_stream(self, path: str, metadata) -> pa.NativeFile:
        return pa.OSFile(self._open_file(path, _APPEND), mode="ab")


def confined_filesystem(roots: Sequence[str]) -> pafs.PyFileSystem:
    """A pyarrow filesystem over local files under ``roots`` only, refusing symbolic links below them.

    Its ``type_name`` is ``"py::raydspy-confined"`` and it pickles with its roots. Raises ``ValueError``
    when ``roots`` is empty or has a relative path; :class:`ConfinedHandler` lists what operations raise.
    """
    return pafs.PyFileSystem(ConfinedHandler(roots))


def is_confined(fs: pafs.FileSystem) -> bool:
    """Whether ``fs`` is a :func:`confined_filesystem` (also inside Ray's retrying wrapper)."""
    unwrap = getattr(fs, "unwrap", None)
    fs = unwrap() if callable(unwrap) else fs
    return isinstance(fs, pafs.PyFileSystem) and isinstance(fs.handler, ConfinedHandler)
