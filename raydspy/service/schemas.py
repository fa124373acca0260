"""Request and response bodies of the HTTP API (pydantic; FastAPI answers 422 with the reason
when a body does not validate, and lists these models in the OpenAPI docs at ``/docs``).

A run request's fields are built from `PipelineConfig` and `TeacherConfig` (as the CLI's flags
are), so the service accepts every run field the CLI has, with the same defaults and limits.
"""

from __future__ import annotations

import copy
import datetime as dt
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from raydspy.core.specs import SPEC_PATTERN
from raydspy.errors import ConfigError
from raydspy.pipeline.config import RUN_FIELDS, PipelineConfig
from raydspy.task import PRESETS, load_task
from raydspy.teacher.client import SAMPLING_FIELDS, TeacherConfig

__all__ = [
    "TeacherSpec",
    "RunRequest",
    "RunState",
    "RunCreated",
    "RunStatus",
    "RunList",
    "UnreadableRun",
    "RolloutPreview",
]

#: Longest name of one path part (a file or folder) on the filesystems runs write to (NAME_MAX).
MAX_NAME_BYTES = 255

#: Most named rewards a request may weight.
MAX_REWARDS = 64


#: An input or output URI as a request may give it.
#: No control characters (a NUL, CR or LF), no path part longer than a file name may be (the
#: policy checks local parts in bytes too); in the schema, so clients and fuzzers see it.
Uri = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        pattern=rf"^([^\x00-\x1f\x7f/]{{0,{MAX_NAME_BYTES}}}/)*[^\x00-\x1f\x7f/]{{0,{MAX_NAME_BYTES}}}$",
    ),
]


def _fields(model: type[BaseModel], names: tuple[str, ...], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """``create_model`` field definitions copied from ``model``: its types, defaults, limits and
    descriptions; the fields in ``optional`` default to None (the service fills them in)."""
    fields: dict[str, Any] = {}
    for name in names:
        info = copy.copy(model.model_fields[name])
        if name in optional:
            info.default = None
            fields[name] = (info.annotation | None, info)
        else:
            fields[name] = (info.annotation, info)
    return fields


TeacherSpec = create_model(
    "TeacherSpec",
    __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
    __doc__="The teacher a run samples from (an OpenAI-compatible endpoint the service allows); "
    "``base_url`` and ``model`` default to the service's teacher. Fields as `TeacherConfig`'s.",
    **_fields(TeacherConfig, ("base_url", "model", *SAMPLING_FIELDS), optional=("base_url", "model")),
)


class _RunRequestBase(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,  # JSON has no NaN or infinity: such a record could not be read back
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

    task: Literal[tuple(PRESETS)] | None = Field(  # type: ignore[valid-type]
        None,
        description="A preset task: its program, rewards, reward weights, input, "
        "n, id field and teacher sampling fill in what the request leaves out (the request's own values win).",
    )
    program: str | None = Field(
        None,
        max_length=256,
        pattern=SPEC_PATTERN,
        description="MODULE:ATTR of a dspy.Module, a dspy.Module class or a factory, defined in an allow-listed "
        "module (ATTR a public name there). Required without a task.",
    )
    input_uri: Uri | None = Field(
        None,
        description="Examples: CSV, JSONL or Parquet file or folder. Required without a task.",
    )
    output_uri: Uri = Field(..., description="Folder or prefix for the rollout Parquet files.")
    rewards: str | None = Field(
        None,
        max_length=256,
        pattern=SPEC_PATTERN,
        description="MODULE:ATTR of reward_fn, {name: fn} or a factory, defined in an allow-listed module.",
    )
    reward_weights: dict[Annotated[str, Field(min_length=1, max_length=128)], Annotated[float, Field(ge=0, le=1e6)]] = (
        Field(
            default_factory=dict,
            max_length=MAX_REWARDS,
            description="Weight of each named reward in the combined reward (default: the plain mean); "
            "each name must be one of the rewards'.",
        )
    )
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)  # type: ignore[valid-type]
    mlflow: bool = Field(False, description="Track the run in MLflow (the service's mlflow_tracking_uri).")
    mlflow_traces: int = Field(
        32, ge=0, le=1000, description="With `mlflow`: rollouts logged as MLflow traces, failed ones first (0: none)."
    )

    def with_task(self) -> _RunRequestBase:
        """This request with its task's settings where the request leaves them out, as ``raydspy
        collect --task`` takes them; the request itself when it names no task.

        Raises:
            ConfigError: no task and no program or input, or the task sets no input and the
                request gives none (checked here, not in the schema: it depends on the preset).
        """
        if self.task is None:
            missing = [name for name in ("program", "input_uri") if getattr(self, name) is None]
            if missing:
                raise ConfigError(f"give {' and '.join(missing)}, or a task that sets them")
            return self
        task = load_task(self.task)
        own = {
            "program": task.program,
            "rewards": task.rewards,
            "reward_weights": task.reward_weights,
            "input_uri": task.input,
            "n": task.n,
            "id_field": task.id_field,
        }
        update = {k: v for k, v in own.items() if v is not None and _unset(self, k)}
        sampling = {k: v for k, v in task.teacher_defaults().items() if _unset(self.teacher, k)}
        update["teacher"] = self.teacher.model_copy(update=sampling)
        merged = self.model_copy(update=update)
        if merged.input_uri is None:
            raise ConfigError(f"the task {task.name!r} sets no input: give input_uri")
        return merged

    def run_fields(self) -> dict[str, Any]:
        """The request's `PipelineConfig` fields (`raydspy.pipeline.config.RUN_FIELDS`)."""
        return {name: getattr(self, name) for name in RUN_FIELDS}


def _unset(model: BaseModel, name: str) -> bool:
    """Whether a request left ``name`` to its default (omitted, or sent as null)."""
    return name not in model.model_fields_set or getattr(model, name) is None


RunRequest = create_model(
    "RunRequest",
    __base__=_RunRequestBase,
    __doc__="A collection run, as ``raydspy collect`` takes it: the run fields are `PipelineConfig`'s "
    "(``n`` and ``num_actors`` also within the service's ``max_n`` and ``max_actors``).",
    **_fields(PipelineConfig, RUN_FIELDS),
)


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
    rollouts_done: int | None = Field(
        ..., description="Rollout rows committed under the output (error rows included); None: see output_error."
    )
    rollouts_total: int | None = Field(
        None, description="Rollouts the run consists of (examples × n); known once it started."
    )
    errors: int | None = Field(..., description="Committed rows with an error; None: see output_error.")
    mean_reward: float | None = Field(None, description="Mean combined reward of the committed rows that have one.")
    rollouts_per_s: float | None = Field(None, description="Rollouts this run committed per second since it started.")
    cancel_requested: bool = False
    mlflow_run_id: str | None = Field(None, description="The run's MLflow run, when it is tracked.")
    message: str | None = Field(None, description="Why it failed or stopped.")
    output_error: str | None = Field(
        None, description="Why the committed rollouts could not be counted now (the counts are then None)."
    )
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


class UnreadableRun(BaseModel):
    """A run whose record the service cannot read (it is left out of the queue and the counts)."""

    id: str
    error: str


class RunList(BaseModel):
    runs: list[RunStatus]
    unreadable: list[UnreadableRun] = Field(
        default_factory=list, description="Records that could not be read, each with why (skipped, and logged)."
    )


class RolloutPreview(BaseModel):
    """The first committed rollout rows of a run (JSON columns decoded)."""

    id: str
    rows: list[dict[str, Any]]
