"""`PartCounts`: the counts of an output's committed part files, each file read once.

A committed part never changes (a batch Ray retries rewrites the same rows under the same name:
`raydspy.pipeline.commits`), so the counts of each part are cached by path, and a look at a live
output lists it and reads only the parts it has not seen. What is counted is the caller's: the
service's run status and the viewer's run page share one `PartCounts` of
`raydspy.viewer.overview.Overview` (a `RolloutStats` and the reward spread), so a service reads
each part once for both.

Memory stays that of one record batch of the counted columns, however large a part or an output.

    >>> counts = PartCounts(RolloutStats.of, ["error", "reward"])  # a RolloutStats of those columns
    >>> counts.total(resolve("rollouts/banking77")).rows
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import pyarrow as pa
import pyarrow.dataset as pads

from raydspy.core.rollouts import ROLLOUT_SCHEMA
from raydspy.core.storage import Location
from raydspy.errors import StorageError
from raydspy.pipeline.commits import committed_files

__all__ = ["PartCounts"]


C = TypeVar("C")  # counts that add with ``+``


class PartCounts(Generic[C]):
    """Counts of committed part files, read on ``columns`` only and cached per file.

    Args:
        count: the counts of a table of rollout rows holding ``columns`` (``RolloutStats.of``);
            counts add with ``+``, and the counts of no rows are the zero.
        columns: the `ROLLOUT_SCHEMA` columns ``count`` reads.
        max_cached_files: files whose counts are kept before the cache starts over.
    """

    def __init__(self, count: Callable[[pa.Table], C], columns: Sequence[str], max_cached_files: int = 200_000):
        self.count = count
        self.columns = list(columns)
        self._cache: dict[tuple[str, str], C] = {}
        self._lock = threading.Lock()
        self._max = max_cached_files

    def total(self, location: Location, files: Sequence[str] | None = None) -> C:
        """The counts of every committed part under ``location`` (or of ``files``, paths in its
        filesystem's syntax), reading only the parts not counted before.

        Raises:
            StorageError: the output cannot be listed or a part cannot be read.
        """
        files = committed_files(location) if files is None else files
        total = self.zero()
        for path in files:
            key = (location.filesystem.type_name, path)
            with self._lock:
                cached = self._cache.get(key)
            if cached is None:
                cached = self.read(location, path)
                with self._lock:
                    if len(self._cache) >= self._max:
                        self._cache.clear()
                    self._cache[key] = cached
            total = total + cached
        return total

    def zero(self) -> C:
        """The counts of no rows."""
        return self.count(ROLLOUT_SCHEMA.empty_table().select(self.columns))

    def read(self, location: Location, path: str) -> C:
        """The counts of the part ``path``, read now, one record batch of ``columns`` at a time.

        Raises:
            StorageError: the part cannot be read.
        """
        try:
            dataset = pads.dataset([path], filesystem=location.filesystem, format="parquet", schema=ROLLOUT_SCHEMA)
            total = self.zero()
            for batch in dataset.to_batches(columns=self.columns):
                total = total + self.count(pa.Table.from_batches([batch]))
        except (OSError, pa.ArrowException) as e:
            raise StorageError(f"cannot read {path!r} under {location.uri!r}: {e}") from e
        return total
