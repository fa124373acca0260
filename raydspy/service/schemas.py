"""Request and response bodies of the HTTP API (pydantic; FastAPI answers 422 with the reason
when a body does not validate, and lists these models in the OpenAPI docs at ``/docs``)."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TeacherSpec", "RunRequest", "RunState", "RunCreated", "RunStatus", "RunList", "RolloutPreview"]

_SPEC = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class TeacherSpec(BaseModel):
    """The teacher a run samples from (an OpenAI-compatible endpoint the service allows)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(
        None, max_length=512, description="Base URL ending in /v1; default: the service's teacher."
    )
    model: str | None = Field(None, max_length=256, description="Model name it serves; default: the service's.")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="Sampling temperature; > 0 for distinct rollouts.")
    max_tokens: int = Field(256, ge=1, le=32768, description="Completion tokens per LM call.")
    structured_outputs: bool = Field(False, description="Send each signature's JSON schema (vLLM structured outputs).")
    max_text_chars: int | None = Field(
        None, ge=1, description="With structured outputs: bound each free-text output field to this many characters."
    )
    seed: int | None = Field(
        None,
        ge=0,
        description="Seed the rollouts: each one's requests carry a seed derived "
        "from its rollout id, so the same run again draws the same samples (TeacherConfig.seed).",
    )


class RunRequest(BaseModel):
    """A collection run, as `raydspy collect` takes it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "program": "raydspy.programs.banking77:program",
                    "rewards": "raydspy.programs.banking77:rewards",
                    "input_uri": "s3://data/banking77/train.csv",
                    "output_uri": "s3://rollouts/banking77/run-1",
                    "n": 3,
                    "teacher": {"temperature": 1.0, "max_tokens": 192, "structured_outputs": True},
                }
            ]
        },
    )

    program: str = Field(
        ...,
        max_length=256,
        pattern=_SPEC,
        description="MODULE:ATTR of a dspy.Module (or a factory); module allow-listed.",
    )
    input_uri: str = Field(
        ..., min_length=1, max_length=1024, description="Examples: CSV, JSONL or Parquet file or folder."
    )
    output_uri: str = Field(
        ..., min_length=1, max_length=1024, description="Folder or prefix for the rollout Parquet files."
    )
    n: int = Field(1, ge=1, description="Rollouts per example (at most the service's max_n).")
    rewards: str | None = Field(
        None, max_length=256, pattern=_SPEC, description="MODULE:ATTR of reward_fn or {name: fn}."
    )
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    dry_run: bool = Field(False, description="Format prompts only; call no LM.")
    limit: int | None = Field(None, ge=1, le=10_000_000, description="Use only the first LIMIT examples.")
    id_field: str | None = Field(None, max_length=128, description="Column holding example ids.")
    actors: int = Field(2, ge=1, description="Collect actors (at most the service's max_actors).")
    threads: int = Field(32, ge=1, le=512, description="Rollouts in flight per actor.")
    batch_size: int = Field(8, ge=1, le=4096, description="Examples per committed file (batch_size × n rollouts).")
    max_error_rate: float = Field(
        0.5, ge=0.0, le=1.0, description="Stop (resumably) above this share of failed rollouts."
    )
    mlflow: bool = Field(False, description="Track the run in MLflow (the service's mlflow_tracking_uri).")


class RunState(str, Enum):
    """PENDING (queued) → RUNNING → SUCCEEDED | STOPPED (incomplete: error budget) | FAILED | CANCELLED."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    STOPPED = "STOPPED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self not in (RunState.PENDING, RunState.RUNNING)


class RunCreated(BaseModel):
    id: str = Field(..., description="The run id.")
    state: RunState


class RunStatus(BaseModel):
    """Where a run stands. Counts are of the rollout rows committed under its output URI."""

    id: str
    state: RunState
    program: str
    input_uri: str
    output_uri: str
    n: int
    dry_run: bool
    rollouts_done: int = Field(..., description="Rollout rows committed under the output (error rows included).")
    rollouts_total: int | None = Field(
        None, description="Rollouts the run consists of (examples × n); known once it started."
    )
    errors: int = Field(..., description="Committed rows with an error.")
    mean_reward: float | None = Field(None, description="Mean combined reward of the committed rows that have one.")
    rollouts_per_s: float | None = Field(None, description="Rollouts this run committed per second since it started.")
    cancel_requested: bool = False
    mlflow_run_id: str | None = Field(None, description="The run's MLflow run, when it is tracked.")
    message: str | None = Field(None, description="Why it failed or stopped.")
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


class RunList(BaseModel):
    runs: list[RunStatus]


class RolloutPreview(BaseModel):
    """The first committed rollout rows of a run (JSON columns decoded)."""

    id: str
    rows: list[dict[str, Any]]
