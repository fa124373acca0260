"""A run's reward histogram and error breakdown, read in a stream of record batches over only the
``reward``, ``error`` and ``format_ok`` columns, so memory stays that of one batch however many
rollouts the output holds.

Each part file is summed up once (`summarize_batches`; committed parts never change, so the
caller caches the result per file) and the files' sums are added (`Totals.__add__`): a live run's
page reads only the parts committed since it last looked.

The histogram has one bar per distinct reward while there are at most `MAX_EXACT_BARS` of them
(the usual case: a mean of a few 0/1 rewards takes few values), so filtering on a bar selects
exactly its rows; above that, equal-width bins between the smallest and largest reward (one more
pass over the ``reward`` column, `binned_bars`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Bar", "Totals", "summarize_batches", "binned_bars", "MAX_EXACT_BARS", "OVERVIEW_COLUMNS"]

#: Up to this many distinct rewards, the histogram has one bar per value.
MAX_EXACT_BARS = 24

#: The columns a summary reads.
OVERVIEW_COLUMNS = ["reward", "error", "format_ok"]


@dataclass(frozen=True)
class Bar:
    """One bar of the reward histogram: rows with ``low <= reward <= high`` (``low == high`` for
    one exact value; bins of a continuous histogram share their edges)."""

    low: float
    high: float
    count: int

    @property
    def exact(self) -> bool:
        return self.low == self.high

    @property
    def label(self) -> str:
        return f"{self.low:.4g}" if self.exact else f"{self.low:.3g}–{self.high:.3g}"


@dataclass(frozen=True)
class Totals:
    """Sums over rollout rows; add two with ``+``.

    Attributes:
        rows: rollout rows.
        rewarded: rows with a combined reward; ``reward_sum`` their rewards added up.
        low, high: the smallest and largest reward (None without one).
        exact: reward value → rows, or None once there are more than `MAX_EXACT_BARS` values.
        errors: error type (the ``error`` text before its first colon) → rows.
        format_ok, format_known: rows whose every LM call parsed, and rows where that is known.
    """

    rows: int = 0
    rewarded: int = 0
    reward_sum: float = 0.0
    low: float | None = None
    high: float | None = None
    exact: dict[float, int] | None = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    format_ok: int = 0
    format_known: int = 0

    def __add__(self, other: Totals) -> Totals:
        exact = None
        if self.exact is not None and other.exact is not None:
            exact = dict(Counter(self.exact) + Counter(other.exact))
            exact = exact if len(exact) <= MAX_EXACT_BARS else None
        lows = [x for x in (self.low, other.low) if x is not None]
        highs = [x for x in (self.high, other.high) if x is not None]
        return Totals(
            rows=self.rows + other.rows,
            rewarded=self.rewarded + other.rewarded,
            reward_sum=self.reward_sum + other.reward_sum,
            low=min(lows) if lows else None,
            high=max(highs) if highs else None,
            exact=exact,
            errors=dict(Counter(self.errors) + Counter(other.errors)),
            format_ok=self.format_ok + other.format_ok,
            format_known=self.format_known + other.format_known,
        )

    @property
    def mean_reward(self) -> float | None:
        return self.reward_sum / self.rewarded if self.rewarded else None

    @property
    def error_rows(self) -> int:
        return sum(self.errors.values())

    @property
    def errors_by_count(self) -> list[tuple[str, int]]:
        """``(error type, rows)``, most frequent first."""
        return sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0]))

    @property
    def format_rate(self) -> float | None:
        return self.format_ok / self.format_known if self.format_known else None

    def exact_bars(self) -> list[Bar] | None:
        """One bar per reward value, or None when there are too many values (use `binned_bars`)."""
        if self.exact is None:
            return None
        return [Bar(value, value, count) for value, count in sorted(self.exact.items())]


def _error_types(errors: pa.Array) -> Counter:
    errors = errors.drop_null()
    if not len(errors):
        return Counter()
    types = pc.list_element(pc.split_pattern(errors, ":", max_splits=1), 0)
    return Counter({row["values"]: row["counts"] for row in pc.value_counts(types).to_pylist()})


def summarize_batches(batches: Iterable[pa.RecordBatch]) -> Totals:
    """The `Totals` of record batches holding the `OVERVIEW_COLUMNS`."""
    total = Totals()
    for batch in batches:
        known = batch.column("format_ok").drop_null()
        rewards = batch.column("reward").drop_null()
        one = Totals(
            rows=batch.num_rows,
            errors=dict(_error_types(batch.column("error"))),
            format_known=len(known),
            format_ok=int(pc.sum(known.cast(pa.int64())).as_py() or 0),
        )
        if len(rewards):
            extremes = pc.min_max(rewards).as_py()
            values = {row["values"]: row["counts"] for row in pc.value_counts(rewards).to_pylist()}
            one = Totals(
                rows=one.rows,
                rewarded=len(rewards),
                reward_sum=float(pc.sum(rewards).as_py()),
                low=extremes["min"],
                high=extremes["max"],
                exact=values if len(values) <= MAX_EXACT_BARS else None,
                errors=one.errors,
                format_known=one.format_known,
                format_ok=one.format_ok,
            )
        total = total + one
    return total


def binned_bars(totals: Totals, rewards: Iterable[pa.Array], bins: int = 20) -> list[Bar]:
    """``bins`` equal-width bars from ``totals.low`` to ``totals.high`` over the reward arrays
    ``rewards`` (every row's, nulls allowed); the last bin includes its upper edge."""
    if not totals.rewarded or totals.low is None or totals.high is None:
        return []
    edges = np.linspace(totals.low, totals.high, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    for array in rewards:
        counts += np.histogram(array.drop_null().to_numpy(), edges)[0]
    return [Bar(float(edges[i]), float(edges[i + 1]), int(counts[i])) for i in range(bins)]
