"""The run manager: checks a submission against the service's policy, records it, queues it,
starts it when a slot is free, follows it, and answers status, list, cancel and preview.

One background thread (`RunManager.start`) does the following every ``dispatch_interval_s``
(and at once after a submit or cancel):
1. asks the executor about every dispatched run whose worker has not recorded an end; a run whose
   worker died is marked FAILED or CANCELLED, one orphaned by a service restart is re-queued;
2. starts queued runs, oldest first, while fewer than ``max_concurrent_runs`` are dispatched.
On start it loads every unfinished record, so a restarted service picks up where it was.
The service runs as one replica (serve_configs/service.yaml): the queue is that replica's.
"""

from __future__ import annotations

import logging
import threading

from raydspy.core.rewards import RewardSet
from raydspy.core.specs import load_program, load_rewards
from raydspy.core.storage import StorageOptions, resolve
from raydspy.errors import ConfigError
from raydspy.service.executors import Executor, make_executor
from raydspy.service.policy import check_prefix_owner
from raydspy.service.progress import preview_rows
from raydspy.service.runs import RunRecord, new_run_id, utcnow
from raydspy.service.schemas import RunList, RunRequest, RunState, RunStatus, UnreadableRun
from raydspy.service.settings import ServiceSettings
from raydspy.service.store import RecordUnreadable, RunStore
from raydspy.viewer.overview import overview_counts

__all__ = ["RunManager", "RunConflict", "QueueFull"]

logger = logging.getLogger(__name__)


class RunConflict(Exception):
    """The run is in a state that does not allow the request (HTTP 409)."""


