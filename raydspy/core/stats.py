"""`RolloutStats`: the counts raydspy reports over rollout rows, computed one way.

Every figure a user sees about rollouts comes from this type: the committer counts each batch
it commits, the driver adds the batches up for its progress bar and error budget, the run
summary adds up the part files, the service's status and the viewer add up the parts they have
read (`raydspy.pipeline.part_counts`). Two reports of the same rows can therefore never disagree
on what an error (`error_type`), a reward mean or a token count is.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["RolloutStats", "ACCEPT_REWARD", "error_type"]

#: The reward at which a rollout counts as accepted: `raydspy export sft`'s default threshold
#: (full marks only), so a summary or a dataset card can say how much of a run that export keeps.
ACCEPT_REWARD = 1.0


def error_type(error: str | pa.Array | pa.ChunkedArray | pc.Expression) -> Any:
    """The type of an error: the ``error`` text before its first colon (``"AdapterParseError: no
    city"`` is of type ``AdapterParseError``; ``"RewardError"`` of type ``RewardError``). The one
    rule for every count and filter of error types.

    Args:
        error: one error text; or a pyarrow array of them (nulls stay null); or a dataset
            expression (``pc.field("error")``), so that a Parquet scan filters on the same rule.

    Returns:
        The type, of the same kind as ``error`` (str, array or expression).
    """
    if isinstance(error, str):
        return error.split(":", 1)[0]
    return pc.list_element(pc.split_pattern(error, ":", max_splits=1), 0)


@dataclass(frozen=True)
class RolloutStats:
    """Counts over a set of rollout rows (`ROLLOUT_SCHEMA`). Add two with ``+``.

    Attributes:
        rows: rollout rows counted (error rows included).
        errors_by_type: error type (the ``error`` text before its first colon) → rows.
        deferred: rollouts the teacher never answered, so not written (the next run does them).
        reward_sum, reward_count: sum and count of the combined ``reward`` where set.
        reward_accepted: rows whose combined ``reward`` is at least `ACCEPT_REWARD`.
        named_rewards: each named reward → ``(sum, count)`` over the rows where it has a value.
        format_ok, format_count: rows with ``format_ok`` true, and rows where it is known.
        completion_tokens: completion tokens over every traced LM call.
        token_rows: rows that hold token-level traces (``trace_tokens`` set).
        last_error: the last error row's full ``error`` text, or None.
    """

    rows: int = 0
    errors_by_type: dict[str, int] = field(default_factory=dict)
    deferred: int = 0
    reward_sum: float = 0.0
    reward_count: int = 0
    reward_accepted: int = 0
    named_rewards: dict[str, tuple[float, int]] = field(default_factory=dict)
    format_ok: int = 0
    format_count: int = 0
    completion_tokens: int = 0
    token_rows: int = 0
    last_error: str | None = None

    @classmethod
    def of(cls, table: pa.Table, *, deferred: int = 0) -> RolloutStats:
        """The counts of a table of rollout rows. Columns it lacks are not counted (the service's
        status and the viewer read only ``reward``, ``error`` and ``format_ok``); ``deferred`` is passed through."""
        names = set(table.column_names)
        stats: dict[str, Any] = {"rows": table.num_rows, "deferred": deferred}
        errors = table.column("error").drop_null() if "error" in names else None
        if errors is not None and len(errors):
            counts = pc.value_counts(error_type(errors)).to_pylist()  # in order of first appearance
            stats.update(
                errors_by_type={row["values"]: row["counts"] for row in counts},
                last_error=errors[-1].as_py(),
            )
        if "reward" in names:
            rewards = table.column("reward").drop_null()
            stats.update(
                reward_sum=float(pc.sum(rewards).as_py() or 0.0),
                reward_count=len(rewards),
                reward_accepted=int(pc.sum(pc.greater_equal(rewards, ACCEPT_REWARD).cast(pa.int64())).as_py() or 0),
            )
        if "format_ok" in names:
            known = table.column("format_ok").drop_null()
            stats.update(format_ok=int(pc.sum(known.cast(pa.int64())).as_py() or 0), format_count=len(known))
        if "trace" in names:
            calls = pc.list_flatten(table.column("trace"))
            stats["completion_tokens"] = (
                int(pc.sum(pc.struct_field(calls, "completion_tokens")).as_py() or 0) if len(calls) else 0
            )
        if "trace_tokens" in names:
            stats["token_rows"] = table.num_rows - table.column("trace_tokens").null_count
        if "rewards" in names:
            named: dict[str, list[float]] = {}
            for pairs in table.column("rewards").to_pylist():
                for name, value in pairs or []:
                    if value is not None:
                        total = named.setdefault(name, [0.0, 0])
                        total[0] += value
                        total[1] += 1
            stats["named_rewards"] = {name: (s, int(c)) for name, (s, c) in named.items()}
        return cls(**stats)

    def __add__(self, other: RolloutStats) -> RolloutStats:
        named = dict(self.named_rewards)
        for name, (s, c) in other.named_rewards.items():
            s0, c0 = named.get(name, (0.0, 0))
            named[name] = (s0 + s, c0 + c)
        return RolloutStats(
            rows=self.rows + other.rows,
            errors_by_type=dict(Counter(self.errors_by_type) + Counter(other.errors_by_type)),
            deferred=self.deferred + other.deferred,
            reward_sum=self.reward_sum + other.reward_sum,
            reward_count=self.reward_count + other.reward_count,
            reward_accepted=self.reward_accepted + other.reward_accepted,
            named_rewards=named,
            format_ok=self.format_ok + other.format_ok,
            format_count=self.format_count + other.format_count,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            token_rows=self.token_rows + other.token_rows,
            last_error=other.last_error or self.last_error,
        )

    @property
    def error_rows(self) -> int:
        return sum(self.errors_by_type.values())

    @property
    def errors_by_count(self) -> list[tuple[str, int]]:
        """``(error type, rows)``, most frequent first (ties by type)."""
        return sorted(self.errors_by_type.items(), key=lambda kv: (-kv[1], kv[0]))

    @property
    def finished(self) -> int:
        """Rollouts finished: written, or deferred."""
        return self.rows + self.deferred

    @property
    def error_rate(self) -> float:
        """Share of finished rollouts that failed (error rows and deferred); 0.0 when none finished."""
        return (self.error_rows + self.deferred) / self.finished if self.finished else 0.0

    @property
    def mean_reward(self) -> float | None:
        return self.reward_sum / self.reward_count if self.reward_count else None

    @property
    def reward_means(self) -> dict[str, float]:
        """Each named reward's mean, by name."""
        return {name: s / c for name, (s, c) in sorted(self.named_rewards.items()) if c}

    @property
    def format_rate(self) -> float | None:
        """Share of rows with ``format_ok`` true, over rows where it is known."""
        return self.format_ok / self.format_count if self.format_count else None

    def to_json(self) -> str:
        """One JSON object (how the committer hands a batch's counts to the driver through Ray Data)."""
        return json.dumps({**self.__dict__, "named_rewards": {k: list(v) for k, v in self.named_rewards.items()}})

    @classmethod
    def from_json(cls, text: str) -> RolloutStats:
        """The counts `to_json` wrote; a count it lacks (written before that count existed) is 0."""
        data = json.loads(text)
        data["named_rewards"] = {k: (float(s), int(c)) for k, (s, c) in data["named_rewards"].items()}
        return cls(**data)
