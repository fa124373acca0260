"""``raydspy export``, ``raydspy train`` and ``raydspy evaluate``: the distillation commands.

`raydspy.cli` registers them through `add_commands` and hands their parsed arguments to `run`;
heavy imports (Ray Data, TRL, vLLM clients) happen only inside the command that needs them.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from raydspy.cli_common import add_task_args

if TYPE_CHECKING:
    from raydspy.distill.config import TrainConfig

COMMANDS = ("export", "train", "evaluate")

EVALUATE_EXAMPLES = """\
examples:
  # the loop's last step on this machine: teacher, base student and the trained students
  raydspy evaluate --task orders --student runs/orders/sft-model --grpo-student runs/orders/grpo-model

  # your program against endpoints already running (a vLLM server, an OpenAI-compatible API)
  raydspy evaluate --program myproj.programs:qa --rewards myproj.rewards:all --input data/test.jsonl \\
      --candidate teacher=llama-70b@http://teacher:8000/v1:structured --candidate student=qa-1b@http://student:8000/v1
"""

EXAMPLES = """\
the CPU recipe (README, "Distillation"):
  raydspy demo --examples 1500 --n 2 --temperature 0.7 --max-text-chars 400 --output rollouts/banking77-distill
  raydspy export sft --rollouts rollouts/banking77-distill --output runs/banking77/datasets/sft
  raydspy train sft --config jobs/configs/sft-cpu.yaml --dataset runs/banking77/datasets/sft --copy-to runs/banking77/sft-model
  raydspy evaluate --student runs/banking77/sft-model --output runs/banking77/eval
