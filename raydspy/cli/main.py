"""The ``raydspy`` command line: ``collect``, ``demo``, ``teacher up``, and the distillation commands
(``export``, ``train``, ``evaluate``: `raydspy.cli.distill`).

This is raydspy's entry point for side effects: it reads the environment, starts or joins Ray,
deploys the teacher when asked, and turns raydspy's errors into one-line messages (exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# Before anything imports litellm (through dspy): without internet it would retry fetching its
# model cost map for seconds; the copy bundled with litellm is enough for raydspy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from rich.table import Table  # noqa: E402

from raydspy.cli import common, failures
from raydspy.cli import distill as distill_cli
from raydspy.cli import view as view_cli
from raydspy.cli.common import add_task_args, init_ray, stop_on_sigterm, task_from_args
from raydspy.cli.flags import add_run_flags, add_teacher_flags, pipeline_from, teacher_from
from raydspy.cli.logs import route_logs
from raydspy.cli.progress import status
from raydspy.errors import RaydspyError

if TYPE_CHECKING:  # heavy (Ray Data, DSPy): imported by the commands that run, not by --help
    from raydspy.pipeline.summary import RunSummary

EXAMPLES = """\
examples:
  # the whole demo on this machine: embedded teacher on Ray Serve, banking77, Parquet out
  raydspy demo

  # your program, against a teacher that is already running
  raydspy collect --program myproj.programs:qa --input data/train.jsonl --output s3://bucket/run1 \\
      --n 4 --rewards myproj.rewards:all --teacher-url http://teacher:8000/v1 --teacher-model llama-70b

  # a task names program, rewards and data once for every step (a YAML file, or a preset:
  # banking77, orders); a dry run formats prompts and calls no LM
  raydspy collect --task orders --output rollouts/orders --dry-run

  # crashed, Ctrl-C'd, or stopped by --max-error-rate? the same command again does only the
  # rollouts the output lacks (exit 0: complete; 1: failed; 2: bad input or settings;
  # 3: rollouts missing; 130: interrupted)

  # on a running cluster (`ray start --head` once): every command joins it, no start-up
  raydspy collect --task banking77 --output rollouts/b77 --ray-address auto
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raydspy",
        description="Collect rollouts of DSPy programs from a teacher model, at Ray scale: every LM call "
        "traced, every rollout rewarded, rows streamed to Parquet.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbose_help = "show the libraries' logs (Ray, Ray Data, Serve, vLLM, ...) here, not only in the log folder"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    sub = parser.add_subparsers(dest="command", required=True)

    collect = sub.add_parser(
        "collect",
        help="run a program n times per example against a teacher and write rollouts",
        description="Run PROGRAM n times on every example of INPUT against the teacher; write one "
        "Parquet row per rollout (inputs, outputs, trace of every LM call, rewards, error) under OUTPUT.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_task_args(collect)
    collect.add_argument(
        "--input",
        help="examples: CSV, JSONL or Parquet file or folder (local, s3://, gs://); default: the task's input",
    )
    collect.add_argument("--output", required=True, help="folder or prefix for the rollout Parquet files")
    collect.add_argument(
        "--mlflow",
        action="store_true",
        help="log the run to MLflow: parameters, summary metrics, the DSPy program "
        "(mlflow.dspy.log_model) and the rollouts URI (needs the `service` extra)",
    )
    collect.add_argument(
        "--mlflow-tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlruns, a local store)",
    )
    collect.add_argument("--mlflow-experiment", default="raydspy", help="MLflow experiment (default: %(default)s)")
    collect.add_argument(
        "--mlflow-traces",
        type=int,
        default=32,
        metavar="N",
        help="with --mlflow, log N of the run's rollouts as MLflow traces, one span per LM call, failed ones "
        "first (0: none; default: %(default)s)",
    )
    add_teacher_flags(collect)
    add_run_flags(collect)

    demo = sub.add_parser(
        "demo",
        help="end to end on this machine: start the embedded teacher on Ray Serve, collect a task's rollouts",
        description="Start a local Ray, deploy the embedded SmolLM2-135M teacher with vLLM on Ray Serve "
        "(serve_configs/teacher-cpu.yaml), collect rollouts of a task (default: the banking77 preset) with "
        "structured outputs, print the summary.",
    )
    demo.add_argument("--output", default=None, help="where rollouts go (default: rollouts/<task name>)")
    demo.add_argument("--examples", type=int, default=100, help="examples of the task's input (default: %(default)s)")
    demo.add_argument(
        "--serve-config", default=None, help="Serve config of the teacher (default: serve_configs/teacher-cpu.yaml)"
    )
    add_task_args(demo)
    demo.add_argument("--input", help="examples (default: the task's input)")
    add_teacher_flags(demo)
    add_run_flags(demo)
    demo.set_defaults(task="banking77")

    teacher = sub.add_parser("teacher", help="manage the teacher deployment")
    teacher_sub = teacher.add_subparsers(dest="teacher_command", required=True)
    up = teacher_sub.add_parser(
        "up", help="deploy a Serve config (default: the embedded CPU teacher) and keep it up until Ctrl-C"
    )
    up.add_argument("--serve-config", default=None, help="Serve config YAML (default: serve_configs/teacher-cpu.yaml)")
    common.add_ray_args(up)
    distill_cli.add_commands(sub)  # export, train, evaluate
    view_cli.add_view_command(sub)
    for command in [*sub.choices.values(), up]:  # `raydspy collect ... -v` as well as `raydspy -v collect`
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop_on_sigterm()
    # The libraries' logs go to the log folder (named once Ray is up), unless --verbose.
    with route_logs(args.command, verbose=args.verbose, console=common.console, consoles=[common.out]) as route:
        try:
            if args.command == "collect":
                return _collect(args)
            if args.command == "demo":
                return _demo(args)
            if args.command in distill_cli.COMMANDS:
                return distill_cli.run(args)
            if args.command == "view":
                return view_cli.run_view(args)
            return _teacher_up(args)
        except RaydspyError as e:
            common.console.print(f"[bold red]error:[/] {e}", soft_wrap=True)  # one line, also in logs
            return 2
        except KeyboardInterrupt:
            common.console.print("[yellow]interrupted[/]")
            return 130
        except Exception as e:  # noqa: BLE001 - any other failure: one line here, the traceback in the logs
            traceback.print_exc()  # stderr: the log file, or the terminal with -v
            line = failures.one_line(e, args.command, route.where())
            common.console.print(f"[bold red]error:[/] {line}", soft_wrap=True, highlight=False)
            return 1


# -- commands ---------------------------------------------------------------------------------


def _collect(args: argparse.Namespace) -> int:
    from raydspy.cli.progress import RunProgressBar
    from raydspy.pipeline import run_pipeline

    task = task_from_args(args, need=("program", "input"))
    program, rewards = task.program, task.rewards
    teacher = teacher_from(args, task.teacher_defaults())
    config = pipeline_from(args, task=task, output_uri=args.output)
    init_ray(args.ray_address, args.num_cpus)
    common.console.print(
        f"collecting: program [bold]{program}[/], input {task.input}, n={config.n}, "
        f"teacher {teacher.model} at {teacher.base_url}" + (" [dim](dry run)[/]" if config.dry_run else "")
    )
    with contextlib.ExitStack() as stack:
        tracked = None
        if getattr(args, "mlflow", False):
            from raydspy.pipeline.tracking import MlflowRun

            tracked = stack.enter_context(
                MlflowRun(
                    program,
                    teacher,
                    config,
                    rewards=rewards,
                    tracking_uri=args.mlflow_tracking_uri,
                    experiment=args.mlflow_experiment,
                    traces=args.mlflow_traces,
                )
            )
        with RunProgressBar(common.console) as bar:
            summary = run_pipeline(
                program,
                teacher,
                config,
                rewards=rewards,
                reward_weights=task.reward_weights or None,
                on_start=bar.start,
                on_progress=bar.update,
            )
        if tracked is not None:
            tracked.finish(summary)
            common.console.print(
                f"MLflow: run {tracked.run_id} in {tracked.tracking_uri}, {len(tracked.trace_ids)} rollouts as traces"
            )
    _print_summary(summary, dry_run=config.dry_run)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary.as_dict(), indent=2))
    if summary.complete:
        return 0
    common.console.print(
        f"[yellow]incomplete:[/] {summary.missing} of {summary.planned} rollouts missing"
        + (f" ({summary.stopped})" if summary.stopped else "")
        + ". Run the same command again to do only those."
    )
    return 130 if summary.stopped == "interrupted" else 3