class QueueFull(Exception):
    """``max_queued_runs`` runs already wait (HTTP 429; try again after ``retry_after_s``)."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RunManager:
    """Everything the HTTP routes do, without HTTP (so it is testable and reusable)."""

    def __init__(self, settings: ServiceSettings, executor: Executor | None = None):
        self.settings = settings
        self.policy = settings.policy()
        for prefix in settings.input_prefixes:
            check_prefix_owner(prefix, "input prefix")
        for prefix in settings.output_prefixes:
            check_prefix_owner(prefix, "output prefix")
        # Outputs are read (status, previews, the viewer) as runs write them: inside the prefixes.
        self.storage = self.policy.storage(settings.s3_endpoint_url)
        self.store = RunStore(settings.state_uri, StorageOptions(s3_endpoint_url=settings.s3_endpoint_url))
        self.executor = executor or make_executor(settings)
        # Counts of each committed part, read once: a run's status, and its page in the viewer.
        self.counts = overview_counts()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Unfinished runs, by id: the only records the dispatcher reads (unreadable ones are logged
        # by the store and left out: the replica starts whatever its store holds).
        self._open: dict[str, RunRecord] = {r.id: r for r in self.store.scan().records if not r.state.terminal}

    # -- submissions ----------------------------------------------------------------------

    def validate(self, request: RunRequest) -> RunRequest:
        """``request`` with its task's settings (`RunRequest.with_task`) and the service's teacher
        defaults filled in, once it passes the policy.

        Raises:
            NotAllowedError: a module, spec, URI or teacher the settings do not allow (403).
            ConfigError: a limit exceeded, the program or rewards do not load, or a reward weight
                names no reward (422).
        """
        s = self.settings
        request = request.with_task()
        if request.n > s.max_n:
            raise ConfigError(f"n={request.n} is above this service's max_n={s.max_n}")
        if request.num_actors > s.max_actors:
            raise ConfigError(f"num_actors={request.num_actors} is above this service's max_actors={s.max_actors}")
        teacher = request.teacher.model_copy(
            update={
                "base_url": request.teacher.base_url or s.default_teacher_url,
                "model": request.teacher.model or s.default_teacher_model,
            }
        )
        self.policy.check(
            program=request.program,
            rewards=request.rewards,
            input_uri=request.input_uri,
            output_uri=request.output_uri,
            teacher_url=teacher.base_url,
        )
        if request.mlflow and not s.mlflow_tracking_uri:
            raise ConfigError("this service has no mlflow_tracking_uri: submit without `mlflow`, or configure one")
        # The whole spec, under the allow-list: nothing outside it is called (403), a program that
        # does not load or is not a Module is a 422 now, not a failed run later.
        load_program(request.program, s.allowed_modules)
        RewardSet(load_rewards(request.rewards, s.allowed_modules), request.reward_weights)  # a weight for no reward
        return request.model_copy(update={"teacher": teacher})

    def submit(self, request: RunRequest) -> RunRecord:
        """Check, record (PENDING) and queue a run; returns its record.

        Raises:
            QueueFull: ``max_queued_runs`` runs already wait (429), checked before any other work.
            NotAllowedError, ConfigError: as `validate`.
        """
        self._check_queue()
        request = self.validate(request)
        record = RunRecord(
            id=new_run_id(),
            request=request,
            executor=self.executor.name,
            policy=self.policy,
            mlflow_tracking_uri=self.settings.mlflow_tracking_uri if request.mlflow else None,
        )
        with self._lock:
            self._check_queue()
            self.store.put(record)
            self._open[record.id] = record
        self._wake.set()
        return record

    # -- reading ---------------------------------------------------------------------------

    def get(self, run_id: str) -> RunRecord:
        return self.store.get(run_id)

    def status(self, run_id: str) -> RunStatus:
        """The run's record with counts read from its committed rollouts.

        Raises:
            RunNotFound: no such run.
        """
        return self._status(self.store.get(run_id))

    def list(self) -> RunList:
        """Every run, newest first; records that cannot be read are listed apart, with why."""
        scan = self.store.scan()
        return RunList(
            runs=[self._status(r) for r in scan.records],
            unreadable=[UnreadableRun(id=i, error=e) for i, e in scan.unreadable.items()],
        )

    def _check_queue(self) -> None:
        queued = sum(1 for r in self._open.values() if r.dispatched_at is None)
        if queued >= self.settings.max_queued_runs:
            raise QueueFull(
                f"{queued} runs are already queued (this service's max_queued_runs); submit again later",
                retry_after_s=max(int(self.settings.dispatch_interval_s * 10), 5),
            )

    def _status(self, record: RunRecord) -> RunStatus:
        req = record.request
        rate = output_error = None
        if record.state.terminal and record.summary is not None:
            s = record.summary
            done, errors, mean, rate = s["rows"], s["error_rows"], s["mean_reward"], s["rollouts_per_s"]
        else:
            try:
                counts = self.counts.total(resolve(req.output_uri, self.storage)).stats
            except (OSError, ValueError) as e:  # one run's unreadable output must not fail the list
                logger.warning("run %s: cannot count the rollouts under %s: %s", record.id, req.output_uri, e)
                done = errors = mean = None
                output_error = f"{type(e).__name__}: {e}"
            else:
                done, errors, mean = counts.rows, counts.error_rows, counts.mean_reward
            if done is not None and record.state == RunState.RUNNING and record.started_at and record.planned:
                elapsed = (utcnow() - record.started_at).total_seconds()
                rate = max(done - record.resumed, 0) / elapsed if elapsed > 0 else None
        return RunStatus(
            id=record.id,
            state=record.state,
            program=req.program,
            input_uri=req.input_uri,
            output_uri=req.output_uri,
            n=req.n,
            dry_run=req.dry_run,
            rollouts_done=done,
            rollouts_total=record.planned,
            errors=errors,
            mean_reward=mean,
            rollouts_per_s=rate,
            cancel_requested=self.store.cancel_requested(record.id),
            message=record.message,
            output_error=output_error,
            mlflow_run_id=record.mlflow_run_id,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
        )

    def preview(self, run_id: str, limit: int, *, trace: bool = False) -> list[dict]:
        record = self.store.get(run_id)
        return preview_rows(
            record.request.output_uri, min(limit, self.settings.max_preview_rows), self.storage, trace=trace
        )

    # -- cancel ----------------------------------------------------------------------------

    def cancel(self, run_id: str) -> RunRecord:
        """Cancel a queued run at once, or ask a running one to stop (it records CANCELLED).

        Raises:
            RunNotFound: no such run.
            RunConflict: the run already ended.
        """
        with self._lock:
            record = self.store.get(run_id)
            if record.state.terminal:
                raise RunConflict(f"run {run_id} already ended: {record.state.value}")
            self.store.request_cancel(run_id)
            if record.dispatched_at is None:
                record = self._finish(record, RunState.CANCELLED, "cancelled before it started")
            else:
                self.executor.cancel(record)
        self._wake.set()
        return record

    # -- the dispatcher --------------------------------------------------------------------

    def start(self) -> RunManager:
        """Start the dispatcher thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="raydspy-dispatch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.dispatch_once()
            except Exception:  # noqa: BLE001 - the dispatcher must outlive a flaky store or cluster
                logger.exception("dispatch failed; retrying")
            self._wake.wait(self.settings.dispatch_interval_s)
            self._wake.clear()

    def dispatch_once(self) -> None:
        """One pass: follow dispatched runs, then start queued ones while slots are free."""
        with self._lock:
            for run_id in list(self._open):
                try:
                    record = self.store.get(run_id)
                except RecordUnreadable as e:  # logged once, then no longer followed
                    logger.error("run %s: its record cannot be read (%s); it is no longer followed", run_id, e)
                    del self._open[run_id]
                    continue
                if record.state.terminal:
                    del self._open[run_id]
                    continue
                self._open[run_id] = record
                if record.dispatched_at is not None:
                    self._follow(record)
            dispatched = [r for r in self._open.values() if r.dispatched_at is not None]
            queued = sorted((r for r in self._open.values() if r.dispatched_at is None), key=lambda r: r.created_at)
            for record in queued[: max(self.settings.max_concurrent_runs - len(dispatched), 0)]:
                self._dispatch(record)

    def _follow(self, record: RunRecord) -> None:
        try:
            outcome = self.executor.outcome(record)
        except Exception:  # noqa: BLE001 - one run the executor cannot answer for must not stall the others
            logger.warning(
                "run %s: cannot get its state from the %s executor; will retry",
                record.id,
                self.executor.name,
                exc_info=True,
            )
            return
        if outcome is None:
            return
        state, message = outcome
        if state == RunState.PENDING:
            logger.warning("run %s: %s", record.id, message)
            record = record.model_copy(update={"state": RunState.PENDING, "dispatched_at": None, "message": message})
            self.store.put(record)
            self._open[record.id] = record
        else:
            self._finish(record, state, message)

    def _dispatch(self, record: RunRecord) -> None:
        attempt = record.attempt + 1
        # Each attempt runs under the allow-lists in force now (its worker applies them again).
        record = record.model_copy(
            update={
                "attempt": attempt,
                "dispatched_at": utcnow(),
                "executor": self.executor.name,
                "policy": self.policy,
            }
        )
        record = record.model_copy(update={"executor_ref": self.executor.reference(record)})
        self.store.put(record)  # before submit: from now on only the worker writes it
        self._open[record.id] = record
        try:
            self.executor.submit(record)
        except Exception as e:  # noqa: BLE001 - a run that cannot start is FAILED with the reason
            logger.exception("run %s could not start", record.id)
            self._finish(record, RunState.FAILED, f"could not start: {type(e).__name__}: {e}")

    def _finish(self, record: RunRecord, state: RunState, message: str) -> RunRecord:
        record = record.model_copy(update={"state": state, "message": message, "finished_at": utcnow()})
        self.store.put(record)
        self._open.pop(record.id, None)
        return record
