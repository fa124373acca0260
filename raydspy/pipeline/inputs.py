"""Examples in: CSV, JSONL or Parquet, one file or a folder of them, local or in object storage,
read with Ray Data and checked against the program before any rollout starts."""

from __future__ import annotations

import pyarrow.fs as pafs
import ray.data

from raydspy.core.storage import Location, StorageOptions, check_readable, resolve
from raydspy.errors import InputError, StorageError

__all__ = ["FORMATS", "detect_format", "input_bytes", "read_examples", "load_examples"]

FORMATS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def detect_format(location: Location) -> str:
    """``"csv"``, ``"json"`` (JSON Lines) or ``"parquet"``, from the file's extension, or from the
    files in the folder (all must agree).

    Raises:
        StorageError: the URI does not exist.
        InputError: no file with a known extension, or a folder mixing formats.
    """
    info = check_readable(location)
    if info.type == pafs.FileType.File:
        names = [info.path]
    else:
        selector = pafs.FileSelector(location.path, recursive=True)
        names = [f.path for f in location.filesystem.get_file_info(selector) if f.type == pafs.FileType.File]
    found = {fmt for name in names for ext, fmt in FORMATS.items() if name.lower().endswith(ext)}
    if len(found) != 1:
        what = "no .csv, .jsonl or .parquet files" if not found else f"mixed formats {sorted(found)}"
        raise InputError(f"cannot read examples from {location.uri!r}: {what}", uri=location.uri)
    return found.pop()


def input_bytes(location: Location) -> int:
    """The size on storage of the examples at ``location`` (a file, or every file in the folder).

    Raises:
        StorageError: the URI does not exist.
    """
    info = check_readable(location)
    if info.type == pafs.FileType.File:
        return info.size or 0
    selector = pafs.FileSelector(location.path, recursive=True)
    return sum(f.size or 0 for f in location.filesystem.get_file_info(selector) if f.type == pafs.FileType.File)


def read_examples(location: Location) -> ray.data.Dataset:
    """A Ray Dataset of the examples at ``location`` (lazy: nothing is read until executed).

    Raises:
        StorageError, InputError: as `detect_format`.
    """
    fmt = detect_format(location)
    reader = {"csv": ray.data.read_csv, "json": ray.data.read_json, "parquet": ray.data.read_parquet}[fmt]
    extensions = [ext.lstrip(".") for ext, f in FORMATS.items() if f == fmt]
    try:
        return reader(location.path, filesystem=location.filesystem, file_extensions=extensions)
    except OSError as e:
        raise StorageError(f"cannot read {location.uri!r}: {e}") from e


def load_examples(uri: str, storage: StorageOptions | None = None, *, limit: int | None = None) -> list[dict]:
    """The first ``limit`` examples at ``uri`` (all when None), in file order, as dicts: for the
    few hundred held-out examples of an evaluation, read in this process (no Ray).

    Raises:
        StorageError, InputError: as `detect_format`; InputError also when there is no row.
    """
    import pyarrow.dataset as pads

    location = resolve(uri, storage)
    fmt = detect_format(location)
    try:
        dataset = pads.dataset(location.path, filesystem=location.filesystem, format=fmt, exclude_invalid_files=False)
        table = dataset.head(limit) if limit is not None else dataset.to_table()
    except (OSError, ValueError) as e:
        raise StorageError(f"cannot read {uri!r}: {e}") from e
    if table.num_rows == 0:
        raise InputError(f"no examples in {uri!r}", uri=uri)
    return table.to_pylist()
