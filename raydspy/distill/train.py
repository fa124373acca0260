"""SFT, GRPO and KD of the student on Ray Train: a `TorchTrainer` whose workers each run a trainer.

    driver: run_training("sft", config)
      │ TorchTrainer(ScalingConfig(num_workers, use_gpu), RunConfig(storage_path))
      ▼
    each worker: load the export (`load_export`) → TRL SFTTrainer / GRPOTrainer (LoRA through peft
      when configured; DDP across workers, set up by Ray Train) → RayTrainReportCallback reports
      metrics and each saved checkpoint → the final model (LoRA merged) reported as the last
      checkpoint, under ``model/``: a plain Hugging Face folder that transformers and vLLM load.

SFT trains on the export's ``messages`` split into ``prompt`` (system, user, …) and ``completion``
(the assistant's answer), so the loss covers only the answer (TRL's completion-only loss), not the
long instructions every example repeats; with ``shared_prefix`` the prompt prefix the rows of a
batch share is computed once per step, not once per row (`raydspy.distill.shared_prefix`, exact).
GRPO samples ``num_generations`` completions per prompt and scores them with the format reward and
each of the task's rewards, replaying the prompt's rollout with the completion in place
(`raydspy.distill.rewards`, `raydspy.distill.replay`): any program, one predictor or several.
KD trains on the teacher's own token ids against its top-k logprobs (`raydspy.distill.kd`).

Example (after ``ray.init()``):
    >>> config = TrainConfig.from_yaml("jobs/configs/sft-cpu.yaml", dataset="datasets/sft")  # doctest: +SKIP
    >>> result = run_training("sft", config)  # doctest: +SKIP
    >>> result.model_path  # doctest: +SKIP
    '/abs/runs/train/sft/checkpoint_2026-.../model'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow.fs as pafs

from raydspy.core.storage import StorageOptions, resolve
from raydspy.distill.config import GRPOSettings, TrainConfig
from raydspy.distill.rewards import FORMAT
from raydspy.errors import ConfigError
from raydspy.teacher.embedded import resolve_model_source

__all__ = ["TrainResult", "run_training", "train_loop", "MODEL_DIR"]

#: Folder of the final model inside the run's last checkpoint.
MODEL_DIR = "model"

Method = Literal["sft", "grpo", "kd"]


@dataclass(frozen=True)
class TrainResult:
    """What a training run left.

    Attributes:
        model_path: the final model's folder, in ``filesystem``'s syntax (a local path for a local
            storage_path): load it with ``from_pretrained`` or serve it with vLLM.
        filesystem: where ``model_path`` lives.
        metrics: the last metrics reported (TRL's log: ``loss``, ``train_runtime``, rewards, ...).
        run_path: the Ray Train run folder (checkpoints, results).
    """

    model_path: str
    filesystem: pafs.FileSystem
    metrics: dict[str, Any]
    run_path: str


def run_training(
    method: Method,
    config: TrainConfig,
    storage: StorageOptions | None = None,
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train the student with ``method`` on Ray Train (``ray.init`` first) and return the final model.

    ``on_progress``, when given, is called on the driver (from a thread) with rank 0's progress
    after each optimizer step: ``{"step", "max_steps", "elapsed_s"}`` and TRL's latest log entries
    such as ``loss`` (`raydspy.distill.progress`).

    Raises:
        ConfigError: an unknown method, or a run that reported no final checkpoint.
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if method not in ("sft", "grpo", "kd"):
        raise ConfigError(f"method must be 'sft', 'grpo' or 'kd', got {method!r}")
    if method == "grpo":
        config = config.model_copy(update={"grpo": resolve_grpo(config)})
    # Resolved on the driver: the embedded model converts once here, not once per worker; and
    # local paths become absolute, since Ray Train workers do not run in the driver's directory.
    model_path = str(resolve_model_source(config.model))
    if os.path.isdir(model_path):
        model_path = os.path.abspath(model_path)
    dataset = resolve(config.dataset, storage)
    if isinstance(dataset.filesystem, pafs.LocalFileSystem):
        config = config.model_copy(update={"dataset": dataset.path})
    location = resolve(config.storage_path, storage)
    local = isinstance(location.filesystem, pafs.LocalFileSystem)
    run_config = RunConfig(
        name=config.name,
        storage_path=location.path,
        storage_filesystem=None if local else location.filesystem,
    )
    scaling = ScalingConfig(
        num_workers=config.num_workers, use_gpu=config.use_gpu, resources_per_worker={"CPU": config.cpus_per_worker}
    )
    from raydspy.distill.progress import ProgressFeed

    if method == "grpo":  # before any worker starts: the weights name rewards, the replay reproduces the prompts
        scorer = grpo_scorer(config)
        unknown = sorted(set(config.grpo.reward_weights) - {FORMAT, *scorer.reward_names})
        if unknown:
            raise ConfigError(
                f"grpo.reward_weights names {unknown}, which are not rewards of the task; "
                f"its rewards: {[FORMAT, *scorer.reward_names]}"
            )
        scorer.check(_first_rows(config.dataset, storage))
    loop_config = {"method": method, "config": config.model_dump(), "model_path": model_path, "storage": storage}
    with contextlib.ExitStack() as stack:
        if on_progress is not None:
            loop_config["progress"] = stack.enter_context(ProgressFeed(on_progress)).queue
        trainer = TorchTrainer(train_loop, train_loop_config=loop_config, scaling_config=scaling, run_config=run_config)
        result = trainer.fit()
    if result.checkpoint is None:
        raise ConfigError(f"the {method} run under {location.uri!r} reported no checkpoint")
    return TrainResult(
        model_path=f"{result.checkpoint.path.rstrip('/')}/{MODEL_DIR}",
        filesystem=result.checkpoint.filesystem,
        metrics=dict(result.metrics or {}),
        run_path=str(result.path),
    )


def train_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: build the TRL trainer, train, report the final model (rank 0 saves it)."""
    import torch
    from ray.train.huggingface.transformers import RayTrainReportCallback
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = TrainConfig.model_validate(loop_config["config"])
    model_path = loop_config["model_path"]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # bf16 is mixed precision: TRL computes under bf16 autocast. Only a frozen LoRA base is loaded in
    # bf16 (half the memory; peft keeps the adapters in float32). A fully trained model keeps float32
    # weights for AdamW: its steps (lr x ~1 per weight) fall below bf16's 2^-8 relative resolution.
    dtype = torch.bfloat16 if config.bf16 and config.lora is not None else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    scratch = tempfile.mkdtemp(prefix=f"raydspy-{config.name}-")
    common = dict(
        output_dir=scratch,
        learning_rate=config.learning_rate,
        max_steps=config.max_steps,
        num_train_epochs=config.num_train_epochs,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        report_to="none",
        bf16=config.bf16,
        use_cpu=not config.use_gpu,
        seed=config.seed,
        disable_tqdm=True,
    )
    trainer = _build_trainer(loop_config["method"], config, model, tokenizer, common, loop_config.get("storage"))
    trainer.add_callback(RayTrainReportCallback())
    if loop_config.get("progress") is not None:
        from raydspy.distill.progress import ProgressCallback

        trainer.add_callback(ProgressCallback(loop_config["progress"]))
    trainer.train()
    _report_final(trainer, tokenizer)


def _build_trainer(
    method: str, config: TrainConfig, model, tokenizer, common: dict[str, Any], storage: StorageOptions | None
):
    from raydspy.distill.exports import load_export

    dataset = load_export(config.dataset, storage)
    peft_config = None
    if config.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=config.lora.r,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=config.lora.target_modules,
            task_type="CAUSAL_LM",
        )
    if method == "kd":
        from raydspy.distill.kd import build_kd_trainer

        return build_kd_trainer(config, model, tokenizer, common, dataset, peft_config)
    if method == "sft":
        from trl import SFTConfig, SFTTrainer

        from raydspy.distill.shared_prefix import SharedPrefixSFTTrainer

        dataset = prompt_completion(dataset)
        extra = dict(config.trl)
        if config.shared_prefix:
            # TRL turns gradient checkpointing on by default: it would drop the prompts' KV cache.
            extra.setdefault("gradient_checkpointing", False)
        args = SFTConfig(**common, max_length=config.max_length, **extra)
        trainer_class = SharedPrefixSFTTrainer if config.shared_prefix else SFTTrainer
        return trainer_class(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
        )
    from trl import GRPOConfig, GRPOTrainer

    grpo = config.grpo
    funcs = grpo_rewards(config)
    args = GRPOConfig(
        **common,
        num_generations=grpo.num_generations,
        max_completion_length=grpo.max_completion_length,
        temperature=grpo.temperature,
        reward_weights=[grpo.reward_weights.get(f.__name__, 1.0) for f in funcs],
        remove_unused_columns=False,  # the task reward reads the `inputs` column
        **config.trl,
    )
    return GRPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        reward_funcs=funcs,
        peft_config=peft_config,
    )


