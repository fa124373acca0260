"""Rollouts at scale: Ray Data reads the examples, plans their rollouts, an actor pool of Collect
workers runs them against the teacher, a committer writes them to storage in batches, and the
driver follows the run from the stream of per-batch counts.

    read_csv / read_json / read_parquet            examples, any columns
      └─ check_input (Ray Data; a group-by)        invalid rows and duplicate ids, before any LM call
      └─ map_batches(PlanWorker, one actor)        each example → its n rollouts: one row each, with
                                                   its example id, index, rollout id; `plan_size`
                                                   examples a call (four waves of the pool)
                                                   a resumed run: less what an earlier run committed,
                                                   in the planner or, above a million committed, by
                                                   join(committed ids, "left_anti") (`raydspy.pipeline.planning`)
      └─ repartition(target_num_rows_per_block=R)  blocks of R rollouts (threads_per_actor): one actor call each
          └─ map_batches(CollectWorker, ActorPoolStrategy(size=A))
                all A actors start before the first block; each holds C = ceil(T / R) + 1 calls at
                once (`PipelineConfig.calls_per_actor`), whose rollouts share the actor's pool of T
                threads, so A × T LM requests are in flight until fewer than that are left
              └─ map_batches(RolloutCommitter, ActorPoolStrategy(size=1), batch_size=F)
                    F = B × n finished rollouts, in whole calls (`PipelineConfig.rows_per_file`)
                    → one committed part file (`raydspy.pipeline.commits`);
                    returns one row of counts; once the driver stops a run, its `CommitGate`
                    admits no more commits, and the driver waits for those admitted
                  └─ iter_batches (driver)         progress, the error budget, Ctrl-C
      └─ summarize_run                             the gate's counts + earlier runs' manifests
                                                   (`raydspy.pipeline.manifests`); no part read back
      └─ write_run_card                            README.md: the output's dataset card (`cards`)

The driver holds no list that grows with the input: its memory is that of the invalid rows and
the names of the part files.

Why blocks of a wave, on a shared pool: Ray Data spends a few milliseconds of the driver's time
scheduling each block, so a block per rollout capped the pipeline near 60 rollouts/s against a
teacher that answers at once, a third of one process's rate (BENCHMARKS.md, "the ceiling"). A
block run one rollout after another, or on threads of its own, would hold its slot until its
slowest rollout finished, and the teacher would have far fewer requests in flight than the layout
promised ("the drain"); on one pool with a call to spare, a thread freed by a fast rollout takes
the next call's, and only the last C × R rollouts of each actor can be left behind at the end of
a run. Commits batch rollouts again, so files stay a useful size.

Exactly once: rollout ids are deterministic (`raydspy.core.identity`), a run skips those already
committed, and a batch commits under a name derived from its rollout ids, so a commit Ray retries
replaces its own file. Rollouts that fail because the teacher is unreachable (after the LM's
retries) are not committed: re-running the same job does them, and nothing else. A rollout
finished but not yet committed when the driver dies is done again by the next run (DSPy's cache
answers its LM calls at no cost).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace

import dspy
import ray
import ray.data

from raydspy._compat import check_versions, set_streaming_buffer_blocks
from raydspy.core.program import program_input_fields
from raydspy.core.specs import load_program, load_rewards
from raydspy.core.stats import RolloutStats
from raydspy.core.storage import Location, check_writable, resolve, write_atomic
from raydspy.errors import ConfigError, InputError, RaydspyError
from raydspy.pipeline.cards import write_run_card
from raydspy.pipeline.commits import committed_files
from raydspy.pipeline.committer import RolloutCommitter, close_gate, open_gate
from raydspy.pipeline.config import BUDGET_MIN_ROLLOUTS, HELPER_NUM_CPUS, INVALID_DIR, PipelineConfig
from raydspy.pipeline.inputs import input_bytes, read_examples
from raydspy.pipeline.planning import plan_rollouts
from raydspy.pipeline.progress import RunProgress
from raydspy.pipeline.summary import RunSummary, committed_before, summarize_run
from raydspy.pipeline.validation import InputCheck, check_columns, check_input, input_field_types
from raydspy.pipeline.workers import CollectWorker, make_runner
from raydspy.teacher.client import TeacherConfig

__all__ = ["run_pipeline"]

logger = logging.getLogger(__name__)


def run_pipeline(
    program: str | dspy.Module,
    teacher: TeacherConfig,
    config: PipelineConfig,
    *,
    rewards: str | Callable | Mapping[str, Callable] | None = None,
    reward_weights: Mapping[str, float] | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    on_start: Callable[[RunProgress], None] | None = None,
    allowed_modules: Sequence[str] | None = None,
) -> RunSummary:
    """Collect ``config.n`` rollouts of every example at ``config.input_uri`` into ``config.output_uri``,
    or, when that output already holds some of them, only the missing ones.

    Ray must already be initialised (``ray.init``): this function starts nothing process-wide.
    Everything that can be checked is checked before the first rollout: the program loads, the
    examples are readable, have its input fields and valid values (`raydspy.pipeline.validation`), the
    output is writable, the teacher answers.

    Args:
        program: a ``MODULE:ATTR`` spec (imported in each actor) or a ``dspy.Module`` (pickled).
        teacher: the endpoint, sampling parameters and retry policy.
        config: the run's layout.
        rewards: a reward spec, function, or ``{name: function}``.
        reward_weights: ``{name: weight}`` for the combined reward.
        on_start: called once the plan is known, before the first rollout.
        on_progress: called on the driver after each committed batch.
        allowed_modules: specs resolve only within these, here and in each actor (`raydspy.core.specs`).

    Returns:
        The `RunSummary` of everything committed under the output, with this run's counts
        (``planned``, ``resumed``, ``new_rows``, ``deferred``). ``stopped`` says why a run ended
        early: the error budget, or an interrupt (Ctrl-C, SIGTERM turned into KeyboardInterrupt);
        either way what was committed stays, and running the same job again finishes it.

    Raises:
        ConfigError: bad program or reward spec, Ray not initialised, or the actor pool not started
            within ``actor_start_timeout_s`` (the cluster lacks the CPUs it asks for).
        InputError: examples unreadable, empty, lacking the program's input fields, or with
            invalid rows (unless ``skip_invalid``); the message lists the first offending rows.
        NotAllowedError: a spec outside ``allowed_modules``.
        StorageError: input or output URI unusable, or storage still failing after retries
            (the committed rollouts stay; the run can be resumed).
        TeacherUnreachableError: the teacher does not answer or lacks the model.
    """
    if not ray.is_initialized():
        raise ConfigError("Ray is not initialised: call ray.init() (or use the raydspy CLI) first")
    check_versions()
    loaded = load_program(program, allowed_modules)
    fields = program_input_fields(loaded)
    loaded_rewards = load_rewards(rewards, allowed_modules)  # a bad reward spec fails now, not in every actor
    source = resolve(config.input_uri, config.storage)
    output = resolve(config.output_uri, config.storage)
    with _reading(source):
        dataset = read_examples(source)
        check_columns(dataset.columns(), fields, source.uri)
    check_writable(output)
    context_length = None if config.dry_run else teacher.context_length()
    if config.limit:
        dataset = dataset.limit(config.limit)
    with _reading(source):
        checked = check_input(
            dataset,
            fields,
            field_types=input_field_types(loaded, fields),
            id_field=config.id_field,
            max_input_tokens=context_length - teacher.max_tokens if context_length else None,
            input_bytes=input_bytes(source),
        )
    if checked.rows == 0:
        raise InputError(f"no examples in {source.uri!r}", uri=source.uri)
    config = config.for_examples(checked.valid)  # files' size, once the input's size is known
    invalid_file = _handle_invalid(checked, config, output, source.uri)

    # The driver's runner only computes rollout ids (the actors import the specs themselves).
    runner = make_runner(loaded, teacher, loaded_rewards, reward_weights, config.id_field, config.dry_run)
    files = committed_files(output)
    # In a task (no CPU reserved: it must start on a cluster the run has filled): the earlier runs'
    # manifests list every part's counts, and only their total comes back to the driver.
    before = ray.get(ray.remote(num_cpus=0)(committed_before).remote(output, files))
    planned = plan_rollouts(
        dataset,
        runner.planner,
        config,
        excluded=frozenset(checked.invalid_ids),
        output=output,
        committed=files,
        committed_rows=before.stats.rows,
        planned_count=checked.valid * config.n,
    )
    # What the output holds of this plan is known exactly once the plan has run (planned - finished);
    # until then, what it holds at all: the same when it holds only this job's rollouts, as it should.
    progress = RunProgress(planned=checked.valid * config.n, resumed=min(before.stats.rows, checked.valid * config.n))
    logger.info("%d rollouts planned, %d already committed under %s", progress.planned, progress.resumed, output.uri)
    if on_start is not None:
        on_start(progress)

    rollouts = planned.repartition(target_num_rows_per_block=config.call_size).map_batches(
        CollectWorker,
        fn_constructor_kwargs={
            "program": program,
            "teacher": teacher,
            "rewards": rewards,
            "allowed_modules": allowed_modules,
            "reward_weights": reward_weights,
            "n": config.n,
            "id_field": config.id_field,
            "dry_run": config.dry_run,
            "run_uri": output.uri,
            "threads": config.threads_per_actor,
        },
        batch_size=None,  # one call per block: the repartition above sized them
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(
            size=config.num_actors,
            # Every call an actor holds runs at once, its rollouts on the actor's one pool of
            # threads: calls_per_actor is one call more than the threads take, and nothing waits
            # in Ray Data's own per-actor queue (PipelineConfig.calls_per_actor says why).
            max_concurrent_calls_per_actor=config.calls_per_actor,
            max_tasks_in_flight_per_actor=config.calls_per_actor,
            enable_true_multi_threading=True,
        ),
        num_cpus=config.actor_num_cpus,
    )
    gate = open_gate()  # on this node: it must outlive any other node's loss
    # Ray Data bundles the actors' blocks (one per call) until a batch holds a file's worth.
    stats = rollouts.map_batches(
        RolloutCommitter,
        fn_constructor_kwargs={"output": output, "gate": gate},
        batch_size=config.rows_per_file,
        batch_format="pyarrow",
        num_cpus=HELPER_NUM_CPUS,
        # A few commits at once: an object store's PUT takes tens of milliseconds.
        compute=ray.data.ActorPoolStrategy(size=1, max_concurrent_calls_per_actor=4, enable_true_multi_threading=True),
    )
    # Start every actor before the first block goes out (Ray Data's default sends blocks as actors
    # come up): else the first actor ready fills all its threads, and on a short run the others
    # find little left to do. The context is this dataset's own copy, not the caller's.
    stats.context.wait_for_min_actors_s = config.actor_start_timeout_s
    # Ray Data lets a task run only 2 blocks ahead of the executor by default, too slow to refill
    # every actor's calls: let it run a whole wave ahead (small blocks: tens of KiB each).
    set_streaming_buffer_blocks(stats.context, config.num_actors * config.calls_per_actor)
    stopped = _follow(stats, progress, config, on_progress, gate)
    # What landed, from the gate: commits admitted before a stop land after the driver stopped reading.
    landed_json, manifest = ray.get(gate.report.remote(output))
    landed = RolloutStats.from_json(landed_json)
    summary = summarize_run(output, before, landed, elapsed_s=progress.elapsed_s)
    resumed = progress.resumed if stopped else progress.planned - landed.finished
    write_run_card(output, before.stats + landed, runner, program, teacher, config, source)
    return replace(
        summary,
        planned=progress.planned,
        resumed=resumed,
        new_rows=landed.rows,
        deferred=landed.deferred,
        invalid_rows=len(checked.invalid),
        invalid_file=invalid_file,
        stopped=stopped,
        manifest=manifest,
    )


def _follow(
    stats: ray.data.Dataset,
    progress: RunProgress,
    config: PipelineConfig,
    on_progress: Callable[[RunProgress], None] | None,
    gate: ray.actor.ActorHandle,
) -> str | None:
    """Drive the run, batch by batch; returns why it stopped early, or None when it finished.

    The commit gate closes before this returns, while ``batches`` still holds the dataset: once
    the iterator is released, Ray Data shuts the dataset down and kills its actors, and a commit
    admitted but killed half-way would never tell the gate it had finished.
    """
    batches = iter(stats.iter_batches(batch_size=None, batch_format="pyarrow"))
    try:
        for batch in batches:
            for row in batch.to_pylist():
                progress.add(row)
            if on_progress is not None:
                on_progress(progress)
            if progress.finished >= BUDGET_MIN_ROLLOUTS and progress.stats.error_rate > config.max_error_rate:
                reason = (
                    f"error budget exceeded: {progress.errors + progress.deferred} of {progress.finished} "
                    f"rollouts failed (max {config.max_error_rate:.0%}); last: {progress.stats.last_error}"
                )
                logger.error("%s. Stopping; run the same job again to resume.", reason)
                return reason
    except KeyboardInterrupt:
        logger.warning("interrupted: %d rollouts committed; run the same job again to resume", progress.committed)
        return "interrupted"
    except ray.exceptions.GetTimeoutError as e:  # Ray Data's wait for the pool (wait_for_min_actors_s)
        cpus = ray.cluster_resources().get("CPU", 0)
        raise ConfigError(
            f"the {config.num_actors} Collect actors did not all start within {config.actor_start_timeout_s} s: "
            f"they ask for {config.num_actors} x {config.actor_num_cpus} logical CPUs, and the cluster has {cpus:g} "
            "in all, some taken by other work (the teacher's replicas). Use fewer actors (--actors) or add nodes; "
            "nothing was collected"
        ) from e
    except ray.exceptions.RayError as e:
        cause = _root_cause(e)
        if isinstance(cause, RaydspyError):
            raise type(cause)(
                f"{cause} ({progress.committed} rollouts committed by this run stay; run the same job again to resume)"
            ) from e
        raise
    finally:  # batches in flight: the admitted ones land, the rest wait for the next run
        close_gate(gate)
    return None


@contextlib.contextmanager
def _reading(source: Location) -> Iterator[None]:
    """Turn the reader's own failure (a malformed line, a column of mixed types) into an InputError."""
    try:
        yield
    except ray.exceptions.RayError as e:
        cause = _root_cause(e)
        raise InputError(
            f"cannot read examples from {source.uri!r}: {type(cause).__name__}: {cause}", uri=source.uri
        ) from e


