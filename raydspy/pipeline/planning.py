"""Which rollouts a run makes: each valid example's n rollouts, less those an earlier run of the
job committed, planned on Ray Data so that no list of ids grows on the driver.

    examples ─ map_batches(PlanWorker)                 one row per rollout: the example's columns and
                                                       its example id, rollout index and rollout id
             ─ join(committed ids, "left_anti")        only when the output holds rollouts already: a
                                                       hash join on Ray Data (each side partitioned by
                                                       rollout id), not a set broadcast to every worker

The join is a barrier: a resumed run plans every rollout before its first one starts (seconds for
a million; what is left is then streamed as usual). A fresh run has nothing to join and streams
from the first block.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import ray
import ray.data

from raydspy.core.runner import RolloutPlanner
from raydspy.core.storage import Location
from raydspy.pipeline.config import HELPER_NUM_CPUS, PipelineConfig

__all__ = ["PlanWorker", "PLAN_COLUMNS", "EXAMPLE_ID", "ROLLOUT_INDEX", "ROLLOUT_ID", "plan_rollouts"]

#: A planned rollout's extra columns beside the example's own (dropped before the program sees it).
EXAMPLE_ID, ROLLOUT_INDEX, ROLLOUT_ID = "__raydspy_example_id", "__raydspy_rollout_index", "__raydspy_rollout_id"
PLAN_COLUMNS = (EXAMPLE_ID, ROLLOUT_INDEX, ROLLOUT_ID)

#: Planned rollouts per hash partition of the resume join (a partition is joined in one
#: aggregator's memory: ids and example columns of this many rows).
JOIN_ROWS_PER_PARTITION = 200_000


class PlanWorker:
    """A Ray Data actor: a block of examples in, one row per planned rollout out: the example's
    columns, repeated, plus its example id, rollout index and rollout id (the `PLAN_COLUMNS`).

    Rows whose example id is in ``excluded`` (invalid input) are left out; it may be a set or an
    ``ObjectRef`` of one, fetched once.
    """

    def __init__(self, planner: RolloutPlanner, n: int, excluded: Any = frozenset()):
        self.planner, self.n = planner, n
        self.excluded = ray.get(excluded) if isinstance(excluded, ray.ObjectRef) else excluded

    def __call__(self, block: pa.Table) -> pa.Table:
        n = self.n
        jobs = self.planner.plan(block.to_pylist(), n)
        keep = [k for k, job in enumerate(jobs) if job.example_id not in self.excluded]
        planned = block.take(pa.array([k // n for k in keep], pa.int64()))  # job k is of example k // n
        columns = {
            EXAMPLE_ID: pa.array([jobs[k].example_id for k in keep], pa.string()),
            ROLLOUT_INDEX: pa.array([jobs[k].rollout_index for k in keep], pa.int32()),
            ROLLOUT_ID: pa.array([jobs[k].rollout_id for k in keep], pa.string()),
        }
        for name, column in columns.items():
            planned = planned.append_column(name, column)
        return planned


def plan_rollouts(
    dataset: ray.data.Dataset,
    planner: RolloutPlanner,
    config: PipelineConfig,
    *,
    excluded: frozenset[str],
    output: Location,
    committed: list[str],
    planned_count: int,
) -> ray.data.Dataset:
    """The rollouts still to make, as a (lazy) dataset of `PlanWorker` rows.

    Args:
        dataset: the examples.
        planner: names the rollouts (the runner's `RolloutPlanner`).
        config: the run (``n``, ``plan_size``).
        excluded: example ids of invalid rows.
        output: the run's output; ``committed`` its part files (`committed_files`).
        planned_count: valid examples × n (sizes the join's partitions).
    """
    planned = dataset.map_batches(
        PlanWorker,
        fn_constructor_kwargs={"planner": planner, "n": config.n, "excluded": ray.put(frozenset(excluded))},
        batch_size=config.plan_size,
        batch_format="pyarrow",
        num_cpus=HELPER_NUM_CPUS,
        compute=ray.data.ActorPoolStrategy(size=1),
    )
    if not committed:
        return planned
    # Ray Data pushes the projection into the reader: only the id column is read.
    done = ray.data.read_parquet(committed, filesystem=output.filesystem).select_columns(["rollout_id"])
    partitions = max(1, min(64, -(-planned_count // JOIN_ROWS_PER_PARTITION)))
    return planned.join(done, "left_anti", partitions, on=(ROLLOUT_ID,), right_on=("rollout_id",))
