"""A small, bounded sample of the rollouts one run committed, for a person to look at (the MLflow
traces of `raydspy.pipeline.tracking`).

The sample is read from the part files the run's manifest names (`raydspy.pipeline.manifests`),
a few at a time, never from the whole output: the driver's memory stays flat in the input (at
most a part file's rows at once, and the sample itself).

Which rollouts:

- **failed ones first**: up to half the sample (rounded up) are rollouts whose ``error`` is set,
  when the run has any (a parse error, a teacher error, a reward that raised): they are what
  people want to look at. The manifest's per-file counts say which files hold them, so only
  those are opened for them;
- the rest are rollouts that finished without an error;
- either kind fills the other's share when the run has too few of it;
- deterministic: files in name order (part names are hashes of their rollout ids, so that order
  spreads over the run rather than following its first batches), rows in file order. The same
  run's output gives the same sample.
"""

from __future__ import annotations

import math

import pyarrow as pa

from raydspy.core.rollouts import ROLLOUT_SCHEMA, first_per_rollout_id
from raydspy.core.storage import Location
from raydspy.pipeline.commits import read_committed
from raydspy.pipeline.manifests import read_manifest

__all__ = ["sample_run_rollouts"]


def _shares(size: int, failed: int, finished: int) -> tuple[int, int]:
    """``(failed, finished)`` rollouts to take for a sample of ``size`` out of ``failed`` failed
    and ``finished`` error-free ones (the policy of the module docstring)."""
    take_failed = min(failed, max(math.ceil(size / 2), size - finished))
    return take_failed, min(finished, size - take_failed)


def sample_run_rollouts(location: Location, manifest: str, size: int) -> pa.Table:
    """Up to ``size`` rollout rows of the run whose manifest is ``manifest`` (the path
    `raydspy.pipeline.summary.RunSummary.manifest` holds), chosen as the module docstring says.

    Args:
        location: the run's output.
        manifest: the run's manifest, in the filesystem's syntax.
        size: rows wanted (0 gives an empty table).

    Returns:
        A `ROLLOUT_SCHEMA` table of at most ``size`` rows, one per rollout id, in file order.

    Raises:
        StorageError: the manifest or a part file it names cannot be read.
    """
    if size <= 0:
        return ROLLOUT_SCHEMA.empty_table()
    files = read_manifest(location, manifest)
    failed_total = sum(stats.error_rows for stats in files.values())
    want_failed, want_finished = _shares(size, failed_total, sum(s.rows for s in files.values()) - failed_total)
    parts, seen = [], set()
    for name, stats in files.items():
        if want_failed <= 0 and want_finished <= 0:
            break
        if want_finished <= 0 and not stats.error_rows:
            continue  # only failed rollouts still wanted, and this file has none: not opened
        table, _ = read_committed(location, [location.join(name)])
        table, _ = first_per_rollout_id(table, seen)
        errors = table.column("error").to_pylist()
        failed = [i for i, error in enumerate(errors) if error is not None][: max(want_failed, 0)]
        finished = [i for i, error in enumerate(errors) if error is None][: max(want_finished, 0)]
        want_failed, want_finished = want_failed - len(failed), want_finished - len(finished)
        if failed or finished:
            parts.append(table.take(pa.array(sorted(failed + finished), pa.int64())))
    return pa.concat_tables(parts) if parts else ROLLOUT_SCHEMA.empty_table()
