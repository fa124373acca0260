"""The pipeline's Collect actors: `CollectWorker` runs planned rollouts (`raydspy.pipeline.planning`)
against the teacher (`raydspy.core.runner` in a Ray Data actor).

Actors rather than tasks: one process that imports raydspy (and DSPy) and builds the program
once, where tasks would start a worker, and import DSPy, for every few blocks of input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dspy
import pyarrow as pa

from raydspy.core.rewards import RewardSet
from raydspy.core.rollouts import records_to_table
from raydspy.core.runner import RolloutJob, RolloutRunner
from raydspy.core.specs import load_program, load_rewards
from raydspy.pipeline.committer import DEFERRED
from raydspy.pipeline.metrics import RolloutMetrics
from raydspy.pipeline.planning import PLAN_COLUMNS
from raydspy.teacher.client import TeacherConfig

__all__ = ["CollectWorker", "make_runner"]


class CollectWorker:
    """A Ray Data actor: planned rollouts in (`PlanWorker` rows), their rollout rows out.

    Built once per actor: imports the program, builds the teacher LM and a pool of ``threads``
    threads. Ray Data runs a few calls at once (`PipelineConfig.calls_per_actor`); each submits its
    rollouts to the one pool and returns when all have finished, so the pool stays full while any
    call has rollouts waiting, and a call's slowest rollout holds one thread, not a whole block.
    The rows returned are `ROLLOUT_SCHEMA` plus a boolean ``DEFERRED`` column: True for
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
        threads: int,
        allowed_modules: Sequence[str] | None = None,
    ):
        self.n = n
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="rollout")
        self.runner = make_runner(program, teacher, rewards, reward_weights, id_field, dry_run, allowed_modules)
        self.metrics = RolloutMetrics(run=run_uri)  # Ray metrics, tagged by run (raydspy.pipeline.metrics)

    def __call__(self, batch: pa.Table) -> pa.Table:
        examples = batch.drop_columns(list(PLAN_COLUMNS)).to_pylist()
        jobs = [
            RolloutJob(example, ex_id, index, rid)
            for example, ex_id, index, rid in zip(examples, *(batch.column(c).to_pylist() for c in PLAN_COLUMNS))
        ]
        self.metrics.started(len(jobs))
        results = self.runner.run_jobs(jobs, n=self.n, executor=self.pool, on_result=self.metrics.finished)
        table = records_to_table([r.record for r in results])
        return table.append_column(DEFERRED, pa.array([r.transient for r in results], pa.bool_()))


def make_runner(
    program: str | dspy.Module,
    teacher: TeacherConfig,
    rewards: Any,
    reward_weights: Any,
    id_field: str | None,
    dry_run: bool,
    allowed_modules: Sequence[str] | None = None,
) -> RolloutRunner:
    """The runner a worker uses; the driver builds the same one to compute rollout ids. Specs
    resolve within ``allowed_modules`` when given (`raydspy.core.specs`)."""
    return RolloutRunner(
        load_program(program, allowed_modules),
        lm=None if dry_run else teacher.lm(),
        adapter=teacher.adapter(),
        rewards=RewardSet(load_rewards(rewards, allowed_modules), reward_weights),
        sampling=teacher.sampling,
        id_field=id_field,
        dry_run=dry_run,
        tokens=teacher.token_request,
    )
