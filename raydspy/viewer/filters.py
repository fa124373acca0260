"""Which rollouts a viewer page shows: a filter on reward, error type and example, as one pyarrow
expression that the Parquet scan evaluates (so only matching rows leave the reader).

Error types are what `raydspy.core.stats.RolloutStats` counts, by the same rule
(`raydspy.core.stats.error_type`: the ``error`` text before its first colon), evaluated by the scan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow.compute as pc

from raydspy.core.stats import error_type

__all__ = ["RolloutFilter", "NO_ERROR", "ANY_ERROR"]

#: ``RolloutFilter.error`` values that are not an error type: rows without an error, rows with any.
NO_ERROR, ANY_ERROR = "(none)", "(any)"


@dataclass(frozen=True)
class RolloutFilter:
    """Rollout rows to show; every field None means every row. Hashable: counts are cached by it.

    Attributes:
        min_reward: rows whose combined ``reward`` is at least this (rows without one are left out).
        max_reward: rows whose ``reward`` is at most this.
        error: an error type, `NO_ERROR` or `ANY_ERROR`.
        example_id: rows of this example only (exact match).
    """

    min_reward: float | None = None
    max_reward: float | None = None
    error: str | None = None
    example_id: str | None = None

    def __post_init__(self):
        for name in ("min_reward", "max_reward"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")

    @property
    def empty(self) -> bool:
        return self == RolloutFilter()

    def expression(self) -> pc.Expression | None:
        """The filter as a pyarrow dataset expression (None: no filter)."""
        parts = []
        if self.min_reward is not None:
            parts.append(pc.field("reward") >= self.min_reward)
        if self.max_reward is not None:
            parts.append(pc.field("reward") <= self.max_reward)
        if self.error == NO_ERROR:
            parts.append(pc.field("error").is_null())
        elif self.error == ANY_ERROR:
            parts.append(pc.field("error").is_valid())
        elif self.error:
            parts.append(error_type(pc.field("error")) == self.error)
        if self.example_id is not None:
            parts.append(pc.field("example_id") == self.example_id)
        if not parts:
            return None
        expression = parts[0]
        for part in parts[1:]:
            expression = expression & part
        return expression

    def params(self) -> dict[str, str]:
        """The filter as the viewer's query parameters (for links that keep it)."""
        values = {
            "min_reward": self.min_reward,
            "max_reward": self.max_reward,
            "error": self.error,
            "example_id": self.example_id,
        }
        return {k: (repr(v) if isinstance(v, float) else v) for k, v in values.items() if v is not None}