"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--s3-endpoint", default=os.environ.get("AWS_ENDPOINT_URL"),
                        help="endpoint of an S3-compatible store (default: $AWS_ENDPOINT_URL)")
    parser.add_argument("--ray-address", default=None, help="join this Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of a local Ray (default: %(default)s)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``export``, ``train`` and ``evaluate`` to the ``raydspy`` sub-command parser ``sub``."""
    fmt = argparse.RawDescriptionHelpFormatter
    export = sub.add_parser("export", help="turn rollouts into a training set (SFT messages, DPO pairs, GRPO prompts)",
                            description="Read the committed rollouts under --rollouts with Ray Data and write the "
                            "training set as Parquet in the columns TRL's trainers expect.", epilog=EXAMPLES,
                            formatter_class=fmt)
    export.add_argument("kind", choices=["sft", "dpo", "grpo"])
    export.add_argument("--rollouts", required=True, help="folder or prefix of a run's rollouts (local, s3://, gs://)")
    export.add_argument("--output", required=True, help="where the training set goes (its *.parquet files are replaced)")
    export.add_argument("--min-reward", type=float, default=1.0,
                        help="sft: keep rollouts whose reward is at least this (rejection sampling; default: %(default)s)")
    export.add_argument("--reward", default=None, help="sft/dpo: use this named reward instead of the combined one")
    export.add_argument("--columns", nargs="*", default=[],
                        help="grpo: example fields also copied as string columns, for TRL reward functions of your "
                             "own (raydspy's GRPO rewards read the whole example from `inputs`)")
    _common(export)

    train = sub.add_parser("train", help="train the student on Ray Train with TRL (SFT or GRPO)",
                           description="Run TRL's SFTTrainer or GRPOTrainer on Ray Train workers, reporting metrics "
                           "and checkpoints to the config's storage_path.", epilog=EXAMPLES, formatter_class=fmt)
    train.add_argument("method", choices=["sft", "grpo"])
    train.add_argument("--config", required=True, help="training config YAML (jobs/configs/*.yaml)")
    train.add_argument("--dataset", default=None, help="export URI (overrides the config)")
    train.add_argument("--model", default=None, help="student model (overrides the config)")
    train.add_argument("--storage-path", default=None, help="where Ray Train writes the run (overrides the config)")
    train.add_argument("--name", default=None, help="run name (overrides the config)")
    train.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides the config)")
    train.add_argument("--seed", type=int, default=None,
                       help="seed of the data order and sampling (overrides the config); a second pass from a "
                            "trained --model with another seed sees other rows first")
    train.add_argument("--task", default=None,
                       help="grpo: the task (preset or task YAML) whose program and rewards score the completions "
                            "(replaces the config's grpo.task, program, rewards and reward_weights)")
    train.add_argument("--copy-to", default=None, help="also copy the final model to this local folder")
    _common(train)

    evaluate = sub.add_parser("evaluate", help="score teacher and students on a task's held-out examples",
                              description="Run the task's program once per held-out example for each candidate model "
                              "(greedy, the same prompts) and score it with the task's rewards: each reward's mean, "
                              "format compliance per predictor, errors, tokens, time. Students given as checkpoints "
                              "(--serve, --student) are deployed on Ray Serve LLM first (serve_configs/student-cpu.yaml) "
                              "beside the embedded base model. Writes evaluation.md/.png/.json.",
                              epilog=EVALUATE_EXAMPLES, formatter_class=fmt)
    add_task_args(evaluate)
    evaluate.add_argument("--input", default=None, help="held-out examples (default: the task's held_out)")
    evaluate.add_argument("--examples", type=int, default=200, help="use the first N held-out examples (default: %(default)s)")
    evaluate.add_argument("--candidate", action="append", default=[], metavar="NAME=MODEL[@URL][:DECODING]",
                          help="a model to evaluate, served at URL (default: --base-url), decoding plain | structured | "
                               "chat (default: plain); repeat for each. Default: the embedded model as the teacher "
                               "(structured) and as the base student (the task's student decoding)")
    evaluate.add_argument("--serve", action="append", default=[], metavar="NAME=CHECKPOINT",
                          help="deploy this checkpoint folder as model NAME and evaluate it as a student; repeat for each")
    evaluate.add_argument("--student", default=None, help="shorthand: --serve student=CHECKPOINT, named 'SFT student'")
    evaluate.add_argument("--grpo-student", default=None,
                          help="shorthand: --serve student-grpo=CHECKPOINT, named 'GRPO student'")
    evaluate.add_argument("--output", default=None, help="report folder (default: eval/ beside --student, else runs/<task>/eval)")
    evaluate.add_argument("--serve-config", default=None, help="Serve config (default: serve_configs/student-cpu.yaml)")
    evaluate.add_argument("--no-deploy", action="store_true",
                          help="the checkpoints of --serve / --student are already served at --base-url under their names")
    evaluate.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="endpoint (default: %(default)s)")
    evaluate.add_argument("--threads", type=int, default=32, help="requests in flight (default: %(default)s)")
    evaluate.add_argument("--optimizer", choices=["bootstrap", "random-search"], default=None,
                          help="also evaluate each model after prompt optimisation: DSPy's BootstrapFewShot or "
                               "BootstrapFewShotWithRandomSearch, the task's rewards as the metric, demos from the "
                               "model's own rollouts that reach --metric-threshold")
    evaluate.add_argument("--train-input", default=None, help="examples the optimiser draws demos from (default: the task's input)")
    evaluate.add_argument("--train-examples", type=int, default=32,
                          help="training examples the optimiser uses (default: %(default)s)")
    evaluate.add_argument("--max-demos", type=int, default=4, help="demos per predictor (default: %(default)s)")
    evaluate.add_argument("--metric-threshold", type=float, default=1.0,
                          help="a rollout becomes a demo when its combined reward reaches this (default: %(default)s)")
    evaluate.add_argument("--max-tokens", type=int, default=192, help="completion tokens per call (default: %(default)s)")
    evaluate.add_argument("--teacher-max-text-chars", type=int, default=400,
                          help="bound on a structured candidate's free-text fields, in characters, so a greedy loop "
                               "still parses; 0 for none (default: %(default)s)")
    _common(evaluate)


def run(args: argparse.Namespace) -> int:
    """Run a parsed distillation command; returns the exit code."""
    from raydspy.cli import _init_ray, console

    if args.command == "export":
        return _export(args, _init_ray, console)
    if args.command == "train":
        return _train(args, _init_ray, console)
    return _evaluate(args, _init_ray, console)


