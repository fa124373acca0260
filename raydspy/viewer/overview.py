"""What a run page shows above its rollouts: an `Overview`, the run's `RolloutStats` (rows,
errors by type, mean reward, format compliance: counted as every other report counts them) and
the `RewardSpread` its reward histogram is drawn from, the viewer's own count.

Both are counted on the `OVERVIEW_COLUMNS` only, one record batch at a time, once per part file
(`raydspy.pipeline.part_counts.PartCounts`; committed parts never change), and the files' counts
are added: a live run's page reads only the parts committed since it last looked.

The histogram has one bar per distinct reward while there are at most `MAX_EXACT_BARS` of them
(the usual case: a mean of a few 0/1 rewards takes few values), so filtering on a bar selects
exactly its rows; above that, equal-width bins between the smallest and largest reward (one more
pass over the ``reward`` column, `RewardSpread.binned_bars`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raydspy.core.stats import RolloutStats
from raydspy.pipeline.part_counts import PartCounts

__all__ = ["Bar", "RewardSpread", "Overview", "overview_counts", "MAX_EXACT_BARS", "OVERVIEW_COLUMNS"]

#: Up to this many distinct rewards, the histogram has one bar per value.
MAX_EXACT_BARS = 24

#: The columns an overview reads.
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
class RewardSpread:
    """How the combined rewards of rollout rows spread; add two with ``+``.

    Attributes:
        low, high: the smallest and largest reward (None without one).
        exact: reward value → rows, or None once there are more than `MAX_EXACT_BARS` values.
    """

    low: float | None = None
    high: float | None = None
    exact: dict[float, int] | None = field(default_factory=dict)

    @classmethod
    def of(cls, rewards: pa.Array | pa.ChunkedArray) -> RewardSpread:
        """The spread of a ``reward`` column (nulls are not counted)."""
        rewards = rewards.drop_null()
        if not len(rewards):
            return cls()
        extremes = pc.min_max(rewards).as_py()
        values = {row["values"]: row["counts"] for row in pc.value_counts(rewards).to_pylist()}
        return cls(extremes["min"], extremes["max"], values if len(values) <= MAX_EXACT_BARS else None)

    def __add__(self, other: RewardSpread) -> RewardSpread:
        exact = None
        if self.exact is not None and other.exact is not None:
            exact = dict(Counter(self.exact) + Counter(other.exact))
            exact = exact if len(exact) <= MAX_EXACT_BARS else None
        lows = [x for x in (self.low, other.low) if x is not None]
        highs = [x for x in (self.high, other.high) if x is not None]
        return RewardSpread(min(lows) if lows else None, max(highs) if highs else None, exact)

    def exact_bars(self) -> list[Bar] | None:
        """One bar per reward value, or None when there are too many values (use `binned_bars`)."""
        if self.exact is None:
            return None
        return [Bar(value, value, count) for value, count in sorted(self.exact.items())]

    def binned_bars(self, rewards: Iterable[pa.Array], bins: int = 20) -> list[Bar]:
        """``bins`` equal-width bars from ``low`` to ``high`` over the reward arrays ``rewards``
        (every row's, nulls allowed); the last bin includes its upper edge."""
        if self.low is None or self.high is None:
            return []
        edges = np.linspace(self.low, self.high, bins + 1)
        counts = np.zeros(bins, dtype=np.int64)
        for array in rewards:
            counts += np.histogram(array.drop_null().to_numpy(), edges)[0]
        return [Bar(float(edges[i]), float(edges[i + 1]), int(counts[i])) for i in range(bins)]


@dataclass(frozen=True)
class Overview:
    """The counts a run page shows: ``stats`` and the reward ``spread``; add two with ``+``."""

    stats: RolloutStats = field(default_factory=RolloutStats)
    spread: RewardSpread = field(default_factory=RewardSpread)

    @classmethod
    def of(cls, table: pa.Table) -> Overview:
        """The overview of rollout rows holding the `OVERVIEW_COLUMNS`."""
        return cls(RolloutStats.of(table), RewardSpread.of(table.column("reward")))

    def __add__(self, other: Overview) -> Overview:
        return Overview(self.stats + other.stats, self.spread + other.spread)


def overview_counts() -> PartCounts[Overview]:
    """A per-file cache of overviews: one `OutputView`'s, or shared by a viewer's views and the
    service's run status (`raydspy.service.dispatch.RunManager.counts`)."""
    return PartCounts(Overview.of, OVERVIEW_COLUMNS)
