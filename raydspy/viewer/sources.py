"""Where the viewer's runs come from: the service's run manager, or output folders on disk or
in object storage (``raydspy view OUTPUT``). Both give `RunView` rows and an `OutputView` per run;
the views of one source share one per-file cache of counts (the service's: its run status's too).

A folder source shows OUTPUT itself as one run when it holds rollout files (or run manifests),
else each of its sub-folders that does (``raydspy view rollouts/`` after ``raydspy demo`` and
``raydspy demo --task orders``). A folder has no run record, so its state is read from the files:
``WRITING`` while a part file is newer than the dataset card (a run writes its card when it
ends, after its last commit), ``WRITTEN`` otherwise.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import threading
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from raydspy.core.storage import StorageOptions, resolve
from raydspy.errors import StorageError
from raydspy.pipeline.manifests import MANIFEST_DIR
from raydspy.pipeline.part_counts import PartCounts
from raydspy.viewer.output import OutputView
from raydspy.viewer.overview import Overview, overview_counts

__all__ = ["RunView", "RunSource", "ServiceRuns", "FolderRuns", "RunUnknown"]


class RunUnknown(KeyError):
    """No run of that id (HTTP 404)."""


@dataclass
class RunView:
    """One run as the runs list and a run page's header show it."""

    id: str
    output_uri: str
    state: str
    terminal: bool
    done: int
    planned: int | None
    errors: int
    mean_reward: float | None
    program: str | None = None
    created_at: dt.datetime | None = None
    message: str | None = None
    rollouts_per_s: float | None = None


class RunSource:
    """The runs a viewer shows, and a cached `OutputView` of each run's output.

    Args:
        storage: endpoint options of an S3-compatible store.
        counts: the per-file cache of overviews the views share (a new one by default).
        max_outputs: views kept before the oldest is dropped.
    """

    def __init__(
        self,
        storage: StorageOptions | None = None,
        counts: PartCounts[Overview] | None = None,
        max_outputs: int = 64,
    ):
        self.storage = storage or StorageOptions()
        self.counts = counts or overview_counts()
        self._outputs: dict[str, OutputView] = {}
        self._lock = threading.Lock()
        self._max_outputs = max_outputs

    def runs(self) -> list[RunView]:
        raise NotImplementedError

    def run(self, run_id: str) -> RunView:
        """Raises: RunUnknown: no such run."""
        raise NotImplementedError

    def output(self, run: RunView) -> OutputView:
        with self._lock:
            view = self._outputs.get(run.output_uri)
            if view is None:
                if len(self._outputs) >= self._max_outputs:
                    self._outputs.pop(next(iter(self._outputs)))
                view = self._outputs[run.output_uri] = OutputView(run.output_uri, self.storage, self.counts)
            return view


class ServiceRuns(RunSource):
    """The runs of the HTTP service's `raydspy.service.dispatch.RunManager` (whose per-file
    counts, which its run status reads, the run pages read too)."""

    def __init__(self, manager: Any):
        super().__init__(manager.storage, manager.counts)
        self.manager = manager

    @staticmethod
    def _view(status: Any) -> RunView:
        return RunView(
            id=status.id,
            output_uri=status.output_uri,
            state=status.state.value,
            terminal=status.state.terminal,
            done=status.rollouts_done or 0,
            planned=status.rollouts_total,
            errors=status.errors or 0,
            mean_reward=status.mean_reward,
            program=status.program,
            created_at=status.created_at,
            message=f"cannot count its rollouts: {status.output_error}" if status.output_error else status.message,
            rollouts_per_s=status.rollouts_per_s,
        )

    def runs(self) -> list[RunView]:
        return [self._view(s) for s in self.manager.list().runs]

    def run(self, run_id: str) -> RunView:
        try:
            return self._view(self.manager.status(run_id))
        except KeyError as e:  # the store's RunNotFound
            raise RunUnknown(run_id) from e


def _listing(fs: pafs.FileSystem, path: str, recursive: bool = False) -> list[pafs.FileInfo]:
    return fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))


def _is_output(infos: list[pafs.FileInfo]) -> bool:
    return any(
        (i.type == pafs.FileType.File and i.base_name.endswith(".parquet") and not i.base_name.startswith((".", "_")))
        or (i.type == pafs.FileType.Directory and i.base_name == MANIFEST_DIR)
        for i in infos
    )


class FolderRuns(RunSource):
    """The output folder ``uri`` as one run, or its sub-folders that are outputs as one run each.

    Raises:
        StorageError: ``uri`` cannot be listed.
    """

    def __init__(self, uri: str, storage: StorageOptions | None = None):
        super().__init__(storage)
        self.uri = uri.rstrip("/") or uri
        self.location = resolve(self.uri, self.storage)

    def _outputs_now(self) -> dict[str, str]:
        """Run id → output URI, found by listing (new sub-folders appear on the next look)."""
        fs = self.location.filesystem
        try:
            top = _listing(fs, self.location.path)
            if _is_output(top) or not top:
                return {posixpath.basename(self.location.path.rstrip("/")) or "output": self.uri}
            outputs = {}
            for info in sorted(top, key=lambda i: i.base_name):
                if info.type == pafs.FileType.Directory and not info.base_name.startswith((".", "_")):
                    if _is_output(_listing(fs, info.path)):
                        outputs[info.base_name] = f"{self.uri}/{info.base_name}"
        except OSError as e:
            raise StorageError(f"cannot list {self.uri!r}: {e}") from e
        return outputs or {posixpath.basename(self.location.path.rstrip("/")) or "output": self.uri}

    def _view(self, run_id: str, uri: str) -> RunView:
        output = self.output(RunView(run_id, uri, "", False, 0, None, 0, None))
        stats = output.totals().stats
        try:
            infos = _listing(output.location.filesystem, output.location.path, recursive=True)
        except OSError as e:
            raise StorageError(f"cannot list {uri!r}: {e}") from e
        prefix = output.location.path.rstrip("/") + "/"
        kept = [
            i
            for i in infos
            if i.mtime is not None and not any(p.startswith((".", "_")) for p in i.path.removeprefix(prefix).split("/"))
        ]
        parts = [i.mtime for i in kept if i.path.endswith(".parquet")]
        card = [i.mtime for i in kept if i.path == prefix + "README.md"]
        writing = bool(parts) and (not card or max(parts) > max(card))
        return RunView(
            id=run_id,
            output_uri=uri,
            state="WRITING" if writing else "WRITTEN",
            terminal=not writing,
            done=stats.rows,
            planned=None,
            errors=stats.error_rows,
            mean_reward=stats.mean_reward,
            created_at=min(parts) if parts else None,
        )

    def runs(self) -> list[RunView]:
        return [self._view(run_id, uri) for run_id, uri in self._outputs_now().items()]

    def run(self, run_id: str) -> RunView:
        outputs = self._outputs_now()
        if run_id not in outputs:
            raise RunUnknown(run_id)
        return self._view(run_id, outputs[run_id])