def prompt_completion(dataset):
    """SFT export rows (``messages``) → TRL's conversational prompt-completion rows: ``prompt`` is
    every message but the last, ``completion`` the last (the assistant's answer)."""
    return dataset.map(
        lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
        remove_columns=dataset.column_names,
    )


def resolve_grpo(config: TrainConfig) -> GRPOSettings:
    """``config.grpo`` with its task resolved: ``program`` and ``rewards`` filled from the task
    where unset, the task's reward weights under GRPO's own. Done on the driver, so workers
    neither read the task file nor write a preset's data.

    Raises:
        ConfigError: no ``grpo`` section, or a task that does not load.
    """
    from raydspy.task import load_task

    grpo = config.grpo
    if grpo is None:
        raise ConfigError(
            "GRPO needs a `grpo` section naming the task (or program and rewards): "
            "grpo: {task: my-task.yaml}, or `raydspy train grpo --task ...`"
        )
    if grpo.task is None:
        return grpo
    task = load_task(grpo.task)
    return grpo.model_copy(
        update={
            "program": grpo.program or task.program,
            "rewards": grpo.rewards or task.rewards,
            "reward_weights": {**task.reward_weights, **grpo.reward_weights},
        }
    )


def _student_adapter(grpo: GRPOSettings):
    from raydspy.distill.evaluate import adapter_for

    return adapter_for(grpo.adapter)


