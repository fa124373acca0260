"""Small exports without Ray: the same grouping and transforms as the Ray Data path, on one Arrow
table in this process.

An export of a few thousand rollouts is a few MB of Parquet: reading it takes pyarrow a fraction of
a second, while Ray Data's path (a shuffle by example, a pass for the distinct rollouts, one for
the token columns, the write) starts tasks in new worker processes, which costs tens of seconds on
a small machine even when the cluster is already up (BENCHMARKS.md, "warm cluster"). Below
`MAX_BYTES` of committed Parquet the export runs here; above it, on Ray Data, which streams and
spreads what does not fit one process. Both give the same rows: the rule for a duplicate rollout
id (`raydspy.core.rollouts.first_per_rollout_id`) and the transform are the same functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from raydspy.core.rollouts import ROLLOUT_SCHEMA
from raydspy.core.storage import Location
from raydspy.errors import StorageError

__all__ = ["MAX_BYTES", "fits", "export_rows", "write"]

#: Committed Parquet (bytes, compressed) up to which an export runs in this process. Rollouts
#: decompress to a few times their size, so this bounds the export's memory to about a GiB.
MAX_BYTES = 128 * 2**20


def fits(location: Location, files: Sequence[str], max_bytes: int | None = None) -> bool:
    """Whether ``files`` (committed rollout files under ``location``) total at most ``max_bytes``
    (default: `MAX_BYTES`).

    Raises:
        StorageError: their sizes cannot be read.
    """
    try:
        infos = location.filesystem.get_file_info(list(files))
    except OSError as e:
        raise StorageError(f"cannot list {location.uri!r}: {e}") from e
    return sum(info.size or 0 for info in infos) <= (MAX_BYTES if max_bytes is None else max_bytes)


def export_rows(
    location: Location,
    files: Sequence[str],
    per_example: Callable[[pa.Table], pa.Table],
    schema: pa.Schema,
    optional: Sequence[str] = (),
) -> tuple[pa.Table, pa.Schema, int]:
    """``(training rows, their schema, distinct rollouts)`` of ``files``: the rows grouped by
    ``example_id``, each group through ``per_example`` (the Ray path's ``map_groups`` body), the
    ``optional`` columns dropped when every row has them null.

    Raises:
        StorageError: a file cannot be read.
    """
    try:
        table = pads.dataset(list(files), filesystem=location.filesystem, format="parquet", schema=ROLLOUT_SCHEMA)
        table = table.to_table()
    except OSError as e:
        raise StorageError(f"cannot read {location.uri!r}: {e}") from e
    rollouts = pc.count_distinct(table.column("rollout_id")).as_py()
    # A stable sort keeps each example's rows in file order, which decides the duplicate kept.
    table = table.take(pc.sort_indices(table, [("example_id", "ascending")]))
    ids = table.column("example_id").to_pylist()
    starts = [i for i in range(len(ids)) if i == 0 or ids[i] != ids[i - 1]] + [len(ids)]
    parts = [per_example(table.slice(a, b - a)) for a, b in zip(starts, starts[1:], strict=False)]
    out = pa.concat_tables(parts) if parts else schema.empty_table()
    if optional and out.num_rows and out.column(optional[0]).null_count == out.num_rows:
        out = out.drop_columns(list(optional))
        schema = pa.schema([f for f in schema if f.name not in optional])
    return out, schema, rollouts


def write(table: pa.Table, location: Location) -> None:
    """``table`` as one Parquet file, ``part-00000.parquet``, in the (cleared) output folder.

    Raises:
        StorageError: it cannot be written.
    """
    try:
        pq.write_table(table, f"{location.path.rstrip('/')}/part-00000.parquet", filesystem=location.filesystem)
    except OSError as e:
        raise StorageError(f"cannot write to {location.uri!r}: {e}") from e
