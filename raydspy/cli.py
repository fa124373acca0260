"""The ``raydspy`` command line: ``collect``, ``demo``, ``teacher up``, and the distillation commands
(``export``, ``train``, ``evaluate``: `raydspy.distill.cli`).

This is raydspy's entry point for side effects: it reads the environment, starts or joins Ray,
deploys the teacher when asked, and turns raydspy's errors into one-line messages (exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

# Before anything imports litellm (through dspy): without internet it would retry fetching its
# model cost map for seconds; the copy bundled with litellm is enough for raydspy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from rich.console import Console  # noqa: E402
from rich.table import Table

from raydspy.cli_common import add_task_args, task_from_args
from raydspy.distill import cli as distill_cli
from raydspy.embedded import DEFAULT_TEACHER_URL, EMBEDDED_MODEL_ID
from raydspy.errors import RaydspyError

if TYPE_CHECKING:  # heavy (Ray Data, DSPy): imported by the commands that run, not by --help
    from raydspy.summary import RunSummary
    from raydspy.teacher import TeacherConfig

console = Console(stderr=True)

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
  # rollouts the output lacks (exit 0: complete; 3: rollouts missing; 130: interrupted)
"""


def _teacher_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("teacher (any OpenAI-compatible endpoint)")
    g.add_argument("--teacher-url", default=DEFAULT_TEACHER_URL, help="base URL ending in /v1 (default: %(default)s)")
    g.add_argument("--teacher-model", default=EMBEDDED_MODEL_ID, help="model name it serves (default: %(default)s)")
    g.add_argument("--api-key", default=os.environ.get("RAYDSPY_TEACHER_API_KEY", "not-needed"),
                   help="bearer token (default: $RAYDSPY_TEACHER_API_KEY)")
    g.add_argument("--temperature", type=float, default=None, help="sampling temperature; > 0 for distinct rollouts (default 1.0)")
    g.add_argument("--max-tokens", type=int, default=None, help="completion tokens per LM call (default 256)")
    g.add_argument("--seed", type=int, default=None,
                   help="seed the rollouts: each one's requests carry a seed derived from its rollout id, so running "
                        "the same job again samples the same completions (vLLM honours per-request seeds; "
                        "default: unseeded)")
    g.add_argument("--structured-outputs", action=argparse.BooleanOptionalAction, default=None,
                   help="send each signature's JSON schema so the server enforces it (vLLM structured outputs); "
                        "every completion then parses, even from a small teacher")
    g.add_argument("--max-text-chars", type=int, default=None,
                   help="with --structured-outputs: bound each free-text output field (reasoning) to this many "
                        "characters in the schema, so a teacher that loops still returns JSON that parses "
                        "(default: unbounded)")
    g.add_argument("--request-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="per-request timeout; keep it above the queueing of a saturated teacher, or timed-out "
                        "requests are cancelled half done and sent again (default: %(default)s)")
    g.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True,
                   help="DSPy's request cache: a resumed run gets calls that completed before a crash from it "
                        "at no cost (default: on)")