def grpo_scorer(config: TrainConfig):
    """The `raydspy.distill.replay.ReplayScorer` of a resolved GRPO config."""
    from raydspy.distill.replay import ReplayScorer

    return ReplayScorer(config.grpo.program, config.grpo.rewards, _student_adapter(config.grpo))


def grpo_rewards(config: TrainConfig) -> list[Any]:
    """The GRPO reward functions of a resolved config (`resolve_grpo`): the format reward of each
    completion under the student's adapter and each of the task's rewards, scored by replaying
    the completion's rollout (`raydspy.distill.rewards`)."""
    from raydspy.distill.rewards import grpo_reward_funcs

    return grpo_reward_funcs(config.grpo.program, config.grpo.rewards, _student_adapter(config.grpo))


def _first_rows(uri: str, storage: StorageOptions | None, count: int = 8) -> list[dict[str, Any]]:
    """The first ``count`` rows of an export, read on the driver (pyarrow, no datasets)."""
    import pyarrow.dataset as pads

    from raydspy.pipeline.commits import committed_files

    location = resolve(uri, storage)
    files = committed_files(location)
    if not files:
        raise ConfigError(f"no training rows under {uri!r}: run `raydspy export grpo` first")
    return pads.dataset(files, filesystem=location.filesystem, format="parquet").head(count).to_pylist()


def _report_final(trainer, tokenizer) -> None:
    """Report the final metrics from every worker and the final model from rank 0 (LoRA merged)."""
    import ray.train

    metrics: dict[str, Any] = {}
    for entry in trainer.state.log_history:
        metrics.update({k: v for k, v in entry.items() if isinstance(v, (int, float))})
    metrics["global_step"] = trainer.state.global_step
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    model = trainer.model
    model = getattr(model, "module", model)  # DDP wraps it
    if hasattr(model, "merge_and_unload"):  # peft
        model = model.merge_and_unload()
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, MODEL_DIR)
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