def _demo(args: argparse.Namespace) -> int:
    from ray import serve

    from raydspy.teacher.deploy import SERVE_CONFIGS, deploy_serve_config, wait_for_teacher

    task = task_from_args(args, need=("program", "input"))
    args.output = args.output or f"rollouts/{task.name}"
    args.limit = args.limit or args.examples
    init_ray(args.ray_address, args.num_cpus)
    teacher = teacher_from(args, task.teacher_defaults())
    config_path = args.serve_config or SERVE_CONFIGS / "teacher-cpu.yaml"
    started = time.perf_counter()
    with status(common.console, f"deploying the teacher from {config_path} (vLLM compiles on first start: ~3 min)"):
        deploy_serve_config(config_path)
        wait_for_teacher(teacher)
    common.console.print(f"teacher ready in {time.perf_counter() - started:.0f} s at {teacher.base_url}")
    try:
        return _collect(args)
    finally:
        serve.shutdown()


def _teacher_up(args: argparse.Namespace) -> int:
    from raydspy.teacher.deploy import SERVE_CONFIGS, deploy_serve_config

    init_ray(args.ray_address, args.num_cpus)
    config_path = args.serve_config or SERVE_CONFIGS / "teacher-cpu.yaml"
    with status(common.console, f"deploying {config_path}"):
        names = deploy_serve_config(config_path)
    common.console.print(f"deployed {names}; serving until Ctrl-C")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it the same way
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        # Delete the apps so that each replica shuts its vLLM engine down. A replica killed
        # instead (`ray stop --force` sends SIGKILL) leaves its engine process running, holding
        # its memory and cores (vllm-project/vllm#55510).
        with status(common.console, f"stopping {names} (Ctrl-C again to leave them up)"):
            for name in names:
                serve.delete(name)
        common.console.print(f"stopped {names}")
        return 0


