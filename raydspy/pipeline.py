"""Rollouts at scale: Ray Data reads the examples, an actor pool of Collect workers runs the
program against the teacher, and the rows stream to Parquet as they are made.

    read_csv / read_json / read_parquet            examples, any columns
      └─ repartition(target_num_rows_per_block=B)  blocks of B examples: one actor call each
          └─ map_batches(CollectWorker, ActorPoolStrategy(size=A))
                each call: B examples × n rollouts on the actor's thread pool (T threads), so
                up to A × T LM requests are in flight (the teacher saturates only with many)
              └─ write_parquet(output)             one file per block, written as blocks finish

Each block becomes its own Parquet file as soon as its rollouts are done, so files appear while
the run goes. Rows follow `raydspy.rollouts.ROLLOUT_SCHEMA` whatever the program.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping

import dspy
import pyarrow as pa
import pyarrow.fs as pafs
import ray
import ray.data
from pydantic import BaseModel, ConfigDict, Field

from raydspy.errors import ConfigError
from raydspy.inputs import check_columns, read_examples
from raydspy.rewards import RewardSet
from raydspy.rollouts import records_to_table
from raydspy.runner import RolloutRunner, program_input_fields
from raydspy.specs import load_program, load_rewards
from raydspy.storage import Location, StorageOptions, check_writable, resolve
from raydspy.summary import RunSummary, read_rollouts, summarize
from raydspy.teacher import TeacherConfig

__all__ = ["PipelineConfig", "CollectWorker", "run_pipeline"]

logger = logging.getLogger(__name__)


class PipelineConfig(BaseModel):
    """How one distributed collection run is laid out."""

    input_uri: str = Field(description="Examples: a CSV, JSONL or Parquet file or folder; local, s3:// or gs://.")
    output_uri: str = Field(description="Folder or prefix receiving the rollout Parquet files.")
    n: int = Field(1, ge=1, description="Rollouts per example.")
    num_actors: int = Field(2, ge=1, description="Collect actors in the pool.")
    threads_per_actor: int = Field(32, ge=1, description="Rollouts in flight per actor.")
    batch_size: int = Field(8, ge=1, description="Examples per actor call, and per output file.")
    actor_num_cpus: float = Field(0.25, gt=0, description="Logical CPUs each actor reserves (it mostly waits on HTTP).")
    id_field: str | None = Field(None, description="Column holding example ids; else ids hash each example.")
    limit: int | None = Field(None, ge=1, description="Use only the first LIMIT examples.")
    dry_run: bool = Field(False, description="Format prompts only; call no LM.")
    storage: StorageOptions = Field(default_factory=StorageOptions, description="S3-compatible endpoint options.")

    model_config = ConfigDict(frozen=True, extra="forbid")


class CollectWorker:
    """A Ray Data actor: examples in (a pyarrow batch), rollout rows out.

    Built once per actor: imports the program, builds the teacher LM and a thread pool that all
    of the actor's concurrent calls share.
    """

    def __init__(
        self,
        program: str | dspy.Module,
        teacher: TeacherConfig,
        rewards: str | Callable | Mapping[str, Callable] | None,
        reward_weights: Mapping[str, float] | None,
        n: int,
        threads: int,
        id_field: str | None,
        dry_run: bool,
    ):
        self.n = n
        self.runner = RolloutRunner(
            load_program(program),
            lm=None if dry_run else teacher.lm(),
            adapter=teacher.adapter(),
            rewards=RewardSet(load_rewards(rewards), reward_weights),
            sampling=teacher.sampling,
            id_field=id_field,
            dry_run=dry_run,
        )
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="rollout")

    def __call__(self, batch: pa.Table) -> pa.Table:
        results = self.runner.run_many(batch.to_pylist(), self.n, executor=self.pool)
        return records_to_table([r.record for r in results])


def run_pipeline(
    program: str | dspy.Module,
    teacher: TeacherConfig,
    config: PipelineConfig,
    *,
    rewards: str | Callable | Mapping[str, Callable] | None = None,
    reward_weights: Mapping[str, float] | None = None,
) -> RunSummary:
    """Collect ``config.n`` rollouts of every example at ``config.input_uri`` into ``config.output_uri``.

    Ray must already be initialised (``ray.init``): this function starts nothing process-wide.
    Everything that can be checked is checked before the first rollout: the program loads, the
    examples are readable and have its input fields, the output is writable, the teacher answers.

    Args:
        program: a ``MODULE:ATTR`` spec (imported in each actor) or a ``dspy.Module`` (pickled).
        teacher: the endpoint and sampling parameters.
        config: the run's layout.
        rewards: a reward spec, function, or ``{name: function}``.
        reward_weights: ``{name: weight}`` for the combined reward.

    Returns:
        The `RunSummary` of the files this run wrote.

    Raises:
        ConfigError: bad program or reward spec.
        InputError: examples unreadable, empty, or lacking the program's input fields.
        StorageError: input or output URI unusable.
        TeacherUnreachableError: the teacher does not answer or lacks the model.
    """
    if not ray.is_initialized():
        raise ConfigError("Ray is not initialised: call ray.init() (or use the raydspy CLI) first")
    fields = program_input_fields(load_program(program))
    load_rewards(rewards)  # fail on a bad reward spec now, not inside every actor
    source = resolve(config.input_uri, config.storage)
    output = resolve(config.output_uri, config.storage)
    dataset = read_examples(source)
    check_columns(dataset.columns(), fields, source.uri)
    check_writable(output)
    if not config.dry_run:
        teacher.check_reachable()

    if config.limit:
        dataset = dataset.limit(config.limit)
    rollouts = dataset.repartition(target_num_rows_per_block=config.batch_size).map_batches(
        CollectWorker,
        fn_constructor_kwargs={
            "program": program,
            "teacher": teacher,
            "rewards": rewards,
            "reward_weights": reward_weights,
            "n": config.n,
            "threads": config.threads_per_actor,
            "id_field": config.id_field,
            "dry_run": config.dry_run,
        },
        batch_size=None,  # one call per block: the repartition above sized them
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(
            size=config.num_actors,
            # Several blocks per actor at once: the shared thread pool stays full while one
            # block's slowest rollout finishes (no tail at each block's end).
            max_concurrent_calls_per_actor=2,
            max_tasks_in_flight_per_actor=2,
            enable_true_multi_threading=True,
        ),
        num_cpus=config.actor_num_cpus,
    )
    before = set(_parquet_files(output))
    started = time.perf_counter()
    rollouts.write_parquet(output.path, filesystem=output.filesystem)
    elapsed = time.perf_counter() - started
    files = sorted(set(_parquet_files(output)) - before)
    table = read_rollouts(output, files) if files else records_to_table([])
    return summarize(table, elapsed_s=elapsed, files=files, output_uri=output.uri)


def _parquet_files(location: Location) -> list[str]:
    selector = pafs.FileSelector(location.path, recursive=True, allow_not_found=True)
    return [
        f.path
        for f in location.filesystem.get_file_info(selector)
        if f.type == pafs.FileType.File and f.path.endswith(".parquet")
    ]
