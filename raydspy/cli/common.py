"""Command-line pieces every ``raydspy`` command shares: the task flags, the console, Ray start-up.

``--task`` names a `raydspy.task.TaskSpec` (a YAML file or a preset); ``--program`` and
``--rewards`` override its fields. `raydspy.cli.main` and `raydspy.cli.distill` both use them, so the
collect, export, train and evaluate commands read a task the same way.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading

from rich.console import Console

__all__ = [
    "add_task_args",
    "add_cluster_args",
    "add_ray_args",
    "task_from_args",
    "console",
    "out",
    "init_ray",
    "stop_on_sigterm",
]

#: Where every command writes its progress and messages (stderr: stdout stays for data). A message
#: is one line however long (soft wrap): the terminal wraps it, and logs stay one line a message.
console = Console(stderr=True, soft_wrap=True)
#: Where a command's result goes (stdout): the run summary.
out = Console()


def add_task_args(parser: argparse.ArgumentParser) -> None:
    """``--task`` and the flags that override its fields (``--program``, ``--rewards``)."""
    from raydspy.task import PRESETS

    g = parser.add_argument_group("task (what is distilled: the same for collect, export, train, evaluate)")
    g.add_argument(
        "--task",
        default=None,
        help=f"a task YAML (program, rewards, input, held_out, ...) or a preset: {', '.join(PRESETS)}",
    )
    g.add_argument("--preset", dest="task", choices=list(PRESETS), help=argparse.SUPPRESS)  # the old name
    g.add_argument(
        "--program", help="MODULE:ATTR of a dspy.Module, or of a function returning one (overrides the task's)"
    )
    g.add_argument(
        "--rewards",
        help="MODULE:ATTR of reward_fn(inputs, outputs) -> float, of {name: fn}, or of a "
        "DSPy metric(example, pred, trace=None) (overrides the task's)",
    )


def task_from_args(args: argparse.Namespace, *, need: tuple[str, ...] = ("program",)):
    """The `TaskSpec` of ``--task`` with ``--program`` / ``--rewards`` (and ``--input`` where the
    command has it) applied; its program and rewards specs are loaded once here, so a bad spec
    fails before Ray starts.

    Raises:
        ConfigError: no task and no ``--program``, a field in ``need`` is unset, or a spec does not load.
    """
    from raydspy.core.specs import load_program, load_rewards
    from raydspy.errors import ConfigError
    from raydspy.task import TaskSpec, load_task

    if args.task is None and not args.program:
        raise ConfigError("give --task (a YAML file or a preset) or --program")
    task = load_task(args.task) if args.task else TaskSpec(program=args.program)
    overrides = {k: getattr(args, k, None) for k in ("program", "rewards", "input")}
    task = task.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    missing = [f"--{k.replace('_', '-')}" for k in need if getattr(task, k) is None]
    if missing:
        raise ConfigError(
            f"the task {task.name!r} sets no {' / '.join(missing)}: give it on the command line or in the task file"
        )
    load_program(task.program), load_rewards(task.rewards)
    return task


def stop_on_sigterm() -> None:
    """``ray job stop`` and Kubernetes send SIGTERM: stop as Ctrl-C does, leaving a resumable output."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def init_ray(address: str | None, num_cpus: int) -> None:
    """Join a running cluster or start a local Ray of ``num_cpus`` logical CPUs
    (`raydspy.cli.cluster.connect`: ``address``, ``$RAY_ADDRESS``, a local ``ray start``); nothing
    when Ray is already up. Then say which, and where the logs are (`raydspy.cli.logs.ray_started`).

    Raises:
        ClusterUnreachableError: the cluster named does not answer.
    """
    import ray

    from raydspy.cli import cluster, logs

    if ray.is_initialized():
        logs.ray_started()
        return
    target = cluster.connect(address, num_cpus)
    # ray.init installs its own SIGTERM handler (sys.exit, no summary, no resume hint): ours again.
    stop_on_sigterm()
    if target.joins:
        console.print(f"ray: joined the cluster at {target.address} (from {target.source})", highlight=False)
    logs.ray_started()


def add_cluster_args(parser: argparse.ArgumentParser) -> None:
    """``--s3-endpoint``, ``--ray-address``, ``--num-cpus``: where the command's data and Ray are."""
    parser.add_argument(
        "--s3-endpoint",
        default=os.environ.get("AWS_ENDPOINT_URL"),
        help="endpoint of an S3-compatible store (default: $AWS_ENDPOINT_URL)",
    )
    add_ray_args(parser)


def add_ray_args(parser: argparse.ArgumentParser) -> None:
    """``--ray-address`` and ``--num-cpus``: which Ray the command runs on (`raydspy.cli.cluster`)."""
    parser.add_argument(
        "--ray-address",
        default=None,
        help="the Ray cluster to join: HOST:PORT, auto, or local (a Ray of this command's own); default: "
        "$RAY_ADDRESS, else a `ray start --head` on this machine, else a local Ray",
    )
    parser.add_argument(
        "--num-cpus",
        type=int,
        default=8,
        help="logical CPUs of a local Ray; more than the cores, since actors mostly wait (default: %(default)s)",
    )
