"""``raydspy export``, ``raydspy train`` and ``raydspy evaluate``: the distillation commands.

`raydspy.cli.main` registers them through `add_commands` and hands their parsed arguments to `run`;
heavy imports (Ray Data, TRL, vLLM clients) happen only inside the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from raydspy.cli import common
from raydspy.cli.common import add_cluster_args, init_ray
from raydspy.cli.evaluate import add_evaluate_command, run_evaluate
from raydspy.cli.fields import add_model_flags, given
from raydspy.cli.progress import TrainProgressBar
from raydspy.core.stats import ACCEPT_REWARD

if TYPE_CHECKING:
    from raydspy.distill.config import TrainConfig

COMMANDS = ("export", "train", "evaluate")

#: ``{TrainConfig field: flag}``: what ``raydspy train`` overrides in its config file.
TRAIN_FLAGS = dict.fromkeys(
    [
        "dataset",
        "model",
        "storage_path",
        "name",
        "num_workers",
        "use_gpu",
        "learning_rate",
        "max_steps",
        "num_train_epochs",
        "per_device_train_batch_size",
        "seed",
    ]
)

EXAMPLES = """\
the CPU recipe (docs/distillation.md):
  raydspy demo --examples 1500 --n 2 --temperature 0.7 --max-text-chars 400 --output rollouts/banking77-distill
  raydspy export sft --rollouts rollouts/banking77-distill --output runs/banking77/datasets/sft
  raydspy train sft --config jobs/configs/sft-cpu.yaml --dataset runs/banking77/datasets/sft --copy-to runs/banking77/sft-model
  raydspy evaluate --student runs/banking77/sft-model --output runs/banking77/eval
"""


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``export``, ``train`` and ``evaluate`` to the ``raydspy`` sub-command parser ``sub``."""
    fmt = argparse.RawDescriptionHelpFormatter
    export = sub.add_parser(
        "export",
        help="turn rollouts into a training set (SFT messages, DPO pairs, GRPO prompts, KD logprobs)",
        description="Read the committed rollouts under --rollouts with Ray Data and write the "
        "training set as Parquet in the columns TRL's trainers expect.",
        epilog=EXAMPLES,
        formatter_class=fmt,
    )
    export.add_argument("kind", choices=["sft", "dpo", "grpo", "kd"])
    export.add_argument("--rollouts", required=True, help="folder or prefix of a run's rollouts (local, s3://, gs://)")
    export.add_argument(
        "--output", required=True, help="where the training set goes (its *.parquet files are replaced)"
    )
    export.add_argument(
        "--min-reward",
        type=float,
        default=ACCEPT_REWARD,
        help="sft/kd: keep rollouts whose reward is at least this (rejection sampling; default: %(default)s)",
    )
    export.add_argument("--reward", default=None, help="sft/dpo/kd: use this named reward instead of the combined one")
    export.add_argument(
        "--columns",
        nargs="*",
        default=[],
        help="grpo: example fields also copied as string columns, for TRL reward functions of your "
        "own (raydspy's GRPO rewards read the whole example from `inputs`)",
    )
    add_cluster_args(export)

    train = sub.add_parser(
        "train",
        help="train the student on Ray Train with TRL (SFT or GRPO) or on the teacher's logprobs (KD)",
        description="Run TRL's SFTTrainer or GRPOTrainer on Ray Train workers, reporting metrics "
        "and checkpoints to the config's storage_path.",
        epilog=EXAMPLES,
        formatter_class=fmt,
    )
    train.add_argument("method", choices=["sft", "grpo", "kd"])
    train.add_argument("--config", required=True, help="training config YAML (jobs/configs/*.yaml)")
    from raydspy.distill.config import TrainConfig

    overrides = train.add_argument_group("overrides of the config file (TrainConfig's fields)")
    add_model_flags(overrides, TrainConfig, TRAIN_FLAGS, default_text="the config file's")
    train.add_argument(
        "--task",
        default=None,
        help="grpo: the task (preset or task YAML) whose program and rewards score the completions "
        "(replaces the config's grpo.task, program, rewards and reward_weights)",
    )
    train.add_argument("--copy-to", default=None, help="also copy the final model to this local folder")
    add_cluster_args(train)

    add_evaluate_command(sub)


def run(args: argparse.Namespace) -> int:
    """Run a parsed distillation command; returns the exit code."""
    if args.command == "export":
        return _export(args, init_ray, common.console)
    if args.command == "train":
        return _train(args, init_ray, common.console)
    return run_evaluate(args)


def _storage(args):
    from raydspy.core.storage import StorageOptions

    return StorageOptions(s3_endpoint_url=args.s3_endpoint)


def _export(args, init_ray, console) -> int:
    from raydspy.distill import exports

    storage = _storage(args)
    started = time.perf_counter()
    if exports.needs_ray(args.rollouts, storage):  # small exports run in this process: no Ray to start
        init_ray(args.ray_address, args.num_cpus)
    if args.kind == "sft":
        summary = exports.to_sft(
            args.rollouts, args.output, min_reward=args.min_reward, reward=args.reward, storage=storage
        )
    elif args.kind == "dpo":
        summary = exports.to_dpo(args.rollouts, args.output, reward=args.reward, storage=storage)
    elif args.kind == "kd":
        summary = exports.to_kd(
            args.rollouts, args.output, min_reward=args.min_reward, reward=args.reward, storage=storage
        )
    else:
        summary = exports.to_grpo(args.rollouts, args.output, columns=args.columns, storage=storage)
    console.print(
        f"{summary.kind}: {summary.rows} rows from {summary.rollouts} rollouts -> {summary.output_uri} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The config file of ``raydspy train`` with the command line's overrides applied.

    Raises:
        ConfigError: the file is missing or invalid, or an override makes it invalid.
    """
    from raydspy.distill.config import GRPOSettings, TrainConfig

    config = TrainConfig.from_yaml(args.config, **given(args, TRAIN_FLAGS))
    if getattr(args, "task", None):
        grpo = config.grpo or GRPOSettings(task=args.task)
        # The config's program, rewards and their weights belong to its own task.
        config = config.model_copy(
            update={
                "grpo": grpo.model_copy(
                    update={"task": args.task, "program": None, "rewards": None, "reward_weights": {}}
                )
            }
        )
    return config


def _train(args, init_ray, console) -> int:
    import pyarrow.fs as pafs

    from raydspy.distill.train import run_training

    config = train_config(args)
    init_ray(args.ray_address, args.num_cpus)
    started = time.perf_counter()
    with TrainProgressBar(console, args.method) as bar:
        result = run_training(args.method, config, _storage(args), on_progress=bar.update)
    elapsed = time.perf_counter() - started
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.metrics.items()}
    console.print(f"{args.method}: {elapsed:.0f} s; final model at {result.model_path}; metrics {json.dumps(shown)}")
    if args.copy_to:
        target = Path(args.copy_to)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)  # copy_files writes into an existing folder
        pafs.copy_files(
            result.model_path,
            str(target.resolve()),
            source_filesystem=result.filesystem,
            destination_filesystem=pafs.LocalFileSystem(),
        )
        console.print(f"copied to {target}")
    return 0
