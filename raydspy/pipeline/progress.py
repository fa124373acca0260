"""`RunProgress`: a run so far, as its driver sees it, added up from the committer's batches."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from raydspy.core.stats import RolloutStats

__all__ = ["RunProgress"]


@dataclass
class RunProgress:
    """The run so far, as the driver sees it (passed to ``on_progress`` after each batch).

    Attributes:
        planned: rollouts this job consists of (valid examples × n).
        resumed: of those, rollouts committed before this run started.
        stats: the `RolloutStats` of what this run committed (``deferred``: rollouts the teacher
            never answered, not committed; the next run does them).
        files: part files this run committed.
        started: ``time.monotonic()`` at the start of the rollouts.
    """

    planned: int
    resumed: int
    stats: RolloutStats = field(default_factory=RolloutStats)
    files: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def committed(self) -> int:
        """Rollouts this run committed (error rows included)."""
        return self.stats.rows

    @property
    def errors(self) -> int:
        return self.stats.error_rows

    @property
    def deferred(self) -> int:
        return self.stats.deferred

    @property
    def mean_reward(self) -> float | None:
        return self.stats.mean_reward

    @property
    def finished(self) -> int:
        """Rollouts finished in this run, committed or deferred."""
        return self.stats.finished

    @property
    def remaining(self) -> int:
        return self.planned - self.resumed - self.finished

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def add(self, row: Mapping[str, Any]) -> None:
        """Add one `raydspy.pipeline.committer.BATCH_STATS` row."""
        self.stats += RolloutStats.from_json(row["stats"])
        if row["file"]:
            self.files.append(row["file"])
