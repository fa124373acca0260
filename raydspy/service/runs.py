"""The run record: what was asked, where the run stands, and what it ended with.

A record is written by the service when a run is submitted (PENDING) and afterwards only by the
run's own worker (RUNNING with the plan, then its final state and summary), except when the
worker can no longer write it (it died: the service marks it FAILED). A cancel request is a
separate marker (`raydspy.service.store.RunStore.request_cancel`), so the two writers never race
on one file.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from raydspy.service.policy import RunPolicy
from raydspy.service.schemas import RunRequest, RunState

__all__ = ["RunRecord", "new_run_id", "utcnow"]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_run_id() -> str:
    """A run id: sortable by creation time (UTC stamp) and unique (random suffix)."""
    return f"run-{utcnow().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


class RunRecord(BaseModel):
    """One run, as persisted in ``{state_uri}/runs/{id}.json``."""

    model_config = ConfigDict(extra="ignore")

    id: str
    request: RunRequest
    state: RunState = RunState.PENDING
    executor: str = Field("task", description="`task` or `job`.")
    policy: RunPolicy | None = Field(
        None, description="The allow-lists of its current attempt, which its worker applies again (None: refused)."
    )
    executor_ref: str | None = Field(None, description="The Ray job's submission id, or the Ray task's id.")
    attempt: int = Field(0, description="How many times the run was dispatched (a re-queued run resumes).")
    dispatched_at: dt.datetime | None = Field(
        None, description="When the current attempt was handed to the executor; None while queued."
    )
    created_at: dt.datetime = Field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    planned: int | None = Field(None, description="Rollouts the run consists of (valid examples × n).")
    resumed: int = Field(0, description="Of those, rollouts committed before this attempt started.")
    summary: dict[str, Any] | None = Field(None, description="`RunSummary.as_dict()` of the finished run.")
    message: str | None = None
    mlflow_tracking_uri: str | None = Field(
        None, description="Where the worker tracks the run in MLflow; None: not tracked."
    )
    mlflow_run_id: str | None = Field(None, description="The MLflow run, once the worker started it.")