def _run_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("run layout")
    g.add_argument("--n", type=int, default=None, help="rollouts per example (default 1)")
    g.add_argument("--actors", type=int, default=2, help="Collect actors in the Ray Data pool (default: %(default)s)")
    g.add_argument("--threads", type=int, default=32, help="rollouts in flight per actor (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=8,
                   help="examples per committed Parquet file: batch-size x n rollouts each (default: %(default)s)")
    g.add_argument("--rollouts-per-call", type=int, default=1,
                   help="rollouts per actor call, run one after another; raise it (e.g. 8) for a teacher that answers "
                        "hundreds of rollouts a second, where Ray Data's cost per call shows (default: %(default)s)")
    g.add_argument("--actor-start-timeout", type=int, default=900,
                   help="seconds to wait for every actor to start (an autoscaler adding nodes) before failing "
                        "(default: %(default)s)")
    g.add_argument("--limit", type=int, default=None, help="use only the first LIMIT examples")
    g.add_argument("--id-field", default=None, help="column holding example ids (default: ids hash each example)")
    g.add_argument("--dry-run", action="store_true", help="format every prompt with the program's adapter; call no LM")
    g.add_argument("--max-error-rate", type=float, default=0.5,
                   help="stop (resumably) once more than this share of the run's rollouts failed, e.g. a teacher "
                        "that is down; 1 never stops (default: %(default)s)")
    g.add_argument("--skip-invalid", action="store_true",
                   help="skip invalid input rows (empty or mistyped fields, duplicate ids, too long), listing them "
                        "under OUTPUT/_invalid/, instead of refusing to start")
    g.add_argument("--s3-endpoint", default=os.environ.get("AWS_ENDPOINT_URL"),
                   help="endpoint of an S3-compatible store, e.g. http://127.0.0.1:9000 (default: $AWS_ENDPOINT_URL)")
    g.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (default: $RAY_ADDRESS, else start a local Ray)")
    g.add_argument("--num-cpus", type=int, default=8,
                   help="logical CPUs of a local Ray; more than the cores, since actors mostly wait (default: %(default)s)")
    g.add_argument("--summary-json", default=None, help="also write the summary as JSON to this file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raydspy",
        description="Collect rollouts of DSPy programs from a teacher model, at Ray scale: every LM call "
        "traced, every rollout rewarded, rows streamed to Parquet.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
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
    collect.add_argument("--input", help="examples: CSV, JSONL or Parquet file or folder (local, s3://, gs://); "
                         "default: the task's input")
    collect.add_argument("--output", required=True, help="folder or prefix for the rollout Parquet files")
    collect.add_argument("--mlflow", action="store_true",
                         help="log the run to MLflow: parameters, summary metrics, the DSPy program "
                              "(mlflow.dspy.log_model) and the rollouts URI (needs the `service` extra)")
    collect.add_argument("--mlflow-tracking-uri", default=None,
                         help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlruns, a local store)")
    collect.add_argument("--mlflow-experiment", default="raydspy", help="MLflow experiment (default: %(default)s)")
    _teacher_args(collect)
    _run_args(collect)

    demo = sub.add_parser(
        "demo",
        help="end to end on this machine: start the embedded teacher on Ray Serve, collect a task's rollouts",
        description="Start a local Ray, deploy the embedded SmolLM2-135M teacher with vLLM on Ray Serve "
        "(serve_configs/teacher-cpu.yaml), collect rollouts of a task (default: the banking77 preset) with "
        "structured outputs, print the summary.",
    )
    demo.add_argument("--output", default=None, help="where rollouts go (default: rollouts/<task name>)")
    demo.add_argument("--examples", type=int, default=100, help="examples of the task's input (default: %(default)s)")
    demo.add_argument("--serve-config", default=None, help="Serve config of the teacher (default: serve_configs/teacher-cpu.yaml)")
    add_task_args(demo)
    demo.add_argument("--input", help="examples (default: the task's input)")
    _teacher_args(demo)
    _run_args(demo)
    demo.set_defaults(task="banking77")

    teacher = sub.add_parser("teacher", help="manage the teacher deployment")
    teacher_sub = teacher.add_subparsers(dest="teacher_command", required=True)
    up = teacher_sub.add_parser("up", help="deploy a Serve config (default: the embedded CPU teacher) and keep it up until Ctrl-C")
    up.add_argument("--serve-config", default=None, help="Serve config YAML (default: serve_configs/teacher-cpu.yaml)")
    up.add_argument("--ray-address", default=None, help="join this Ray cluster (default: $RAY_ADDRESS, else start a local Ray)")
    up.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of a local Ray (default: %(default)s)")
    distill_cli.add_commands(sub)  # export, train, evaluate
    return parser


def _stop_on_sigterm() -> None:
    """``ray job stop`` and Kubernetes send SIGTERM: stop as Ctrl-C does, leaving a resumable output."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _stop_on_sigterm()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # Serve logs every deployment option at INFO; Ray Data's progress lines stay visible.
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    try:
        if args.command == "collect":
            return _collect(args)
        if args.command == "demo":
            return _demo(args)
        if args.command in distill_cli.COMMANDS:
            return distill_cli.run(args)
        return _teacher_up(args)
    except RaydspyError as e:
        console.print(f"[bold red]error:[/] {e}")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130


# -- commands ---------------------------------------------------------------------------------


def _collect(args: argparse.Namespace) -> int:
    from raydspy.pipeline import PipelineConfig, run_pipeline
    from raydspy.progress import RunProgressBar
    from raydspy.storage import StorageOptions

    task = task_from_args(args, need=("program", "input"))
    program, rewards = task.program, task.rewards
    teacher = _teacher(args, task.teacher_defaults())
    config = PipelineConfig(
        input_uri=task.input,
        output_uri=args.output,
        n=args.n or task.n or 1,
        num_actors=args.actors,
        threads_per_actor=args.threads,
        batch_size=args.batch_size,
        rollouts_per_call=args.rollouts_per_call,
        actor_start_timeout_s=args.actor_start_timeout,
        limit=args.limit,
        id_field=args.id_field or task.id_field,
        dry_run=args.dry_run,
        max_error_rate=args.max_error_rate,
        skip_invalid=args.skip_invalid,
        storage=StorageOptions(s3_endpoint_url=args.s3_endpoint),
    )
    _init_ray(args.ray_address, args.num_cpus)
    console.print(f"collecting: program [bold]{program}[/], input {task.input}, n={config.n}, "
                  f"teacher {teacher.model} at {teacher.base_url}" + (" [dim](dry run)[/]" if config.dry_run else ""))
    with contextlib.ExitStack() as stack:
        tracked = None
        if getattr(args, "mlflow", False):
            from raydspy.tracking import MlflowRun

            tracked = stack.enter_context(MlflowRun(program, teacher, config, rewards=rewards,
                                                    tracking_uri=args.mlflow_tracking_uri,
                                                    experiment=args.mlflow_experiment))
        with RunProgressBar(console) as bar:
            summary = run_pipeline(program, teacher, config, rewards=rewards, reward_weights=task.reward_weights or None,
                                   on_start=bar.start, on_progress=bar.update)
        if tracked is not None:
            tracked.finish(summary)
            console.print(f"MLflow: run {tracked.run_id} in {tracked.tracking_uri}")
    _print_summary(summary, dry_run=config.dry_run)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary.as_dict(), indent=2))
    if summary.complete:
        return 0
    console.print(f"[yellow]incomplete:[/] {summary.missing} of {summary.planned} rollouts missing"
                  + (f" ({summary.stopped})" if summary.stopped else "")
                  + ". Run the same command again to do only those.")
    return 130 if summary.stopped == "interrupted" else 3


def _demo(args: argparse.Namespace) -> int:
    from ray import serve

    from raydspy.serving import SERVE_CONFIGS, deploy_serve_config, wait_for_teacher

    task = task_from_args(args, need=("program", "input"))
    args.output = args.output or f"rollouts/{task.name}"
    args.limit = args.limit or args.examples
    _init_ray(args.ray_address, args.num_cpus)
    teacher = _teacher(args, task.teacher_defaults())
    config_path = args.serve_config or SERVE_CONFIGS / "teacher-cpu.yaml"
    started = time.perf_counter()
    with console.status(f"deploying the teacher from {config_path} (vLLM compiles on first start: ~3 min)"):
        deploy_serve_config(config_path)
        wait_for_teacher(teacher)
    console.print(f"teacher ready in {time.perf_counter() - started:.0f} s at {teacher.base_url}")
    try:
        return _collect(args)
    finally:
        serve.shutdown()


def _teacher_up(args: argparse.Namespace) -> int:
    from raydspy.serving import SERVE_CONFIGS, deploy_serve_config

    _init_ray(args.ray_address, args.num_cpus)
    config_path = args.serve_config or SERVE_CONFIGS / "teacher-cpu.yaml"
    with console.status(f"deploying {config_path}"):
        names = deploy_serve_config(config_path)
    console.print(f"deployed {names}; serving until Ctrl-C")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it the same way
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        # Delete the apps so that each replica shuts its vLLM engine down. A replica killed
        # instead (`ray stop --force` sends SIGKILL) leaves its engine process running, holding
        # its memory and cores (vllm-project/vllm#55510).
        with console.status(f"stopping {names} (Ctrl-C again to leave them up)"):
            for name in names:
                serve.delete(name)
        console.print(f"stopped {names}")
        return 0


# -- helpers ----------------------------------------------------------------------------------


def _teacher(args: argparse.Namespace, settings: dict) -> TeacherConfig:
    """The teacher of the command line, unset flags taken from ``settings`` (the task's)."""
    from raydspy.teacher import TeacherConfig

    def pick(name: str, default):
        value = getattr(args, name)
        return value if value is not None else settings.get(name, default)

    return TeacherConfig(
        base_url=args.teacher_url,
        model=args.teacher_model,
        api_key=args.api_key,
        temperature=pick("temperature", 1.0),
        max_tokens=pick("max_tokens", 256),
        seed=pick("seed", None),
        structured_outputs=pick("structured_outputs", False),
        max_text_chars=pick("max_text_chars", None),
        timeout_s=args.request_timeout,
        cache=args.cache,
    )


def _init_ray(address: str | None, num_cpus: int) -> None:
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.getcwd(), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}})
    # ray.init installs its own SIGTERM handler (sys.exit, no summary, no resume hint): ours again.
    _stop_on_sigterm()


def _print_summary(summary: RunSummary, *, dry_run: bool) -> None:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f} %"

    table = Table(title="raydspy run summary", show_header=False)
    if summary.planned is not None:
        table.add_row("rollouts planned", f"{summary.planned}  ({summary.resumed} already committed, "
                                          f"{summary.new_rows} made now, {summary.missing} missing)")
    if summary.deferred:
        table.add_row("teacher failures", f"{summary.deferred} rollouts not answered after retries (not written)")
    if summary.invalid_rows:
        table.add_row("invalid input rows", f"{summary.invalid_rows} skipped, listed in {summary.invalid_file}")
    table.add_row("rows in output", str(summary.rows) + (f"  ({summary.duplicate_rows} duplicates ignored)"
                                                         if summary.duplicate_rows else ""))
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
    Console().print(table)

if __name__ == "__main__":
    sys.exit(main())
