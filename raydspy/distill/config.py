"""Training-job configs: what `jobs/sft.py` and `jobs/grpo.py` (and ``raydspy train``) read from a YAML file.

One pydantic model, validated when built, for both methods; ``jobs/configs/*.yaml`` are instances
(the CPU one for the embedded 135M student, the GPU one for Llama-3.2-1B-Instruct on several
workers with LoRA and bf16). Anything TRL takes that is not a field here goes in ``trl`` and is
passed to `trl.SFTConfig` / `trl.GRPOConfig` as is.

Example:
    >>> config = TrainConfig.from_yaml("jobs/configs/sft-cpu.yaml")  # doctest: +SKIP
    >>> config.model_copy(update={"max_steps": 2})  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from raydspy.core.configfile import read_yaml_model
from raydspy.teacher.embedded import EMBEDDED_URI

__all__ = ["LoraSettings", "GRPOSettings", "KDSettings", "TrainConfig"]


class LoraSettings(BaseModel):
    """LoRA through peft: only low-rank adapters train; the saved model has them merged."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="Rank of the adapters.")
    alpha: int = Field(32, ge=1, description="lora_alpha: the adapters' scale is alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapters' input.")
    target_modules: list[str] | Literal["all-linear"] = Field("all-linear", description="Modules that get adapters.")


class GRPOSettings(BaseModel):
    """What GRPO needs beyond SFT: the task whose rewards score the completions, and sampling.

    The program and rewards come from ``task`` (a preset or a task YAML: `raydspy.task`), or from
    ``program`` / ``rewards``, which override the task's. Each completion is scored by replaying
    its rollout (`raydspy.distill.replay`): the format reward, plus every task reward.
    """

    model_config = ConfigDict(extra="forbid")

    task: str | None = Field(None, description="Preset name or task YAML naming the program and its rewards.")
    program: str | None = Field(
        None, description="MODULE:ATTR of the DSPy program the prompts came from (default: the task's)."
    )
    rewards: str | None = Field(None, description="MODULE:ATTR of the task's rewards (default: the task's).")
    adapter: Literal["plain", "chat"] = Field(
        "plain",
        description="The student's adapter, whose prompts the "
        "rollouts were recorded with: plain (JSON prompts) or chat (ChatAdapter).",
    )
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (the group).")
    max_completion_length: int = Field(128, ge=1, description="Tokens per sampled completion.")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature of the completions.")
    reward_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Weight of each reward (format and the task's, by name) in the advantage; unnamed ones weigh 1.",
    )

    @model_validator(mode="after")
    def _program_known(self) -> GRPOSettings:
        if self.task is None and self.program is None:
            raise ValueError("grpo needs a task (a preset or task YAML) or a program")
        return self


class KDSettings(BaseModel):
    """Token-level distillation on the teacher's top-k logprobs (`raydspy.distill.kd`)."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Weight of the distillation term; 1 - alpha weighs cross-entropy on the sampled tokens.",
    )
    temperature: float = Field(
        1.0, gt=0.0, description="Softens teacher and student alike; the KD term is scaled by its square."
    )


class TrainConfig(BaseModel):
    """One training run on Ray Train.

    Storage: checkpoints and metrics go to ``storage_path/name`` (local folder, s3:// or gs://);
    the final model (merged when LoRA) is the run's last checkpoint, in its ``model/`` folder.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        EMBEDDED_URI, description="Student: a local checkpoint, a hub id, or raydspy://smollm2-135m-instruct."
    )
    dataset: str = Field(..., description="URI of an export (`raydspy export sft|grpo|kd`).")
    storage_path: str = Field("runs/train", description="Where Ray Train writes the run (local, s3://, gs://).")
    name: str = Field("sft", description="Run name: the folder under storage_path.")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (data parallel).")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    cpus_per_worker: float = Field(1.0, gt=0, description="Logical CPUs each worker reserves.")
    lora: LoraSettings | None = Field(None, description="Train LoRA adapters instead of all weights.")
    bf16: bool = Field(
        False,
        description=(
            "bfloat16 mixed precision: float32 weights (bf16 for a frozen LoRA base), bf16 compute. GPUs, "
            "and CPUs with AVX-512 BF16 or AMX (SFT 1.8x faster per row on AVX-512 BF16: "
            "benchmarks/results/sft-step.txt); elsewhere emulated and slow."
        ),
    )
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate of AdamW.")
    max_steps: int = Field(-1, description="Optimizer steps; -1 to run num_train_epochs instead.")
    num_train_epochs: float = Field(1.0, gt=0, description="Passes over the dataset (when max_steps is -1).")
    per_device_train_batch_size: int = Field(4, ge=1, description="Rows per step on each worker.")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(
        1536, ge=16, description="Tokens per training sequence (prompt + completion); longer ones are cut."
    )
    shared_prefix: bool = Field(
        False,
        description="SFT only: compute the prompt prefix the rows of a batch share once "
        "per step instead of once per row, and the prompts without the LM head; exact "
        "(same loss and gradients: `raydspy.distill.shared_prefix`). Pays off when rows "
        "repeat long instructions, as DSPy programs' do; other batches train as usual. "
        "Turns off TRL's gradient checkpointing, which would drop the prompts' KV cache: "
        "more activation memory, no recomputation.",
    )
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(500, ge=1, description="Steps between intermediate checkpoints.")
    seed: int = Field(
        0, description="Seed of the data order and sampling: a second pass with another sees other rows first."
    )
    grpo: GRPOSettings | None = Field(None, description="GRPO only: the task and sampling.")
    kd: KDSettings | None = Field(None, description="KD only: the loss's weights (default: KDSettings()).")
    trl: dict[str, Any] = Field(
        default_factory=dict,
        description="More arguments of trl.SFTConfig / trl.GRPOConfig (KD: transformers.TrainingArguments).",
    )

    @model_validator(mode="after")
    def _shared_prefix_without_checkpointing(self) -> TrainConfig:
        # Gradient checkpointing recomputes each layer in the backward and drops the KV cache the
        # shared prefix lives in; train.py turns TRL's default (on) off when shared_prefix is set.
        if self.shared_prefix and self.trl.get("gradient_checkpointing"):
            raise ValueError(
                "shared_prefix needs gradient checkpointing off: drop trl.gradient_checkpointing "
                "or set shared_prefix: false"
            )
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a config file; ``overrides`` that are not None replace its fields.

        Raises:
            ConfigError: the file is missing, not YAML, or not a valid config (the message lists why).
        """
        return read_yaml_model(cls, path, "training config", overrides)
