"""Run manifests: what each run of a job committed, so that a run's summary adds counts up
instead of reading every part file back.

    {output}/_runs/{kind}-{UTC stamp}-{8 hex}.json
    {"kind": "run" | "recovered", "written_at": "...",
     "files": {"part-….parquet": RolloutStats JSON, ...}}

The driver writes one when a run ends (finished, stopped or interrupted), once its commit gate
has drained, from the gate's own per-file counts (`raydspy.pipeline.committer.CommitGate`). A
run whose driver died writes none; the next run finds the parts no manifest lists, reads those
only, and writes a ``recovered`` manifest for them, so each part is read back at most once.
Counts are kept per file, so a part deleted by hand (to collect it again) stops counting.
File names are relative to the output; the folder starts with ``_``, so rollout readers skip it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from raydspy.core.stats import RolloutStats
from raydspy.core.storage import Location, write_atomic
from raydspy.errors import StorageError

__all__ = ["MANIFEST_DIR", "Manifests", "read_manifest", "read_manifests", "write_manifest", "relative_name"]

MANIFEST_DIR = "_runs"


def relative_name(location: Location, path: str) -> str:
    """``path`` (a committed file, in the filesystem's syntax) relative to ``location``."""
    prefix = location.path.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


@dataclass
class Manifests:
    """What the manifests under an output say of the files still there: which they list, and
    those files' counts added up."""

    files: set[str] = field(default_factory=set)
    stats: RolloutStats = field(default_factory=RolloutStats)


def read_manifests(location: Location, present: set[str]) -> Manifests:
    """Every manifest under ``location``, added up over the files in ``present`` (relative
    names of the parts listed now; a file two manifests list counts once).

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
            for name, stats in manifest["files"].items():
                if name in present and name not in found.files:
                    found.files.add(name)
                    found.stats += RolloutStats.from_json(stats)
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise StorageError(f"cannot read the run manifests under {folder.uri!r}: {e}") from e
    return found


def read_manifest(location: Location, path: str) -> dict[str, RolloutStats]:
    """One manifest (``path``, as `write_manifest` returned it): relative name of each part file
    it lists → that file's counts, in name order.

    Raises:
        StorageError: the manifest cannot be read or is not one.
    """
    try:
        with location.filesystem.open_input_stream(path) as f:
            manifest = json.loads(f.read())
        return {name: RolloutStats.from_json(stats) for name, stats in sorted(manifest["files"].items())}
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        raise StorageError(f"cannot read the run manifest {path!r} under {location.uri!r}: {e}") from e


def write_manifest(location: Location, files: Mapping[str, RolloutStats], *, kind: str = "run") -> str:
    """Write a manifest of ``files``: relative name → that file's counts.

    Returns:
        The manifest's path.

    Raises:
        StorageError: the write failed.
    """
    now = dt.datetime.now(dt.UTC)
    body = {
        "kind": kind,
        "written_at": now.isoformat(),
        "files": {name: stats.to_json() for name, stats in sorted(files.items())},
    }
    name = f"{kind}-{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}.json"
    return write_atomic(location.child(MANIFEST_DIR), name, json.dumps(body).encode())
