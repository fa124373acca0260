"""Run records persisted as JSON files under a state URI, so a restarted service loses none.

    {state_uri}/runs/{run_id}.json     the `RunRecord` (written whole: local rename, or one PUT)
    {state_uri}/runs/{run_id}.cancel   present once a cancel was requested

Any URI `raydspy.core.storage.resolve` takes works (a local folder, ``s3://``, ``gs://``), so the
records can live beside the rollouts on the cluster's object store.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import pyarrow.fs as pafs
from pydantic import ValidationError

from raydspy.core.storage import StorageOptions, resolve, write_atomic
from raydspy.errors import StorageError
from raydspy.service.runs import RunRecord

__all__ = ["RunStore", "RunNotFound", "RecordUnreadable", "StoreScan"]

logger = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RunNotFound(KeyError):
    """No record for this run id (HTTP 404)."""


class RecordUnreadable(StorageError):
    """A run's record exists but does not parse (written by hand, cut short, or by a version whose
    fields no longer validate): that run alone cannot be answered for (HTTP 503)."""


@dataclass
class StoreScan:
    """Every record that could be read, newest first, and why each other one could not."""

    records: list[RunRecord] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)


class RunStore:
    """Read and write run records under ``state_uri``.

    Raises (every method):
        StorageError: the state URI cannot be read or written.
    """

    def __init__(self, state_uri: str, storage: StorageOptions | None = None):
        self.state_uri = state_uri
        self.storage = storage or StorageOptions()
        self._location = resolve(state_uri, self.storage).child("runs")
        self._fs = self._location.filesystem
        try:
            self._fs.create_dir(self._location.path, recursive=True)
        except OSError as e:
            raise StorageError(f"cannot create the run store at {state_uri!r}: {e}") from e

    def _path(self, run_id: str, suffix: str) -> str:
        if not _ID.match(run_id):
            raise RunNotFound(run_id)
        return self._location.join(f"{run_id}{suffix}")

    def put(self, record: RunRecord) -> None:
        """Write ``record`` whole (replacing any earlier version)."""
        self._path(record.id, ".json")
        write_atomic(self._location, f"{record.id}.json", record.model_dump_json().encode())

    def get(self, run_id: str) -> RunRecord:
        """The record of ``run_id``.

        Raises:
            RunNotFound: no such run.
            RecordUnreadable: the record is there but does not parse.
        """
        path = self._path(run_id, ".json")
        try:
            with self._fs.open_input_stream(path) as f:
                data = f.read()
        except FileNotFoundError as e:
            raise RunNotFound(run_id) from e
        except OSError as e:
            if self._fs.get_file_info(path).type == pafs.FileType.NotFound:
                raise RunNotFound(run_id) from e
            raise StorageError(f"cannot read run {run_id!r} under {self.state_uri!r}: {e}") from e
        try:
            return RunRecord.model_validate_json(data)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:3])
            raise RecordUnreadable(f"the record of run {run_id!r} does not parse: {problems}") from e

    def update(self, run_id: str, **changes) -> RunRecord:
        """Read, change and write back ``run_id``'s record (only its single writer may call this)."""
        record = self.get(run_id).model_copy(update=changes)
        self.put(record)
        return record

    def ids(self) -> list[str]:
        """Every run id, newest first (ids start with their creation time)."""
        try:
            infos = self._fs.get_file_info(pafs.FileSelector(self._location.path, allow_not_found=True))
        except OSError as e:
            raise StorageError(f"cannot list runs under {self.state_uri!r}: {e}") from e
        names = [i.base_name for i in infos if i.type == pafs.FileType.File]
        return sorted(
            (n[: -len(".json")] for n in names if n.endswith(".json") and not n.startswith(".")), reverse=True
        )

    def scan(self) -> StoreScan:
        """Every record, newest first; records that vanished while listing are left out, and those
        that cannot be read are logged and listed apart, so one bad file never hides the others.

        Raises:
            StorageError: the store itself cannot be listed.
        """
        scan = StoreScan()
        for run_id in self.ids():
            try:
                scan.records.append(self.get(run_id))
            except RunNotFound:
                continue
            except StorageError as e:
                logger.warning("run %s: skipped: %s", run_id, e)
                scan.unreadable[run_id] = str(e)
        return scan

    def request_cancel(self, run_id: str) -> None:
        """Leave the cancel marker the run's worker looks for."""
        self._path(run_id, ".cancel")
        write_atomic(self._location, f"{run_id}.cancel", b"cancel\n")

    def cancel_requested(self, run_id: str) -> bool:
        try:
            return self._fs.get_file_info(self._path(run_id, ".cancel")).type == pafs.FileType.File
        except OSError as e:
            raise StorageError(f"cannot read run {run_id!r} under {self.state_uri!r}: {e}") from e