def _storage(args):
    from raydspy.storage import StorageOptions

    return StorageOptions(s3_endpoint_url=args.s3_endpoint)


def _export(args, init_ray, console) -> int:
    from raydspy.distill import exports

    init_ray(args.ray_address, args.num_cpus)
    storage = _storage(args)
    started = time.perf_counter()
    if args.kind == "sft":
        summary = exports.to_sft(args.rollouts, args.output, min_reward=args.min_reward, reward=args.reward, storage=storage)
    elif args.kind == "dpo":
        summary = exports.to_dpo(args.rollouts, args.output, reward=args.reward, storage=storage)
    else:
        summary = exports.to_grpo(args.rollouts, args.output, columns=args.columns, storage=storage)
    console.print(f"{summary.kind}: {summary.rows} rows from {summary.rollouts} rollouts -> {summary.output_uri} "
                  f"({time.perf_counter() - started:.1f} s)")
    return 0


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The config file of ``raydspy train`` with the command line's overrides applied.

    Raises:
        ConfigError: the file is missing or invalid, or an override makes it invalid.
    """
    from raydspy.distill.config import GRPOSettings, TrainConfig

    config = TrainConfig.from_yaml(args.config, dataset=args.dataset, model=args.model, storage_path=args.storage_path,
                                   name=args.name, max_steps=args.max_steps, seed=args.seed)
    if getattr(args, "task", None):
        grpo = config.grpo or GRPOSettings(task=args.task)
        # The config's program, rewards and their weights belong to its own task.
        config = config.model_copy(update={"grpo": grpo.model_copy(update={"task": args.task, "program": None,
                                                                           "rewards": None, "reward_weights": {}})})
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
        pafs.copy_files(result.model_path, str(target.resolve()), source_filesystem=result.filesystem,
                        destination_filesystem=pafs.LocalFileSystem())
        console.print(f"copied to {target}")
    return 0


def evaluation_plan(args: argparse.Namespace):
    """What ``raydspy evaluate`` will do: ``(task, candidates, checkpoints to serve, output folder)``.

    Raises:
        ConfigError: a malformed ``--candidate`` or ``--serve``, two candidates of one name, or
            no held-out examples.
    """
    from raydspy.cli_common import task_from_args
    from raydspy.distill.evaluate import Candidate
    from raydspy.embedded import EMBEDDED_MODEL_ID
    from raydspy.errors import ConfigError

    task = task_from_args(args, need=("program",))
    held_out = args.input or task.held_out
    if held_out is None:
        raise ConfigError(f"the task {task.name!r} has no held_out examples: give --input")
    task = task.model_copy(update={"held_out": held_out})
    served: dict[str, str] = {}
    names: dict[str, str] = {}
    for spec in args.serve:
        model, sep, path = spec.partition("=")
        if not sep or not model or not path:
            raise ConfigError(f"--serve must be NAME=CHECKPOINT, got {spec!r}")
        served[model], names[model] = path, model
    for model, path, name in (("student", args.student, "SFT student"), ("student-grpo", args.grpo_student, "GRPO student")):
        if path:
            served[model], names[model] = path, name
    max_chars = args.teacher_max_text_chars or None
    candidates = [Candidate.parse(c, base_url=args.base_url, max_text_chars=max_chars) for c in args.candidate]
    if not candidates:
        candidates = [Candidate("teacher", EMBEDDED_MODEL_ID, "structured", args.base_url, max_chars),
                      Candidate("base student", EMBEDDED_MODEL_ID, task.student_decoding, args.base_url)]
    used = {c.model for c in candidates}
    candidates += [Candidate(names[m], m, task.student_decoding, args.base_url) for m in served if m not in used]
    duplicates = sorted(n for n, k in collections.Counter(c.name for c in candidates).items() if k > 1)
    if duplicates:
        raise ConfigError(f"two candidates are named {duplicates}: give each its own NAME")
    if args.output:
        output = Path(args.output)
    elif args.student:
        output = Path(args.student).resolve().parent / "eval"
    else:
        output = Path("runs") / task.name / "eval"
    return task, candidates, served, output


def _evaluate(args, init_ray, console) -> int:
    from ray import serve

    from raydspy.distill.evaluate import evaluate, write_report
    from raydspy.embedded import EMBEDDED_MODEL_ID
    from raydspy.errors import ConfigError
    from raydspy.inputs import load_examples
    from raydspy.serving import SERVE_CONFIGS, deploy_serve_config, load_serve_config, wait_for_teacher
    from raydspy.teacher import TeacherConfig

    task, candidates, served, output = evaluation_plan(args)
    storage = _storage(args)
    examples = load_examples(task.held_out, storage, limit=args.examples)
    trainset = ()
    if args.optimizer:
        train_uri = args.train_input or task.input
        if train_uri is None:
            raise ConfigError("prompt optimisation needs training examples: give --train-input")
        trainset = load_examples(train_uri, storage, limit=args.train_examples)
    deployed = False
    if served and not args.no_deploy:
        init_ray(args.ray_address, args.num_cpus)
        config = student_serve_config(load_serve_config(args.serve_config or SERVE_CONFIGS / "student-cpu.yaml"), served)
        started = time.perf_counter()
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(config, f)
        with console.status("deploying the students (vLLM compiles each engine on first start: minutes)"):
            deploy_serve_config(f.name)
            deployed = True
            for model in [*served, EMBEDDED_MODEL_ID]:
                wait_for_teacher(TeacherConfig(base_url=args.base_url, model=model), timeout_s=1200)
        console.print(f"students ready in {time.perf_counter() - started:.0f} s")
    console.print(f"evaluating {', '.join(c.name for c in candidates)} on {len(examples)} examples of {task.held_out}")
    try:
        results = evaluate(task.program, candidates, examples, output, rewards=task.rewards,
                           reward_weights=task.reward_weights or None, max_tokens=args.max_tokens,
                           threads=args.threads, optimizer=args.optimizer, trainset=trainset,
                           max_demos=args.max_demos, metric_threshold=args.metric_threshold)
    finally:
        if deployed:
            serve.shutdown()
    paths = write_report(results, output, title=f"{task.name}: {Path(task.held_out).name}")
    console.print(paths["markdown"].read_text())
    console.print(f"report: {paths['markdown']}, {paths['chart']}")
    return 0


def student_serve_config(config: dict, models: dict[str, str]) -> dict:
    """``config`` (student-cpu.yaml) with the ``student`` LLM config pointing at ``models["student"]``
    and one copy of it per other entry of ``models`` (``{model_id: checkpoint folder}``)."""
    config = copy.deepcopy(config)
    app = config["applications"][0]
    llm_configs = app["args"]["llm_configs"]
    template = next(c for c in llm_configs if c["model_loading_config"]["model_id"] == "student")
    others = [c for c in llm_configs if c["model_loading_config"]["model_id"] != "student"]
    students = []
    for model_id, path in models.items():
        entry = copy.deepcopy(template)
        entry["model_loading_config"] = {"model_id": model_id, "model_source": str(Path(path).resolve())}
        students.append(entry)
    app["args"]["llm_configs"] = students + others
    return config


class TrainProgressBar:
    """Rank 0's progress: steps done of all, loss, elapsed and time left (a bar on a terminal, a
    line every 30 s in logs: `raydspy.progress.ProgressDisplay`). Steps appear once the first one
    ends (model loading and dataset preparation come before)."""

    def __init__(self, console, method: str, *, every_s: float = 30.0):
        from raydspy.progress import ProgressDisplay

        self._display = ProgressDisplay(console, f"{method} steps", every_s=every_s)

    def __enter__(self) -> "TrainProgressBar":
        self._display.start(status="loading the model and the data")
        return self

    def __exit__(self, *exc) -> None:
        self._display.stop()

    def update(self, snapshot: dict) -> None:
        status = []
        for key, fmt in (("loss", "loss {:.3f}"), ("reward", "reward {:.3f}"), ("mean_token_accuracy", "token acc {:.2f}")):
            if key in snapshot:
                status.append(fmt.format(snapshot[key]))
        self._display.update(snapshot["step"], total=snapshot.get("max_steps") or None, status="  ".join(status))
