"""What a run produced: `RunSummary`, of everything committed under an output.

A pipeline run's summary adds up counts: those its commit gate saw land (this run), those the
run manifests of earlier runs list (`raydspy.pipeline.manifests`), and those of the parts no
manifest lists (a run whose driver died), which are read back, once. Every count is taken from
the rows when they are committed (`RolloutStats.of`), so the summary is true of what is on
storage without reading a million rollouts back; `summarize_committed` reads them all, for a
folder of rollouts whatever wrote it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import pyarrow as pa

from raydspy.core.rollouts import first_per_rollout_id
from raydspy.core.stats import RolloutStats
from raydspy.core.storage import Location
from raydspy.pipeline.commits import committed_files, read_committed
from raydspy.pipeline.manifests import read_manifests, relative_name, write_manifest

__all__ = [
    "RunSummary",
    "Committed",
    "committed_before",
    "summarize",
    "summarize_committed",
    "summarize_run",
    "read_rollouts",
]


@dataclass
class RunSummary:
    """Counts and rates over a set of rollout files.

    Attributes:
        rows: rollouts written.
        error_rows: rollouts whose ``error`` is set.
        errors_by_type: error type (the text before the first colon) → count.
        mean_reward: mean of ``reward`` over rows that have one; None if none has.
        accepted_rows: rows whose ``reward`` is at least `ACCEPT_REWARD` (what ``raydspy export
            sft`` keeps by default).
        reward_means: each named reward's mean over the rows where it has a value.
        format_rate: share of rows with ``format_ok`` true, over rows where it is known.
        completion_tokens: completion tokens generated, over every traced call.
        elapsed_s: wall time of the run (set by the caller; 0 when unknown).
        files: the files counted.
        output_uri: where they are.
        planned: rollouts the run was asked for (valid examples × n); None outside a pipeline run.
        resumed: of those, rollouts already committed before the run started (not run again).
        new_rows: rollouts this run committed.
        deferred: rollouts that failed on an unreachable teacher and were not committed; the
            next run with the same output does them.
        duplicate_rows: repeated rollout ids dropped when reading (should be 0).
        invalid_rows: input rows skipped as invalid (``skip_invalid``), listed in ``invalid_file``.
        stopped: why the run stopped before finishing (error budget, interrupted), else None.
        manifest: the manifest this run wrote under ``_runs/`` (its part files and each one's
            counts: `raydspy.pipeline.manifests`); None when it committed nothing.
    """

    rows: int = 0
    error_rows: int = 0
    errors_by_type: dict[str, int] = field(default_factory=dict)
    mean_reward: float | None = None
    accepted_rows: int = 0
    reward_means: dict[str, float] = field(default_factory=dict)
    format_rate: float | None = None
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    files: list[str] = field(default_factory=list)
    output_uri: str = ""
    planned: int | None = None
    resumed: int = 0
    new_rows: int | None = None
    deferred: int = 0
    duplicate_rows: int = 0
    invalid_rows: int = 0
    invalid_file: str | None = None
    stopped: str | None = None
    manifest: str | None = None

    @property
    def rollouts_per_s(self) -> float | None:
        """Rollouts this run made per second of its wall time."""
        made = self.rows if self.new_rows is None else self.new_rows
        return made / self.elapsed_s if self.elapsed_s > 0 else None

    @property
    def missing(self) -> int | None:
        """Planned rollouts not committed yet (0 when the output is complete)."""
        return None if self.planned is None else self.planned - self.resumed - (self.new_rows or 0)

    @property
    def complete(self) -> bool:
        return self.stopped is None and not self.missing

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "error_rows": self.error_rows,
            "errors_by_type": self.errors_by_type,
            "mean_reward": self.mean_reward,
            "accepted_rows": self.accepted_rows,
            "reward_means": self.reward_means,
            "format_rate": self.format_rate,
            "completion_tokens": self.completion_tokens,
            "elapsed_s": round(self.elapsed_s, 3),
            "rollouts_per_s": self.rollouts_per_s,
            "files": len(self.files),
            "output_uri": self.output_uri,
            "planned": self.planned,
            "resumed": self.resumed,
            "new_rows": self.new_rows,
            "deferred": self.deferred,
            "missing": self.missing,
            "duplicate_rows": self.duplicate_rows,
            "invalid_rows": self.invalid_rows,
            "invalid_file": self.invalid_file,
            "stopped": self.stopped,
            "manifest": self.manifest,
            "complete": self.complete,
        }


def read_rollouts(location: Location, files: list[str] | None = None) -> pa.Table:
    """Every committed rollout row under ``location`` (or in ``files``), one per rollout id, as
    one `ROLLOUT_SCHEMA` table (see `raydspy.pipeline.commits.read_committed`).

    Raises:
        StorageError: the files cannot be listed or read.
    """
    return read_committed(location, files)[0]


def _summary(stats: RolloutStats, *, elapsed_s: float, files: list[str] | None, output_uri: str) -> RunSummary:
    return RunSummary(
        rows=stats.rows,
        error_rows=stats.error_rows,
        errors_by_type=dict(stats.errors_by_count),
        mean_reward=stats.mean_reward,
        accepted_rows=stats.reward_accepted,
        reward_means=stats.reward_means,
        format_rate=stats.format_rate,
        completion_tokens=stats.completion_tokens,
        elapsed_s=elapsed_s,
        files=list(files or []),
        output_uri=output_uri,
    )


def summarize(
    table: pa.Table, *, elapsed_s: float = 0.0, files: list[str] | None = None, output_uri: str = ""
) -> RunSummary:
    """Summarise a table of rollout rows."""
    return _summary(RolloutStats.of(table), elapsed_s=elapsed_s, files=files, output_uri=output_uri)


def committed_stats(location: Location, files: list[str]) -> tuple[dict[str, RolloutStats], int]:
    """The `RolloutStats` of each of ``files``, read one at a time (memory: one part file), one
    row per rollout id among them; and how many repeated rows were left out.

    Raises:
        StorageError: the files cannot be read.
    """
    stats, seen, duplicates = {}, set(), 0
    for path in files:
        table, _ = read_committed(location, [path])
        table, dropped = first_per_rollout_id(table, seen)
        duplicates += dropped
        stats[path] = RolloutStats.of(table)
    return stats, duplicates


def _total(stats: Iterable[RolloutStats]) -> RolloutStats:
    total = RolloutStats()
    for one in stats:
        total += one
    return total


def summarize_committed(
    location: Location, files: list[str] | None = None, *, elapsed_s: float = 0.0
) -> tuple[RunSummary, int]:
    """Summarise the committed rollouts under ``location`` (or in ``files``) by reading them, one
    file at a time, so memory stays that of one part file however large the output (a
    100,000-row dry run read whole took gigabytes). One row per rollout id, as
    `raydspy.pipeline.commits.read_committed` keeps.

    Returns:
        ``(summary, duplicates_dropped)``.

    Raises:
        StorageError: the files cannot be listed or read.
    """
    files = committed_files(location) if files is None else files
    stats, duplicates = committed_stats(location, files)
    return _summary(_total(stats.values()), elapsed_s=elapsed_s, files=files, output_uri=location.uri), duplicates


@dataclass
class Committed:
    """What an output held when a run started: the counts of its committed rows (from the run
    manifests, and from the parts no manifest listed, read back once) and how many repeated
    rollout ids those parts held."""

    stats: RolloutStats = field(default_factory=RolloutStats)
    duplicates: int = 0


def committed_before(location: Location, files: list[str]) -> Committed:
    """The `Committed` state of ``location``, whose committed parts are ``files``
    (`committed_files`); writes a ``recovered`` manifest for the parts no manifest listed (a run
    whose driver died), so that they are read back once.

    Raises:
        StorageError: the output cannot be read or written.
    """
    earlier = read_manifests(location, {relative_name(location, path) for path in files})
    uncovered = [path for path in files if relative_name(location, path) not in earlier.files]
    recovered, duplicates = committed_stats(location, uncovered)
    if uncovered:
        write_manifest(location, {relative_name(location, p): s for p, s in recovered.items()}, kind="recovered")
    return Committed(earlier.stats + _total(recovered.values()), duplicates)


def summarize_run(location: Location, before: Committed, run_stats: RolloutStats, *, elapsed_s: float) -> RunSummary:
    """The summary of ``location`` once a run has committed rollouts counted ``run_stats`` on top
    of what it held ``before`` (the run's manifest is the commit gate's to write:
    `raydspy.pipeline.committer.CommitGate.report`). No part is read back.

    Raises:
        StorageError: the output cannot be listed.
    """
    total = before.stats + run_stats
    summary = _summary(total, elapsed_s=elapsed_s, files=committed_files(location), output_uri=location.uri)
    return replace(summary, duplicate_rows=before.duplicates)
