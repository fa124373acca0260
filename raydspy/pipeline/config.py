"""`PipelineConfig`: how one distributed collection run is laid out, and the limits it checks.

The CLI's ``collect`` flags and the service's run request are derived from its fields
(`raydspy.cli.fields`), so a default or a limit is declared here and nowhere else.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from raydspy.core.storage import StorageOptions

__all__ = [
    "PipelineConfig",
    "RUN_FIELDS",
    "INVALID_DIR",
    "BUDGET_MIN_ROLLOUTS",
    "HELPER_NUM_CPUS",
    "DEFAULT_BATCH_SIZE",
    "MAX_FILES",
    "MAX_BATCH_SIZE",
    "MAX_N",
]

#: Where ``skip_invalid`` writes the rows it skipped (ignored by rollout readers: leading ``_``).
INVALID_DIR = "_invalid"

#: The error budget is judged only once this many rollouts have finished in the run.
BUDGET_MIN_ROLLOUTS = 20

#: Logical CPUs of the planner and committer actors (light work: ids, one Parquet file at a time).
HELPER_NUM_CPUS = 0.25

#: Examples per committed file when the input is small enough (`PipelineConfig.for_examples`).
DEFAULT_BATCH_SIZE = 32

#: Files a run writes at most when ``batch_size`` is left to the run (while files of
#: `MAX_BATCH_SIZE` examples can hold the input). Why bound them: Ray Data's driver keeps a little bookkeeping for every block
#: its operators emit (per-block stats, ray-project/ray#66016), about a block per operator a file,
#: so the driver's memory would grow with the input; and object stores list and read fewer,
#: larger files faster.
MAX_FILES = 4096

#: The most examples a committed file may take (a file is one Parquet write, held in one actor).
MAX_BATCH_SIZE = 4096

#: The most rollouts of one example a run may ask for (GRPO groups are tens; this bounds requests).
MAX_N = 4096


class PipelineConfig(BaseModel):
    """How one distributed collection run is laid out."""

    input_uri: str = Field(description="Examples: a CSV, JSONL or Parquet file or folder; local, s3:// or gs://.")
    output_uri: str = Field(description="Folder or prefix receiving the rollout Parquet files.")
    n: int = Field(1, ge=1, le=MAX_N, description="Rollouts per example.")
    num_actors: int = Field(2, ge=1, le=1024, description="Collect actors in the pool.")
    threads_per_actor: int = Field(32, ge=1, le=512, description="Rollouts in flight per actor (its concurrent calls).")
    batch_size: int | None = Field(
        None,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="Examples per committed file: batch_size × n rollouts, rounded up to whole actor calls "
        "(rollouts_per_call), so that no call's rollouts are split across two files. Default: "
        f"{DEFAULT_BATCH_SIZE}, or more on inputs above {DEFAULT_BATCH_SIZE * MAX_FILES:,} examples, so that a "
        f"run writes at most {MAX_FILES:,} files (the driver's memory then stays flat in the input).",
    )
    rollouts_per_call: int | None = Field(
        None,
        ge=1,
        le=MAX_BATCH_SIZE * MAX_N,
        description="Rollouts per actor call. Default: threads_per_actor (or batch_size × n, when less), so one call fills an actor's threads "
        "and Ray Data schedules one block per wave rather than one per rollout (which capped the pipeline at a "
        "third of one process's rate against a fast teacher); each actor runs its calls on one pool of threads, "
        "a call more than fill it, so threads freed by a call's fast rollouts take the next call's. 1: the finest "
        "grain (the shortest drain at the end of a run, the most scheduling). Dry runs use batch_size × n.",
    )
    actor_num_cpus: float = Field(0.25, gt=0, description="Logical CPUs each actor reserves (it mostly waits on HTTP).")
    actor_start_timeout_s: int = Field(
        900,
        ge=1,
        le=86400,
        description="Seconds to wait for every actor of the pool to start (imports, program) before "
        "the first block is sent; then fail with a clear error (e.g. a cluster without the CPUs asked for).",
    )
    id_field: str | None = Field(
        None, min_length=1, max_length=128, description="Column holding example ids; else ids hash each example."
    )
    limit: int | None = Field(None, ge=1, le=10**12, description="Use only the first LIMIT examples.")
    dry_run: bool = Field(False, description="Format prompts only; call no LM.")
    max_error_rate: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Stop the run (resumably) once more than this share of its finished rollouts failed "
        f"(error rows and rollouts the teacher never answered), judged after {BUDGET_MIN_ROLLOUTS}. 1.0: never stop.",
    )
    skip_invalid: bool = Field(
        False, description=f"Skip invalid input rows, listing them under {INVALID_DIR}/, instead of refusing to start."
    )
    storage: StorageOptions = Field(default_factory=StorageOptions, description="S3-compatible endpoint options.")

    # No NaN or infinity in any float: a run's fields are stored as JSON, which has neither.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def for_examples(self, examples: int) -> PipelineConfig:
        """This layout for an input of ``examples`` valid examples: ``batch_size``, when left
        unset, becomes `DEFAULT_BATCH_SIZE`, or ``ceil(examples / MAX_FILES)`` when that is more
        (at most `MAX_BATCH_SIZE`), so that the run writes at most `MAX_FILES` files."""
        if self.batch_size is not None:
            return self
        batch = min(max(DEFAULT_BATCH_SIZE, -(-examples // MAX_FILES)), MAX_BATCH_SIZE)
        return self.model_copy(update={"batch_size": batch})

    @property
    def examples_per_file(self) -> int:
        """``batch_size``, or `DEFAULT_BATCH_SIZE` while it is unset (before `for_examples`)."""
        return self.batch_size or DEFAULT_BATCH_SIZE

    @property
    def call_size(self) -> int:
        """Rollouts per actor call: ``rollouts_per_call`` (default ``threads_per_actor``, or a
        file's worth when that is less), or a file's worth in a dry run."""
        if self.dry_run:
            return self.examples_per_file * self.n
        # No larger than a file: a file of batch_size × n rollouts then takes whole calls.
        return self.rollouts_per_call or min(self.threads_per_actor, self.examples_per_file * self.n)

    @property
    def rows_per_file(self) -> int:
        """Rollouts per committed file: ``batch_size`` × ``n``, rounded up to whole calls (a
        whole number of `call_size` blocks), so that each file takes whole blocks and none is
        left with a call's remainder. With the defaults (``batch_size`` = ``threads_per_actor``)
        nothing is rounded."""
        return -(-self.examples_per_file * self.n // self.call_size) * self.call_size

    @property
    def calls_per_actor(self) -> int:
        """Calls each actor holds at once: enough to fill its ``threads_per_actor`` threads, and
        one more, whose rollouts wait in the actor's queue and start as soon as a thread is free
        (so no thread waits on Ray Data's scheduler for its next rollout). No more: near the end of
        a run, rollouts queued in one actor could not go to an idle one."""
        return -(-self.threads_per_actor // self.call_size) + 1

    @property
    def plan_size(self) -> int:
        """Examples per planner call: enough for four waves of the whole pool (``num_actors`` ×
        `calls_per_actor` calls of `call_size` rollouts each).

        Why whole waves at once: Ray Data admits upstream work only as its resource budget allows,
        and that budget shrinks when other datasets run on the cluster, so the planner's next call
        may come only once the pool has drained what it was given; with one small block per call a
        run beside another dataset kept a third of its threads busy (docs/benchmarks-history.md).
        """
        wave = self.num_actors * self.calls_per_actor * self.call_size
        return max(1, -(-4 * wave // self.n))


#: The fields of a run a user chooses: the flags of ``raydspy collect`` and the fields of the
#: service's run request (the rest, URIs and storage, each front end sets its own way).
RUN_FIELDS = (
    "n",
    "num_actors",
    "threads_per_actor",
    "batch_size",
    "rollouts_per_call",
    "actor_start_timeout_s",
    "limit",
    "id_field",
    "dry_run",
    "max_error_rate",
    "skip_invalid",
)
