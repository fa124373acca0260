"""The pipeline's actors: `PlanWorker` turns examples into the rollouts still to make, and
`CollectWorker` runs them against the teacher (`raydspy.core.runner` in a Ray Data actor).

Actors rather than tasks: one process that imports raydspy (and DSPy) and builds the program
once, where tasks would start a worker, and import DSPy, for every few blocks of input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import dspy
import pyarrow as pa
import ray

from raydspy.core.rewards import RewardSet
from raydspy.core.rollouts import records_to_table
from raydspy.core.runner import RolloutJob, RolloutPlanner, RolloutRunner
from raydspy.core.specs import load_program, load_rewards
from raydspy.pipeline.committer import DEFERRED
from raydspy.pipeline.metrics import RolloutMetrics
from raydspy.teacher.client import TeacherConfig

__all__ = ["PlanWorker", "CollectWorker", "make_runner"]

#: A planned rollout's extra columns beside the example's own (dropped before the program sees it).
_EXAMPLE_ID, _ROLLOUT_INDEX, _ROLLOUT_ID = "__raydspy_example_id", "__raydspy_rollout_index", "__raydspy_rollout_id"
_PLAN_COLUMNS = (_EXAMPLE_ID, _ROLLOUT_INDEX, _ROLLOUT_ID)


class PlanWorker:
    """A Ray Data actor: a block of examples in, one row per rollout still to make out: the
    example's columns, repeated, plus its example id, rollout index and rollout id (the
    `_PLAN_COLUMNS`).

    Rows whose example id is in ``excluded`` (invalid input) and rollouts whose id is in ``done``
    (committed by an earlier run) are left out. Both may be sets or ``ObjectRef``\\ s of sets,
    fetched once.
    """

    def __init__(self, planner: RolloutPlanner, n: int, excluded: Any = frozenset(), done: Any = frozenset()):
        self.planner, self.n = planner, n
        self.excluded, self.done = _resolve(excluded), _resolve(done)

    def __call__(self, block: pa.Table) -> pa.Table:
        n = self.n
        jobs = self.planner.plan(block.to_pylist(), n)
        keep = [
            k for k, job in enumerate(jobs) if job.example_id not in self.excluded and job.rollout_id not in self.done
        ]
        planned = block.take(pa.array([k // n for k in keep], pa.int64()))  # job k is of example k // n
        columns = {
            _EXAMPLE_ID: pa.array([jobs[k].example_id for k in keep], pa.string()),
            _ROLLOUT_INDEX: pa.array([jobs[k].rollout_index for k in keep], pa.int32()),
            _ROLLOUT_ID: pa.array([jobs[k].rollout_id for k in keep], pa.string()),
        }
        for name, column in columns.items():
            planned = planned.append_column(name, column)
        return planned


def _resolve(value: Any) -> Any:
    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


class CollectWorker:
    """A Ray Data actor: planned rollouts in (`PlanWorker` rows), their rollout rows out.

    Built once per actor: imports the program and builds the teacher LM. Ray Data runs up to
    ``threads_per_actor`` calls at once, each on its own thread; a call runs its rollouts one after
    another. The rows returned are `ROLLOUT_SCHEMA` plus a boolean ``DEFERRED`` column: True for
    a rollout the teacher never answered, which `RolloutCommitter` leaves uncommitted.
    """

    def __init__(
        self,
        program: str | dspy.Module,
        teacher: TeacherConfig,
        rewards: str | Callable | Mapping[str, Callable] | None,
        reward_weights: Mapping[str, float] | None,
        n: int,
        id_field: str | None,
        dry_run: bool,
        run_uri: str,
    ):
        self.n = n
        self.runner = make_runner(program, teacher, rewards, reward_weights, id_field, dry_run)
        self.metrics = RolloutMetrics(run=run_uri)  # Ray metrics, tagged by run (raydspy.pipeline.metrics)

    def __call__(self, batch: pa.Table) -> pa.Table:
        examples = batch.drop_columns(list(_PLAN_COLUMNS)).to_pylist()
        jobs = [
            RolloutJob(example, ex_id, index, rid)
            for example, ex_id, index, rid in zip(examples, *(batch.column(c).to_pylist() for c in _PLAN_COLUMNS))
        ]
        self.metrics.started(len(jobs))
        results = self.runner.run_jobs(jobs, n=self.n, num_threads=1, on_result=self.metrics.finished)
        table = records_to_table([r.record for r in results])
        return table.append_column(DEFERRED, pa.array([r.transient for r in results], pa.bool_()))


def make_runner(
    program: str | dspy.Module,
    teacher: TeacherConfig,
    rewards: Any,
    reward_weights: Any,
    id_field: str | None,
    dry_run: bool,
) -> RolloutRunner:
    """The runner a worker uses; the driver builds the same one to compute rollout ids."""
    return RolloutRunner(
        load_program(program),
        lm=None if dry_run else teacher.lm(),
        adapter=teacher.adapter(),
        rewards=RewardSet(load_rewards(rewards), reward_weights),
        sampling=teacher.sampling,
        id_field=id_field,
        dry_run=dry_run,
    )
