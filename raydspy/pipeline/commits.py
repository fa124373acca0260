"""How rollouts reach storage exactly once: committed part files with content-derived names.

A Collect worker commits each batch's finished rollouts as one Parquet file,

    {output}/part-{digest}.parquet     digest = SHA-256 of the batch's sorted rollout ids (16 hex)

written with `raydspy.core.storage.write_atomic` (local: a hidden temporary file renamed into place;
object stores: one PUT), so a reader sees a whole file or none. Files whose names start with
``.`` or ``_`` are never rollouts (temporaries, ``_invalid/``); readers skip them, as
Spark, Hive and pyarrow's datasets do.

Why this gives exactly once:
- a run first lists the committed rollout ids and runs only the others (`committed_rollout_ids`);
- a batch that Ray retries (its actor died) holds the same rollouts, so it commits under the same
  name and replaces, rather than duplicates, anything its first attempt wrote;
- rollouts that failed because the teacher was unreachable are not committed at all, so a later
  run does them (the DSPy cache answers any call that did complete, at no cost).
A duplicate can still arise in one case: a killed driver's worker that commits after the new run
has listed the output. `read_committed` therefore keeps the first row of each rollout id, and
`RunSummary.duplicate_rows` counts any it dropped.

Ray Data's own checkpointing (``DataContext.checkpoint_config``) does not fit: it filters *input*
rows by an id column at read time, while our unit of work is a rollout (example × index) whose
id depends on the program and the teacher; and it writes its checkpoint after the data, so a
crash between the two repeats rows.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raydspy.core.retries import RetryPolicy, retry_call
from raydspy.core.rollouts import ROLLOUT_SCHEMA, first_per_rollout_id
from raydspy.core.storage import Location, write_atomic
from raydspy.errors import StorageError

__all__ = ["commit_rollouts", "committed_files", "committed_rollout_ids", "read_committed", "part_name"]

#: Storage retries: a flaky or restarting object store gets about two minutes to come back.
STORAGE_RETRY = RetryPolicy(max_attempts=10, initial_wait_s=0.5, max_wait_s=20.0, deadline_s=120.0)


def part_name(rollout_ids: Iterable[str]) -> str:
    """The file name a batch of rollouts commits under: the same rollouts, the same name."""
    digest = hashlib.sha256("\n".join(sorted(rollout_ids)).encode("ascii")).hexdigest()[:16]
    return f"part-{digest}.parquet"


def _is_storage_fault(error: BaseException) -> bool:
    # pyarrow raises OSError for every I/O failure (refused connection, 5xx, time-out);
    # write_atomic wraps it in StorageError with the URI.
    return isinstance(error, (OSError, StorageError))


def commit_rollouts(location: Location, table: pa.Table, policy: RetryPolicy = STORAGE_RETRY) -> str | None:
    """Commit ``table`` (rows of `ROLLOUT_SCHEMA`) as one part file, retrying storage faults.

    Returns:
        The path committed, or None for an empty table (nothing is written).

    Raises:
        StorageError: storage still failing when ``policy`` gives up.
    """
    if table.num_rows == 0:
        return None
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    name = part_name(table.column("rollout_id").to_pylist())
    return retry_call(
        policy,
        write_atomic,
        location,
        name,
        buffer.getvalue(),
        retry_if=_is_storage_fault,
        what=f"commit of {name} to {location.uri}",
    )


def committed_files(location: Location) -> list[str]:
    """The committed rollout files under ``location`` (``*.parquet``, no hidden or ``_`` parts).

    Raises:
        StorageError: the location cannot be listed.
    """
    selector = pafs.FileSelector(location.path, recursive=True, allow_not_found=True)
    try:
        infos = location.filesystem.get_file_info(selector)
    except OSError as e:
        raise StorageError(f"cannot list {location.uri!r}: {e}") from e
    prefix = location.path.rstrip("/") + "/"
    files = []
    for info in infos:
        relative = info.path[len(prefix) :] if info.path.startswith(prefix) else info.base_name
        if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
            continue
        if any(part.startswith((".", "_")) for part in relative.split("/")):
            continue
        files.append(info.path)
    return sorted(files)


def _dataset(location: Location, files: list[str]) -> pads.Dataset:
    return pads.dataset(files, filesystem=location.filesystem, format="parquet", schema=ROLLOUT_SCHEMA)


def committed_rollout_ids(location: Location, files: list[str] | None = None) -> set[str]:
    """The rollout ids already committed under ``location`` (reads only that column).

    Raises:
        StorageError: the files cannot be read.
    """
    files = committed_files(location) if files is None else files
    if not files:
        return set()
    try:
        column = _dataset(location, files).to_table(columns=["rollout_id"]).column("rollout_id")
    except OSError as e:
        raise StorageError(f"cannot read rollouts under {location.uri!r}: {e}") from e
    return set(column.to_pylist())


def read_committed(location: Location, files: list[str] | None = None) -> tuple[pa.Table, int]:
    """Every committed rollout row under ``location`` (or in ``files``), one row per rollout id.

    Returns:
        ``(table, duplicates_dropped)``: the rows (first occurrence of each rollout id kept)
        and how many repeated rows were left out.

    Raises:
        StorageError: the files cannot be read.
    """
    files = committed_files(location) if files is None else files
    if not files:
        return ROLLOUT_SCHEMA.empty_table(), 0
    try:
        table = _dataset(location, files).to_table()
    except OSError as e:
        raise StorageError(f"cannot read rollouts under {location.uri!r}: {e}") from e
    return first_per_rollout_id(table)
