"""A run's status and preview, read from the rollout part files it has committed.

The Parquet parts under the output URI are the truth (`raydspy.pipeline.commits`): a run's counters are
never kept on the side. Each part file is immutable once committed (a batch Ray retries rewrites
the same rows under the same name), so its counts are read once (only the ``rollout_id``,
``error`` and ``reward`` columns) and cached by path; a status request then lists the output and
reads only the parts it has not seen.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pyarrow.parquet as pq

from raydspy.core.stats import RolloutStats
from raydspy.core.storage import StorageOptions, resolve
from raydspy.errors import StorageError
from raydspy.pipeline.commits import committed_files, read_committed

__all__ = ["OutputProgress", "preview_rows"]


class OutputProgress:
    """Counts of committed rollouts per output URI, with a per-file cache shared by requests."""

    def __init__(self, storage: StorageOptions | None = None, max_cached_files: int = 200_000):
        self.storage = storage or StorageOptions()
        self._cache: dict[str, RolloutStats] = {}
        self._lock = threading.Lock()
        self._max = max_cached_files

    def counts(self, output_uri: str) -> RolloutStats:
        """Rows, error rows and reward sums committed under ``output_uri`` (0s when it is empty).

        Raises:
            StorageError: the output cannot be listed or a part cannot be read.
        """
        location = resolve(output_uri, self.storage)
        total = RolloutStats()
        for path in committed_files(location):
            key = f"{output_uri}\0{path}"
            with self._lock:
                cached = self._cache.get(key)
            if cached is None:
                cached = self._read(location.filesystem, path, output_uri)
                with self._lock:
                    if len(self._cache) >= self._max:
                        self._cache.clear()
                    self._cache[key] = cached
            total += cached
        return total

    @staticmethod
    def _read(filesystem, path: str, output_uri: str) -> RolloutStats:
        try:
            table = pq.read_table(path, filesystem=filesystem, columns=["error", "reward"])
        except OSError as e:
            raise StorageError(f"cannot read {path!r} under {output_uri!r}: {e}") from e
        return RolloutStats.of(table)


def preview_rows(
    output_uri: str, limit: int, storage: StorageOptions | None = None, *, trace: bool = False
) -> list[dict[str, Any]]:
    """The first ``limit`` committed rollout rows under ``output_uri`` (file order), JSON-ready:
    ``inputs`` and ``outputs`` decoded, ``rewards`` as a dict, ``trace`` and ``trace_tokens``
    only when asked for (``lm_calls`` counts its items either way).

    Raises:
        StorageError: the output cannot be listed or read.
    """
    location = resolve(output_uri, storage or StorageOptions())
    rows: list[dict[str, Any]] = []
    for path in committed_files(location):
        if len(rows) >= limit:
            break
        table, _ = read_committed(location, [path])
        for row in table.slice(0, limit - len(rows)).to_pylist():
            row["inputs"] = json.loads(row["inputs"]) if row["inputs"] else None
            row["outputs"] = json.loads(row["outputs"]) if row["outputs"] else None
            row["rewards"] = dict(row["rewards"] or [])
            row["lm_calls"] = len(row["trace"] or [])
            if not trace:
                row.pop("trace")
                row.pop("trace_tokens")
            row["created_at"] = row["created_at"].isoformat() if row["created_at"] else None
            rows.append(row)
    return rows
