"""The pipeline's last stage: finished rollouts in, committed part files out, and a gate that
lets the driver stop the commits when it stops a run.

Why a gate: when the driver stops a run early (the error budget, Ctrl-C), Ray Data shuts the
dataset down gracefully: it drops its handles on the actors, and each actor exits once the calls
already sent to it have run. Those calls commit after the driver has stopped, so a summary read
from the output at that moment would be short of them, and the output would keep growing after
`raydspy collect` had returned. With the gate, the driver closes it, waits until the commits it
had admitted have landed, and only then reads the output; a commit that asks after the close
writes nothing, and the next run of the job does those rollouts (exactly once: `raydspy.core.identity`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc
import ray

from raydspy.core.stats import RolloutStats
from raydspy.core.storage import Location
from raydspy.pipeline.commits import commit_rollouts
from raydspy.pipeline.manifests import relative_name, write_manifest
from raydspy.pipeline.metrics import RolloutMetrics

__all__ = ["DEFERRED", "BATCH_STATS", "CommitGate", "RolloutCommitter", "open_gate", "close_gate"]

logger = logging.getLogger(__name__)

#: A finished rollout's extra column: the teacher never answered (not committed; the next run does it).
DEFERRED = "__raydspy_deferred"

#: The row `RolloutCommitter` returns for each batch: the part file, and the batch's `RolloutStats`
#: as JSON (`RunProgress.add` reads it).
BATCH_STATS = pa.schema([("file", pa.string()), ("stats", pa.string())])

#: How long the driver waits for admitted commits after closing the gate: beyond the storage
#: retries' own deadline (`raydspy.pipeline.commits.STORAGE_RETRY`, 120 s), so a commit that can land does.
DRAIN_TIMEOUT_S = 180.0


@ray.remote(num_cpus=0)
class CommitGate:
    """A Ray actor (async, so ``close`` can wait while ``leave`` runs): open until the driver
    closes it; counts the commits it admitted that have not yet landed, and adds up the counts
    of those that did, per part file (a commit Ray retries replaces its file, and its count).

    The driver's summary and the run's manifest come from `report`, not from the rows the driver
    saw: commits admitted before the close may land after the driver stopped reading.
    """

    def __init__(self) -> None:
        self._open = True
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._files: dict[str, RolloutStats] = {}
        self._unfiled = RolloutStats()  # batches with nothing to write: every rollout deferred

    async def enter(self) -> bool:
        """Admit one commit: True while the gate is open (then the caller must ``leave``)."""
        if self._open:
            self._in_flight += 1
            self._idle.clear()
        return self._open

    async def leave(self, file: str | None = None, stats: str | None = None) -> None:
        """One admitted commit has landed (``stats``: its `RolloutStats` JSON, ``file``: the part
        it wrote, relative to the output, None when it wrote none), or failed (no arguments)."""
        if stats is not None:
            if file is None:
                self._unfiled += RolloutStats.from_json(stats)
            else:
                self._files[file] = RolloutStats.from_json(stats)
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def close(self, timeout_s: float) -> int:
        """Admit no more commits; wait up to ``timeout_s`` seconds for those admitted.

        Returns:
            How many admitted commits are still in flight (0 once all have landed).
        """
        self._open = False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            pass
        return self._in_flight

    async def report(self, output: Location) -> tuple[str, str | None]:
        """What landed: writes the run's manifest under ``output`` (each part file's counts,
        `raydspy.pipeline.manifests`) when anything did, and returns the added-up `RolloutStats`
        (JSON) and the manifest's path (None when nothing landed). The per-file counts stay in
        this actor: at a million rollouts they are tens of thousands of entries, which the
        driver would otherwise hold at its peak.

        Raises:
            StorageError: the manifest could not be written.
        """
        total = self._unfiled
        for stats in self._files.values():
            total += stats
        manifest = write_manifest(output, self._files) if self._files else None
        return total.to_json(), manifest


def open_gate() -> ray.actor.ActorHandle:
    """A new `CommitGate`, on the driver's own node.

    Why there: the gate holds the run's per-file counts, which no retry could rebuild, and every
    commit asks it first, so it must outlive the loss of any other node (a spot instance taken, an
    OOM kill). The driver's node is the one node whose loss ends the run anyway: the driver dies
    with it, and running the same job again resumes. Ray Data restarts the pool's own actors
    (Collect workers, the planner, the committer) on the nodes left and retries their blocks;
    a redone block commits under the same name (`raydspy.pipeline.commits`).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return CommitGate.options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()


def close_gate(gate: ray.actor.ActorHandle, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """Close ``gate`` and wait for the commits it admitted (the driver's side of `CommitGate`)."""
    try:
        still = ray.get(gate.close.remote(timeout_s))
    except ray.exceptions.RayError as e:  # don't hide the failure that ended the run behind this one
        logger.warning("cannot close the commit gate (%s): commits in flight may land after this summary", e)
        return
    if still:
        logger.warning("%d commits still in flight after %.0f s: they may land after this summary", still, timeout_s)


class RolloutCommitter:
    """A Ray Data actor: finished rollouts (`raydspy.pipeline.driver.CollectWorker` rows) in, one
    committed part file of those the teacher answered, and one row (`BATCH_STATS`)
    for the driver, out; no row at all once ``gate`` is closed (nothing committed).

    An actor rather than tasks: one process, started with the pool, instead of a worker started
    (and DSPy imported) for every few commits, on CPUs the teacher needs.

    Raises:
        StorageError: storage still failing after `raydspy.pipeline.commits`' retries.
    """

    def __init__(self, output: Location, gate: ray.actor.ActorHandle):
        self.output, self.gate = output, gate
        self.metrics = RolloutMetrics(run=output.uri)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not ray.get(self.gate.enter.remote()):  # the run has stopped: leave these to the next run
            return BATCH_STATS.empty_table()
        landed: tuple[str | None, str] | None = None
        try:
            kept = batch.filter(pc.invert(batch.column(DEFERRED))).drop_columns([DEFERRED])
            path = commit_rollouts(self.output, kept)
            stats = RolloutStats.of(kept, deferred=batch.num_rows - kept.num_rows)
            errors = pc.drop_null(batch.column("error"))  # a deferred rollout's error too: why the teacher failed
            stats = replace(stats, last_error=errors[-1].as_py() if len(errors) else None)
            landed = (relative_name(self.output, path) if path else None, stats.to_json())
        finally:
            self.gate.leave.remote(*(landed or ()))
        self.metrics.committed(kept.num_rows)
        return pa.Table.from_pylist([{"file": path, "stats": landed[1]}], schema=BATCH_STATS)
