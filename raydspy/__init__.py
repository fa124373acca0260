"""raydspy: rollouts of DSPy programs on a vLLM teacher, at Ray scale, for distillation."""

from raydspy.collect import Collect
from raydspy.errors import ConfigError, InputError, RaydspyError, StorageError, TeacherUnreachableError
from raydspy.rewards import ExactMatch, FormatCompliance, RewardSet, build_format_reward
from raydspy.rollouts import ROLLOUT_SCHEMA

__all__ = [
    "Collect",
    "build_format_reward",
    "ExactMatch",
    "FormatCompliance",
    "RewardSet",
    "ROLLOUT_SCHEMA",
    "RaydspyError",
    "ConfigError",
    "InputError",
    "StorageError",
    "TeacherUnreachableError",
]