def _root_cause(error: BaseException) -> BaseException:
    """The user-code exception inside Ray's wrappers (RayTaskError, UserCodeException)."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = error.__cause__ or getattr(error, "cause", None)
        if inner is None or inner is error:
            break
        error = inner
    return error


def _handle_invalid(checked: InputCheck, config: PipelineConfig, output: Location, where: str) -> str | None:
    """Refuse invalid rows, or with ``skip_invalid`` list them in a JSON Lines file and go on.

    Returns:
        The invalid-rows file written, or None.

    Raises:
        InputError: invalid rows and no ``skip_invalid``; or every row invalid.
    """
    if not checked.invalid:
        return None
    if not config.skip_invalid:
        raise InputError(
            f"examples in {where!r}: {checked.summary()}. Fix them, or pass --skip-invalid to "
            f"list them under {INVALID_DIR}/ in the output and run the rest",
            uri=where,
        )
    if not checked.valid:
        raise InputError(f"examples in {where!r}: every row is invalid: {checked.summary()}", uri=where)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    lines = [
        json.dumps(
            {"row": r.row, "example_id": r.example_id, "reason": r.reason, "example": r.example},
            default=str,
            ensure_ascii=False,
        )
        for r in checked.invalid
    ]
    path = write_atomic(output.child(INVALID_DIR), f"invalid-rows-{stamp}.jsonl", ("\n".join(lines) + "\n").encode())
    logger.warning("skipping %s; listed in %s", checked.summary(), path)
    return path
