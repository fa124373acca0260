"""What a run produced, read back from the rollout files themselves (not from counters kept on
the side, so the summary is true of what is on storage)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from raydspy.rollouts import ROLLOUT_SCHEMA
from raydspy.storage import Location

__all__ = ["RunSummary", "summarize", "read_rollouts"]


@dataclass
class RunSummary:
    """Counts and rates over a set of rollout files.

    Attributes:
        rows: rollouts written.
        error_rows: rollouts whose ``error`` is set.
        errors_by_type: error type (the text before the first colon) → count.
        mean_reward: mean of ``reward`` over rows that have one; None if none has.
        reward_means: each named reward's mean over the rows where it has a value.
        format_rate: share of rows with ``format_ok`` true, over rows where it is known.
        completion_tokens: completion tokens generated, over every traced call.
        elapsed_s: wall time of the run (set by the caller; 0 when unknown).
        files: the files counted.
        output_uri: where they are.
    """

    rows: int = 0
    error_rows: int = 0
    errors_by_type: dict[str, int] = field(default_factory=dict)
    mean_reward: float | None = None
    reward_means: dict[str, float] = field(default_factory=dict)
    format_rate: float | None = None
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    files: list[str] = field(default_factory=list)
    output_uri: str = ""

    @property
    def rollouts_per_s(self) -> float | None:
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else None

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "error_rows": self.error_rows,
            "errors_by_type": self.errors_by_type,
            "mean_reward": self.mean_reward,
            "reward_means": self.reward_means,
            "format_rate": self.format_rate,
            "completion_tokens": self.completion_tokens,
            "elapsed_s": round(self.elapsed_s, 3),
            "rollouts_per_s": self.rollouts_per_s,
            "files": len(self.files),
            "output_uri": self.output_uri,
        }


def read_rollouts(location: Location, files: list[str] | None = None) -> pa.Table:
    """Every rollout row under ``location`` (or only ``files``), as one `ROLLOUT_SCHEMA` table."""
    source = files if files is not None else location.path
    dataset = pads.dataset(source, filesystem=location.filesystem, format="parquet", schema=ROLLOUT_SCHEMA,
                           exclude_invalid_files=False, ignore_prefixes=[".", "_"])
    return dataset.to_table()


def summarize(table: pa.Table, *, elapsed_s: float = 0.0, files: list[str] | None = None, output_uri: str = "") -> RunSummary:
    """Summarise a table of rollout rows."""
    errors = [e for e in table.column("error").to_pylist() if e is not None]
    by_type = collections.Counter(e.split(":", 1)[0] for e in errors)
    rewards = table.column("reward")
    fmt = table.column("format_ok").drop_null()
    tokens = pc.sum(pc.list_flatten(table.column("trace")).combine_chunks().field("completion_tokens")).as_py() if table.num_rows else 0
    named: dict[str, list[float]] = collections.defaultdict(list)
    for pairs in table.column("rewards").to_pylist():
        for name, value in pairs or []:
            named[name].append(value)
    return RunSummary(
        rows=table.num_rows,
        error_rows=len(errors),
        errors_by_type=dict(by_type.most_common()),
        mean_reward=pc.mean(rewards).as_py() if rewards.null_count < len(rewards) else None,
        reward_means={name: sum(v) / len(v) for name, v in sorted(named.items())},
        format_rate=pc.mean(fmt.cast(pa.float64())).as_py() if len(fmt) else None,
        completion_tokens=int(tokens or 0),
        elapsed_s=elapsed_s,
        files=list(files or []),
        output_uri=output_uri,
    )
