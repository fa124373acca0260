"""One output folder (local, ``s3://``, ``gs://``) as the viewer reads it: pages of filtered
rollouts, one rollout with its trace, the summary, the dataset card and the run manifests.

Memory stays bounded however many rollouts the output holds:
- a page counts the matching rows of each part file on the filter's columns only (``reward``,
  ``error``, ``example_id``; counts cached per file and filter: committed parts never change; no
  filter: the count in the file's footer), then reads the list's columns
  (`LIST_COLUMNS`, no ``trace`` or ``inputs``) of only the files that hold the page's rows;
- the overview streams record batches of three columns, once per part file
  (`raydspy.viewer.overview`, counted and cached by `raydspy.pipeline.part_counts.PartCounts`);
- a rollout's ``trace`` and ``inputs`` are read only when it is opened, from the one row group
  that holds it (found from the ``rollout_id`` column of its part, which the link names).
Rows are shown as committed: a rollout id committed twice (a killed driver's late worker, see
`raydspy.pipeline.commits`) is listed twice, and opening it shows its first row, the one
`raydspy.core.rollouts.first_per_rollout_id` keeps.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raydspy.core.rollouts import ROLLOUT_SCHEMA
from raydspy.core.stats import RolloutStats
from raydspy.core.storage import Location, StorageOptions, resolve
from raydspy.errors import StorageError
from raydspy.pipeline.commits import committed_files
from raydspy.pipeline.manifests import MANIFEST_DIR, relative_name
from raydspy.pipeline.part_counts import PartCounts
from raydspy.viewer.filters import RolloutFilter
from raydspy.viewer.overview import Bar, Overview, overview_counts

__all__ = ["OutputView", "Page", "LIST_COLUMNS", "ManifestInfo"]

#: The columns of a row in a page of rollouts.
LIST_COLUMNS = [
    "rollout_id",
    "example_id",
    "rollout_index",
    "reward",
    "rewards",
    "format_ok",
    "error",
    "outputs",
    "created_at",
]

_MAX_CARD_BYTES = 512 * 1024


@dataclass
class Page:
    """Rows ``offset`` … ``offset + len(rows)`` of the ``total`` rows a filter matches."""

    rows: list[dict[str, Any]]
    total: int
    offset: int
    limit: int


@dataclass
class ManifestInfo:
    """One run that committed to this output (a manifest under ``_runs/``)."""

    name: str
    kind: str
    written_at: str
    files: int
    stats: RolloutStats


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for name in ("inputs", "outputs"):
        if name in row:
            row[name] = json.loads(row[name]) if row[name] else None
    if "rewards" in row:
        row["rewards"] = dict(row["rewards"] or [])
    return row


class OutputView:
    """Read-only queries over the committed rollouts under ``uri``.

    Args:
        uri: the output folder or prefix, as given to ``raydspy collect --output``.
        storage: endpoint options of an S3-compatible store.
        counts: the per-file cache of overviews to use (`overview_counts`: one of its own by
            default; the viewer's run sources share one over all their outputs).
        max_cached_counts: (file, filter) row counts kept before their cache starts over.

    Raises (every method):
        StorageError: the output cannot be listed or a file cannot be read.
    """

    def __init__(
        self,
        uri: str,
        storage: StorageOptions | None = None,
        counts: PartCounts[Overview] | None = None,
        max_cached_counts: int = 100_000,
    ):
        self.uri = uri
        self.location: Location = resolve(uri, storage or StorageOptions())
        self.overviews = counts or overview_counts()
        self._counts: dict[tuple[str, RolloutFilter], int] = {}
        self._bars: dict[tuple[tuple[str, ...], int], list[Bar]] = {}
        self._lock = threading.Lock()
        self._max_counts = max_cached_counts

    # -- files ---------------------------------------------------------------------------

    def files(self) -> list[str]:
        """The committed part files (paths in the filesystem's syntax), sorted."""
        return committed_files(self.location)

    def _dataset(self, files: list[str]) -> pads.Dataset:
        return pads.dataset(files, filesystem=self.location.filesystem, format="parquet", schema=ROLLOUT_SCHEMA)

    def _read(self, what: str, call, *args, **kwargs):
        """``call(*args, **kwargs)``, its I/O and Parquet errors raised as `StorageError`."""
        try:
            return call(*args, **kwargs)
        except (OSError, pa.ArrowException) as e:
            raise StorageError(f"cannot read {what} under {self.uri!r}: {e}") from e

    def _list_rows(self, path: str, flt: RolloutFilter) -> pa.Table:
        return self._dataset([path]).to_table(columns=LIST_COLUMNS, filter=flt.expression())

    # -- the summary ---------------------------------------------------------------------

    def totals(self) -> Overview:
        """The `Overview` of every committed rollout (each part read once: its counts are cached
        by path, so a live run's next look reads only its new parts)."""
        return self.overviews.total(self.location, self.files())

    def overview(self, bins: int = 20) -> tuple[Overview, list[Bar]]:
        """`totals` and the reward histogram (`raydspy.viewer.overview`)."""
        totals = self.totals()
        bars = totals.spread.exact_bars()
        if bars is None:
            files = self.files()
            key = (tuple(files), bins)
            bars = self._bars.get(key)
            if bars is None:

                def read() -> list[Bar]:
                    batches = self._dataset(files).to_batches(columns=["reward"])
                    return totals.spread.binned_bars((b.column("reward") for b in batches), bins)

                bars = self._read("rewards", read)
                self._bars = {key: bars}  # only the latest set of files is asked for again
        return totals, bars

    # -- pages of rollouts ---------------------------------------------------------------

    def _count(self, path: str, flt: RolloutFilter) -> int:
        key = (path, flt)
        with self._lock:
            cached = self._counts.get(key)
        if cached is not None:
            return cached
        expression = flt.expression()
        if expression is None:  # from the footer, no column read
            count = self._read(
                path, lambda: pq.ParquetFile(path, filesystem=self.location.filesystem).metadata.num_rows
            )
        else:
            count = self._read(path, lambda: self._dataset([path]).count_rows(filter=expression))
        with self._lock:
            if len(self._counts) >= self._max_counts:
                self._counts.clear()
            self._counts[key] = count
        return count

    def page(self, flt: RolloutFilter | None = None, offset: int = 0, limit: int = 50) -> Page:
        """The rows ``flt`` matches from ``offset`` on (file order, then row order), at most
        ``limit``, with the `LIST_COLUMNS` (``outputs`` and ``rewards`` decoded) and ``part``:
        the file that holds the row, relative to the output."""
        flt = flt or RolloutFilter()
        files = self.files()
        counts = [self._count(path, flt) for path in files]
        rows: list[dict[str, Any]] = []
        skip = max(offset, 0)
        for path, count in zip(files, counts):
            if len(rows) >= limit:
                break
            if skip >= count:
                skip -= count
                continue
            table = self._read(path, self._list_rows, path, flt)
            part = relative_name(self.location, path)
            for row in table.slice(skip, limit - len(rows)).to_pylist():
                rows.append(_decode(row) | {"part": part})
            skip = 0
        return Page(rows=rows, total=sum(counts), offset=max(offset, 0), limit=limit)

    # -- one rollout ---------------------------------------------------------------------

    def rollout(self, rollout_id: str, part: str | None = None) -> dict[str, Any] | None:
        """The first committed row of ``rollout_id``, every column (JSON decoded), or None.

        Args:
            rollout_id: the rollout.
            part: the file that holds it, relative to the output (a page's ``part``): only that
                file is searched when it is one of the committed files, else all of them.
        """
        files = self.files()
        named = self.location.join(part) if part else None
        for path in [named] if named in files else files:
            ids = self._read(path, pq.read_table, path, columns=["rollout_id"], filesystem=self.location.filesystem)
            index = pc.index(ids.column("rollout_id"), rollout_id).as_py()
            if index < 0:
                continue
            parquet = self._read(path, pq.ParquetFile, path, filesystem=self.location.filesystem)
            start = 0
            for group in range(parquet.metadata.num_row_groups):
                size = parquet.metadata.row_group(group).num_rows
                if index < start + size:
                    table = self._read(path, parquet.read_row_group, group)
                    row = _decode(table.slice(index - start, 1).to_pylist()[0])
                    return row | {"part": relative_name(self.location, path)}
                start += size
        return None

    # -- what else the output holds ------------------------------------------------------

    def card(self) -> str | None:
        """The output's dataset card (``README.md``), or None when it has none."""
        path = self.location.join("README.md")
        try:
            with self.location.filesystem.open_input_stream(path) as f:
                data = f.read(_MAX_CARD_BYTES)
        except FileNotFoundError:
            return None
        except OSError as e:
            if self.location.filesystem.get_file_info(path).type == pafs.FileType.NotFound:
                return None
            raise StorageError(f"cannot read the card under {self.uri!r}: {e}") from e
        return data.decode("utf-8", errors="replace")

    def manifests(self) -> list[ManifestInfo]:
        """The runs that committed here (``_runs/`` manifests), oldest first."""
        folder = self.location.child(MANIFEST_DIR)
        selector = pafs.FileSelector(folder.path, allow_not_found=True)
        infos = self._read("the run manifests", self.location.filesystem.get_file_info, selector)
        found = []
        for info in sorted((i for i in infos if i.path.endswith(".json")), key=lambda i: i.path):
            try:
                with self.location.filesystem.open_input_stream(info.path) as f:
                    body = json.loads(f.read())
                stats = RolloutStats()
                for one in body["files"].values():
                    stats += RolloutStats.from_json(one)
            except (OSError, ValueError, KeyError, AttributeError) as e:
                raise StorageError(f"cannot read the run manifest {info.path!r}: {e}") from e
            kind, written_at = body.get("kind", "run"), body.get("written_at", "")
            found.append(ManifestInfo(info.base_name, kind, written_at, len(body["files"]), stats))
        return found
