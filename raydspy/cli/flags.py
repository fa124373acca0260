"""The flags of ``collect`` and ``demo``, derived from `TeacherConfig` and `PipelineConfig`
(`raydspy.cli.fields`): each default, limit and description is the model's own.

Importing this module imports pydantic models but neither Ray nor DSPy (``--help`` stays fast):
`TeacherConfig` and `PipelineConfig` import their heavy dependencies only where they call them.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from raydspy.cli.common import add_cluster_args
from raydspy.cli.fields import add_model_flags, build, given
from raydspy.pipeline.config import RUN_FIELDS
from raydspy.teacher.client import SAMPLING_FIELDS

__all__ = ["TEACHER_FLAGS", "PIPELINE_FLAGS", "add_teacher_flags", "add_run_flags", "teacher_from", "pipeline_from"]

#: ``{TeacherConfig field: flag}`` (None: ``--field-name``).
TEACHER_FLAGS = {
    "base_url": "--teacher-url",
    "model": "--teacher-model",
    "api_key": None,
    **dict.fromkeys(SAMPLING_FIELDS),
    "timeout_s": "--request-timeout",
}

#: ``{PipelineConfig field: flag}``.
PIPELINE_FLAGS = {
    **dict.fromkeys(RUN_FIELDS),
    "num_actors": "--actors",
    "threads_per_actor": "--threads",
    "actor_start_timeout_s": "--actor-start-timeout",
}

_API_KEY_ENV = "RAYDSPY_TEACHER_API_KEY"


def add_teacher_flags(parser: argparse.ArgumentParser) -> None:
    from raydspy.teacher.client import TeacherConfig

    group = parser.add_argument_group("teacher (any OpenAI-compatible endpoint)")
    add_model_flags(
        group, TeacherConfig, TEACHER_FLAGS, defaults={"api_key": f"${_API_KEY_ENV}"}, metavars={"timeout_s": "SECONDS"}
    )


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    from raydspy.pipeline.config import PipelineConfig

    group = parser.add_argument_group("run layout")
    add_model_flags(group, PipelineConfig, PIPELINE_FLAGS)
    add_cluster_args(group)
    group.add_argument("--summary-json", default=None, help="also write the summary as JSON to this file")


def teacher_from(args: argparse.Namespace, task_settings: dict[str, Any]) -> Any:
    """The `TeacherConfig` of the command line: its flags, else the task's settings, else the
    model's defaults (the API key: ``$RAYDSPY_TEACHER_API_KEY``).

    Raises:
        ConfigError: a value outside its field's limits (naming the flag).
    """
    from raydspy.teacher.client import TeacherConfig

    values = {k: v for k, v in task_settings.items() if k in TEACHER_FLAGS} | given(args, TEACHER_FLAGS)
    if "api_key" not in values and os.environ.get(_API_KEY_ENV):
        values["api_key"] = os.environ[_API_KEY_ENV]
    return build(TeacherConfig, TEACHER_FLAGS, **values)


def pipeline_from(args: argparse.Namespace, *, task: Any, output_uri: str) -> Any:
    """The `PipelineConfig` of the command line: its flags, else the task's ``n`` and ``id_field``,
    else the model's defaults.

    Raises:
        ConfigError: a value outside its field's limits (naming the flag).
    """
    from raydspy.core.storage import StorageOptions
    from raydspy.pipeline.config import PipelineConfig

    values = {k: getattr(task, k) for k in ("n", "id_field") if getattr(task, k, None) is not None}
    values |= given(args, PIPELINE_FLAGS)
    return build(
        PipelineConfig,
        PIPELINE_FLAGS,
        input_uri=task.input,
        output_uri=output_uri,
        storage=StorageOptions(s3_endpoint_url=args.s3_endpoint),
        **values,
    )
