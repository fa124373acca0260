"""Which rollouts a run makes: each valid example's n rollouts, less those an earlier run of the
job committed, planned on Ray Data so that no list of ids grows on the driver.

    examples ─ map_batches(PlanWorker)                 one row per rollout: the example's columns and
                                                       its example id, rollout index and rollout id;
                                                       up to `FILTER_COMMITTED_MAX` committed rollouts,
                                                       those are left out here
             ─ join(committed ids, "left_anti")        above that: a hash join on Ray Data (each side
                                                       partitioned by rollout id)

Both keep the committed ids off the driver. The planner's filter reads them in a Ray task into
the object store, and the one planner actor holds them as a set (about 110 MiB at the bound); the
run streams from the first block, as a fresh run does. The join holds no id in any one process
at any size, but it is a barrier (every rollout is planned before the first one starts) and
Ray Data starts an aggregator actor per partition for it: a fixed cost of seconds, which a
resumed run with little left to do would pay in full.
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

#: The most committed rollouts a resumed run filters out in its planner (a set of their ids in the
#: planner actor); an output holding more is resumed through the hash join.
FILTER_COMMITTED_MAX = 1_000_000

#: Planned rollouts per hash partition of the resume join (a partition is joined in one
#: aggregator's memory: ids and example columns of this many rows).
JOIN_ROWS_PER_PARTITION = 200_000


class PlanWorker:
    """A Ray Data actor: a block of examples in, one row per planned rollout out: the example's
    columns, repeated, plus its example id, rollout index and rollout id (the `PLAN_COLUMNS`).

    Rows whose example id is in ``excluded`` (invalid input), or whose rollout id is in
    ``committed`` (made by an earlier run), are left out; each may be a set or an ``ObjectRef`` of
    one, fetched once.
    """

    def __init__(self, planner: RolloutPlanner, n: int, excluded: Any = frozenset(), committed: Any = frozenset()):
        self.planner, self.n = planner, n
        self.excluded = ray.get(excluded) if isinstance(excluded, ray.ObjectRef) else excluded
        self.committed = ray.get(committed) if isinstance(committed, ray.ObjectRef) else committed

    def __call__(self, block: pa.Table) -> pa.Table:
        n = self.n
        jobs = self.planner.plan(block.to_pylist(), n)
        keep = [
            k
            for k, job in enumerate(jobs)
            if job.example_id not in self.excluded and job.rollout_id not in self.committed
        ]
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
    committed_rows: int,
    planned_count: int,
) -> ray.data.Dataset:
    """The rollouts still to make, as a (lazy) dataset of `PlanWorker` rows.

    Args:
        dataset: the examples.
        planner: names the rollouts (the runner's `RolloutPlanner`).
        config: the run (``n``, ``plan_size``).
        excluded: example ids of invalid rows.
        output: the run's output; ``committed`` its part files (`committed_files`), holding
            ``committed_rows`` rows (which picks the planner's filter or the join).
        planned_count: valid examples × n (sizes the join's partitions).
    """
    filtered = bool(committed) and committed_rows <= FILTER_COMMITTED_MAX
    # A task's result stays in the object store: the driver passes its reference on, never the ids.
    done = _committed_ids.remote(output, committed) if filtered else frozenset()
    planned = dataset.map_batches(
        PlanWorker,
        fn_constructor_kwargs={
            "planner": planner,
            "n": config.n,
            "excluded": ray.put(frozenset(excluded)),
            "committed": done,
        },
        batch_size=config.plan_size,
        batch_format="pyarrow",
        num_cpus=HELPER_NUM_CPUS,
        compute=ray.data.ActorPoolStrategy(size=1),
    )
    if not committed or filtered:
        return planned
    # Ray Data pushes the projection into the reader: only the id column is read.
    done = ray.data.read_parquet(committed, filesystem=output.filesystem).select_columns(["rollout_id"])
    partitions = max(1, min(64, -(-planned_count // JOIN_ROWS_PER_PARTITION)))
    return planned.join(done, "left_anti", partitions, on=(ROLLOUT_ID,), right_on=("rollout_id",))


@ray.remote(num_cpus=0)  # no CPU reserved: it must start on a cluster the run has filled
def _committed_ids(output: Location, files: list[str]) -> frozenset[str]:
    """The rollout ids in ``files`` (only that column is read)."""
    import pyarrow.dataset as pads

    table = pads.dataset(files, filesystem=output.filesystem, format="parquet").to_table(columns=["rollout_id"])
    return frozenset(table.column("rollout_id").to_pylist())
