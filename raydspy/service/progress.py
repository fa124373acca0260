"""A run's preview, read from the rollout part files it has committed (`preview_rows`).

The Parquet parts under the output URI are the truth (`raydspy.pipeline.commits`): a run's counters are
never kept on the side. Its status counts them through `raydspy.pipeline.part_counts.PartCounts`
(each part read once, on a few columns; `raydspy.service.dispatch.RunManager.counts`).
"""

from __future__ import annotations

import json
from typing import Any

from raydspy.core.storage import StorageOptions, resolve
from raydspy.pipeline.commits import committed_files, read_committed

__all__ = ["preview_rows"]


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
