"""raydspy: rollouts of DSPy programs on a vLLM teacher, at Ray scale, for distillation.

In one process, `Collect` (the seed API). On a Ray cluster, `run_pipeline` with a `TeacherConfig`
and a `PipelineConfig`. Rows follow `ROLLOUT_SCHEMA`.
"""

from raydspy.collect import Collect
from raydspy.errors import ConfigError, InputError, RaydspyError, StorageError, TeacherUnreachableError
from raydspy.pipeline import PipelineConfig, run_pipeline
from raydspy.rewards import ExactMatch, FormatCompliance, RewardSet, build_format_reward
from raydspy.rollouts import ROLLOUT_SCHEMA
from raydspy.storage import StorageOptions
from raydspy.summary import RunSummary
from raydspy.teacher import TeacherConfig

__all__ = [
    "Collect",
    "build_format_reward",
    "ExactMatch",
    "FormatCompliance",
    "RewardSet",
    "run_pipeline",
    "PipelineConfig",
    "TeacherConfig",
    "StorageOptions",
    "RunSummary",
    "ROLLOUT_SCHEMA",
    "RaydspyError",
    "ConfigError",
    "InputError",
    "StorageError",
    "TeacherUnreachableError",
]
