"""raydspy: rollouts of DSPy programs on a vLLM teacher, at Ray scale, for distillation.

In one process, `Collect` (the seed API). On a Ray cluster, `run_pipeline` with a `TeacherConfig`
and a `PipelineConfig`. Rows follow `ROLLOUT_SCHEMA`. A `TaskSpec` names the program, rewards and
data that every step of the loop reads.

The names below are imported on first use (PEP 562), so ``import raydspy`` and ``raydspy --help``
do not load DSPy or Ray Data until a command needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raydspy._lazy import lazy_exports

_EXPORTS = {
    "Collect": "raydspy.core.collect",
    "build_format_reward": "raydspy.core.rewards",
    "ExactMatch": "raydspy.core.rewards",
    "FormatCompliance": "raydspy.core.rewards",
    "RewardSet": "raydspy.core.rewards",
    "DSPyMetric": "raydspy.core.rewards",
    "run_pipeline": "raydspy.pipeline.driver",
    "PipelineConfig": "raydspy.pipeline.config",
    "TeacherConfig": "raydspy.teacher.client",
    "TaskSpec": "raydspy.task",
    "load_task": "raydspy.task",
    "StorageOptions": "raydspy.core.storage",
    "RunSummary": "raydspy.pipeline.summary",
    "RolloutStats": "raydspy.core.stats",
    "ROLLOUT_SCHEMA": "raydspy.core.rollouts",
    "RaydspyError": "raydspy.errors",
    "ConfigError": "raydspy.errors",
    "InputError": "raydspy.errors",
    "StorageError": "raydspy.errors",
    "TeacherUnreachableError": "raydspy.errors",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from raydspy.core.collect import Collect
    from raydspy.core.rewards import DSPyMetric, ExactMatch, FormatCompliance, RewardSet, build_format_reward
    from raydspy.core.rollouts import ROLLOUT_SCHEMA
    from raydspy.core.stats import RolloutStats
    from raydspy.core.storage import StorageOptions
    from raydspy.errors import ConfigError, InputError, RaydspyError, StorageError, TeacherUnreachableError
    from raydspy.pipeline.config import PipelineConfig
    from raydspy.pipeline.driver import run_pipeline
    from raydspy.pipeline.summary import RunSummary
    from raydspy.task import TaskSpec, load_task
    from raydspy.teacher.client import TeacherConfig


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
