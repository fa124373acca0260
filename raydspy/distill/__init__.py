"""Distillation: rollouts → training sets (SFT, DPO, GRPO, KD) → student trained on Ray Train with TRL
→ evaluated against the teacher on the task's held-out examples, for any DSPy program.

| module        | job                                                                  |
| ------------- | -------------------------------------------------------------------- |
| `exports`     | `to_sft`, `to_dpo`, `to_grpo`, `to_kd`: Ray Data over committed rollouts → TRL's Parquet layouts |
| `schemas`     | the Arrow schemas of the exports' rows (token columns included)     |
| `cards`       | the dataset card each export writes beside its rows                  |
| `config`      | `TrainConfig`: the YAML of a training job (jobs/configs/)            |
| `train`       | `run_training`: Ray Train TorchTrainer running TRL's SFTTrainer / GRPOTrainer |
| `progress`    | rank 0's training progress to the driver (a Ray queue), for the CLI's bar |
| `replay`      | a completion scored by the task's rewards, its rollout replayed       |
| `rewards`     | the format reward and the task's rewards as TRL reward functions      |
| `evaluate`    | each reward and format compliance per model; Markdown, JSON and PNG  |
| `serve`       | the Serve app builder of a trained student (serve_configs/student-*.yaml) |
| `cli`         | ``raydspy export|train|evaluate``                                    |
"""

from typing import TYPE_CHECKING

from raydspy._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        ["to_sft", "to_dpo", "to_grpo", "to_kd", "read_rollouts", "load_export", "ExportSummary"],
        "raydspy.distill.exports",
    ),
    **dict.fromkeys(["TrainConfig", "LoraSettings", "GRPOSettings"], "raydspy.distill.config"),
    **dict.fromkeys(["run_training", "TrainResult"], "raydspy.distill.train"),
    **dict.fromkeys(["GRPOReward", "grpo_reward_funcs"], "raydspy.distill.rewards"),
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from raydspy.distill.config import GRPOSettings, LoraSettings, TrainConfig
    from raydspy.distill.exports import ExportSummary, load_export, read_rollouts, to_dpo, to_grpo, to_kd, to_sft
    from raydspy.distill.rewards import GRPOReward, grpo_reward_funcs
    from raydspy.distill.train import TrainResult, run_training

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
