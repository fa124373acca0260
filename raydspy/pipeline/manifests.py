"""Run manifests: what each run of a job committed, so that a run's summary adds counts up
instead of reading every part file back.

    {output}/_runs/{kind}-{UTC stamp}-{8 hex}.json
    {"kind": "run" | "recovered", "written_at": "...", "files": ["part-….parquet", ...],
     "stats": RolloutStats JSON}

The driver writes one when a run ends (finished, stopped or interrupted), once its commit gate
has drained, from the gate's own per-file counts (`raydspy.pipeline.committer.CommitGate`). A
run whose driver died writes none; the next run finds the parts no manifest lists, reads those
only, and writes a ``recovered`` manifest for them, so each part is read back at most once.
File names are relative to the output; the folder starts with ``_``, so rollout readers skip it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from raydspy.core.stats import RolloutStats
from raydspy.core.storage import Location, write_atomic
from raydspy.errors import StorageError

__all__ = ["MANIFEST_DIR", "Manifests", "read_manifests", "write_manifest", "relative_name"]

MANIFEST_DIR = "_runs"


def relative_name(location: Location, path: str) -> str:
    """``path`` (a committed file, in the filesystem's syntax) relative to ``location``."""
    prefix = location.path.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


@dataclass
class Manifests:
    """What the manifests under an output say: the files they list and their counts added up."""

    files: set[str] = field(default_factory=set)
    stats: RolloutStats = field(default_factory=RolloutStats)


def read_manifests(location: Location) -> Manifests:
    """Every manifest under ``location``, added up (files listed twice are counted once: the
    first manifest, in name order, that lists a file counts it).

    Raises:
        StorageError: the manifests cannot be listed or read.
    """
    folder = location.child(MANIFEST_DIR)
    selector = pafs.FileSelector(folder.path, allow_not_found=True)
    found = Manifests()
    try:
        infos = sorted(
            (i for i in location.filesystem.get_file_info(selector) if i.path.endswith(".json")),
            key=lambda i: i.path,
        )
        for info in infos:
            with location.filesystem.open_input_stream(info.path) as f:
                manifest = json.loads(f.read())
            files = set(manifest["files"])
            if files & found.files:  # already counted by an earlier manifest: count none twice
                continue
            found.files |= files
            found.stats += RolloutStats.from_json(manifest["stats"])
    except (OSError, ValueError, KeyError) as e:
        raise StorageError(f"cannot read the run manifests under {folder.uri!r}: {e}") from e
    return found


def write_manifest(location: Location, files: Iterable[str], stats: RolloutStats, *, kind: str = "run") -> str:
    """Write a manifest listing ``files`` (relative names) with their counts ``stats``.

    Returns:
        The manifest's path.

    Raises:
        StorageError: the write failed.
    """
    now = dt.datetime.now(dt.UTC)
    body = {"kind": kind, "written_at": now.isoformat(), "files": sorted(files), "stats": stats.to_json()}
    name = f"{kind}-{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}.json"
    return write_atomic(location.child(MANIFEST_DIR), name, json.dumps(body).encode())
