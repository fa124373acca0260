"""Command-line pieces every ``raydspy`` command shares: the task flags.

``--task`` names a `raydspy.task.TaskSpec` (a YAML file or a preset); ``--program`` and
``--rewards`` override its fields. `raydspy.cli` and `raydspy.distill.cli` both use them, so the
collect, export, train and evaluate commands read a task the same way.
"""

from __future__ import annotations

import argparse

__all__ = ["add_task_args", "task_from_args"]


def add_task_args(parser: argparse.ArgumentParser) -> None:
    """``--task`` and the flags that override its fields (``--program``, ``--rewards``)."""
    from raydspy.task import PRESETS

    g = parser.add_argument_group("task (what is distilled: the same for collect, export, train, evaluate)")
    g.add_argument("--task", default=None,
                   help=f"a task YAML (program, rewards, input, held_out, ...) or a preset: {', '.join(PRESETS)}")
    g.add_argument("--preset", dest="task", choices=list(PRESETS), help=argparse.SUPPRESS)  # the old name
    g.add_argument("--program", help="MODULE:ATTR of a dspy.Module, or of a function returning one (overrides the task's)")
    g.add_argument("--rewards", help="MODULE:ATTR of reward_fn(inputs, outputs) -> float, of {name: fn}, or of a "
                   "DSPy metric(example, pred, trace=None) (overrides the task's)")


def task_from_args(args: argparse.Namespace, *, need: tuple[str, ...] = ("program",)):
    """The `TaskSpec` of ``--task`` with ``--program`` / ``--rewards`` (and ``--input`` where the
    command has it) applied; its program and rewards specs are loaded once here, so a bad spec
    fails before Ray starts.

    Raises:
        ConfigError: no task and no ``--program``, a field in ``need`` is unset, or a spec does not load.
    """
    from raydspy.errors import ConfigError
    from raydspy.specs import load_program, load_rewards
    from raydspy.task import TaskSpec, load_task

    if args.task is None and not args.program:
        raise ConfigError("give --task (a YAML file or a preset) or --program")
    task = load_task(args.task) if args.task else TaskSpec(program=args.program)
    overrides = {k: getattr(args, k, None) for k in ("program", "rewards", "input")}
    task = task.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    missing = [f"--{k.replace('_', '-')}" for k in need if getattr(task, k) is None]
    if missing:
        raise ConfigError(f"the task {task.name!r} sets no {' / '.join(missing)}: give it on the command line "
                          "or in the task file")
    load_program(task.program), load_rewards(task.rewards)
    return task