# -- helpers ----------------------------------------------------------------------------------


def _print_summary(summary: RunSummary, *, dry_run: bool) -> None:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f} %"

    table = Table(title="raydspy run summary", show_header=False)
    if summary.planned is not None:
        table.add_row(
            "rollouts planned",
            f"{summary.planned}  ({summary.resumed} already committed, "
            f"{summary.new_rows} made now, {summary.missing} missing)",
        )
    if summary.deferred:
        table.add_row("teacher failures", f"{summary.deferred} rollouts not answered after retries (not written)")
    if summary.invalid_rows:
        table.add_row("invalid input rows", f"{summary.invalid_rows} skipped, listed in {summary.invalid_file}")
    table.add_row(
        "rows in output",
        str(summary.rows) + (f"  ({summary.duplicate_rows} duplicates ignored)" if summary.duplicate_rows else ""),
    )
    errors = ", ".join(f"{k}: {v}" for k, v in summary.errors_by_type.items())
    table.add_row("rows with errors", f"{summary.error_rows}" + (f"  ({errors})" if errors else ""))
    if not dry_run:
        table.add_row("mean reward", "n/a" if summary.mean_reward is None else f"{summary.mean_reward:.3f}")
        for name, mean in summary.reward_means.items():
            table.add_row(f"  mean {name}", f"{mean:.3f}")
        table.add_row("format compliance", pct(summary.format_rate))
        table.add_row("completion tokens", str(summary.completion_tokens))
    rate = summary.rollouts_per_s
    table.add_row("rollouts per second", "n/a" if rate is None else f"{rate:.2f}  ({summary.elapsed_s:.1f} s)")
    table.add_row("files", f"{len(summary.files)} Parquet files in {summary.output_uri}")
    if summary.stopped:
        table.add_row("stopped", summary.stopped)
    common.out.print(table)


if __name__ == "__main__":
    sys.exit(main())
