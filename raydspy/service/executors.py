"""How a run executes, away from the HTTP replica, so the endpoint answers while it works.

- `TaskExecutor`: each run is a Ray task (``raydspy.service.worker.execute_run``) submitted by the
  service replica, which owns it: if the replica restarts, Ray ends its tasks, and the new
  replica re-queues every run its records still show as running (runs resume: only the missing
  rollouts are done).
- `JobExecutor`: each run is a Ray job (`JobSubmissionClient`, submission id = run id) whose
  driver is ``python -m raydspy.service.worker``; jobs live on the head's job manager, outlive
  the replica, and show in the Ray Dashboard's Jobs page.

Both answer the same three calls: `submit`, `cancel`, `outcome` (the state a run ended in when
its worker could not record it, e.g. it was killed).
"""

from __future__ import annotations

import shlex
import sys
import threading
from typing import Any, Protocol

import ray

from raydspy.service.runs import RunRecord
from raydspy.service.schemas import RunState
from raydspy.service.settings import ServiceSettings

__all__ = ["Executor", "TaskExecutor", "JobExecutor", "make_executor"]


class Executor(Protocol):
    name: str

    def reference(self, record: RunRecord) -> str:
        """The reference the run's current attempt will have (recorded before `submit`)."""

    def submit(self, record: RunRecord) -> None:
        """Start the run's current attempt."""

    def cancel(self, record: RunRecord) -> None:
        """Ask the running worker to stop (it records CANCELLED itself)."""

    def outcome(self, record: RunRecord) -> tuple[RunState, str] | None:
        """(state, message) when the run's worker has ended without recording it; else None."""


@ray.remote(num_cpus=0, max_retries=0)
def _run_task(run_id: str, state_uri: str, s3_endpoint_url: str | None) -> str:
    from raydspy.service.worker import execute_run

    return execute_run(run_id, state_uri, s3_endpoint_url)


class TaskExecutor:
    """Runs as Ray tasks of this process (see the module docstring)."""

    name = "task"

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self._refs: dict[str, ray.ObjectRef] = {}
        self._lock = threading.Lock()

    def reference(self, record: RunRecord) -> str:
        return f"task:{record.id}:{record.attempt}"

    def submit(self, record: RunRecord) -> None:
        options: dict[str, Any] = {"name": f"raydspy-{record.id}"}
        if self.settings.job_runtime_env:
            options["runtime_env"] = self.settings.job_runtime_env
        ref = _run_task.options(**options).remote(record.id, self.settings.state_uri, self.settings.s3_endpoint_url)
        with self._lock:
            self._refs[record.id] = ref

    def cancel(self, record: RunRecord) -> None:
        with self._lock:
            ref = self._refs.get(record.id)
        if ref is not None:
            # Not forced: the task gets a KeyboardInterrupt and records CANCELLED itself.
            ray.cancel(ref, force=False)

    def outcome(self, record: RunRecord) -> tuple[RunState, str] | None:
        with self._lock:
            ref = self._refs.get(record.id)
        if ref is None:
            # Submitted by an earlier replica: Ray ended it with its owner. Re-queue it.
            return RunState.PENDING, "re-queued: the service restarted while it ran"
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:
            return None
        with self._lock:
            self._refs.pop(record.id, None)
        try:
            ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return RunState.CANCELLED, "cancelled"
        except ray.exceptions.RayError as e:
            return RunState.FAILED, f"worker died: {type(e).__name__}: {str(e).splitlines()[0]}"
        return None  # it returned, so it recorded its own state


class JobExecutor:
    """Runs as Ray jobs (see the module docstring)."""

    name = "job"

    def __init__(self, settings: ServiceSettings):
        from ray.job_submission import JobSubmissionClient

        self.settings = settings
        self.client = JobSubmissionClient(settings.job_address)

    def reference(self, record: RunRecord) -> str:
        return f"raydspy-{record.id}-{record.attempt}"

    def submit(self, record: RunRecord) -> None:
        # The replica's own interpreter: the cluster's nodes run the same image (docker/Dockerfile).
        args = [sys.executable, "-m", "raydspy.service.worker", record.id, "--state-uri", self.settings.state_uri]
        if self.settings.s3_endpoint_url:
            args += ["--s3-endpoint", self.settings.s3_endpoint_url]
        runtime_env = dict(self.settings.job_runtime_env)
        env_vars = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", **runtime_env.get("env_vars", {})}
        runtime_env["env_vars"] = env_vars
        self.client.submit_job(
            entrypoint=shlex.join(args),
            submission_id=record.executor_ref,
            runtime_env=runtime_env,
            entrypoint_num_cpus=0,
            metadata={"raydspy_run": record.id},
        )

    def cancel(self, record: RunRecord) -> None:
        if record.executor_ref:
            self.client.stop_job(record.executor_ref)  # SIGTERM: the worker stops resumably

    def outcome(self, record: RunRecord) -> tuple[RunState, str] | None:
        from ray.job_submission import JobStatus

        if not record.executor_ref:
            return RunState.PENDING, "re-queued: never reached the job manager"
        info = self.client.get_job_info(record.executor_ref)
        if info.status == JobStatus.STOPPED:
            return RunState.CANCELLED, "job stopped"
        if info.status == JobStatus.FAILED:
            return RunState.FAILED, f"job failed: {info.message}"
        if info.status == JobStatus.SUCCEEDED:
            return RunState.FAILED, "job ended without recording an outcome"
        return None


def make_executor(settings: ServiceSettings) -> Executor:
    return JobExecutor(settings) if settings.executor == "job" else TaskExecutor(settings)
