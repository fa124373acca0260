"""``raydspy evaluate``: teacher and students scored on a task's held-out examples with its rewards."""

from __future__ import annotations

import argparse
import collections
import copy
import tempfile
import time
from pathlib import Path

import yaml

from raydspy.cli import common
from raydspy.cli.common import add_cluster_args, add_task_args, init_ray, task_from_args
from raydspy.cli.fields import add_model_flags, build
from raydspy.cli.progress import status
from raydspy.teacher.embedded import DEFAULT_TEACHER_URL

#: ``{EvalSettings field: flag}``.
EVAL_FLAGS = dict.fromkeys(
    ["examples", "threads", "max_tokens", "teacher_max_text_chars", "train_examples", "max_demos", "metric_threshold"]
)

__all__ = ["add_evaluate_command", "run_evaluate", "evaluation_plan", "student_serve_config"]

EVALUATE_EXAMPLES = """\
examples:
  # the loop's last step on this machine: teacher, base student and the trained students
  raydspy evaluate --task orders --student runs/orders/sft-model --grpo-student runs/orders/grpo-model

  # your program against endpoints already running (a vLLM server, an OpenAI-compatible API)
  raydspy evaluate --program myproj.programs:qa --rewards myproj.rewards:all --input data/test.jsonl \\
      --candidate teacher=llama-70b@http://teacher:8000/v1:structured --candidate student=qa-1b@http://student:8000/v1
"""


def add_evaluate_command(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="score teacher and students on a task's held-out examples",
        description="Run the task's program once per held-out example for each candidate model "
        "(greedy, the same prompts) and score it with the task's rewards: each reward's mean, "
        "format compliance per predictor, errors, tokens, time. Students given as checkpoints "
        "(--serve, --student) are deployed on Ray Serve LLM first (serve_configs/student-cpu.yaml) "
        "beside the embedded base model. Writes evaluation.md/.png/.json.",
        epilog=EVALUATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_task_args(evaluate)
    evaluate.add_argument("--input", default=None, help="held-out examples (default: the task's held_out)")
    evaluate.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="NAME=MODEL[@URL][:DECODING]",
        help="a model to evaluate, served at URL (default: --base-url), decoding plain | structured | "
        "chat (default: plain); repeat for each. Default: the embedded model as the teacher "
        "(structured) and as the base student (the task's student decoding)",
    )
    evaluate.add_argument(
        "--serve",
        action="append",
        default=[],
        metavar="NAME=CHECKPOINT",
        help="deploy this checkpoint folder as model NAME and evaluate it as a student; repeat for each",
    )
    evaluate.add_argument("--student", default=None, help="shorthand: --serve student=CHECKPOINT, named 'SFT student'")
    evaluate.add_argument(
        "--grpo-student", default=None, help="shorthand: --serve student-grpo=CHECKPOINT, named 'GRPO student'"
    )
    evaluate.add_argument(
        "--output", default=None, help="report folder (default: eval/ beside --student, else runs/<task>/eval)"
    )
    evaluate.add_argument("--serve-config", default=None, help="Serve config (default: serve_configs/student-cpu.yaml)")
    evaluate.add_argument(
        "--no-deploy",
        action="store_true",
        help="the checkpoints of --serve / --student are already served at --base-url under their names",
    )
    evaluate.add_argument("--base-url", default=DEFAULT_TEACHER_URL, help="endpoint (default: %(default)s)")
    evaluate.add_argument(
        "--optimizer",
        choices=["bootstrap", "random-search"],
        default=None,
        help="also evaluate each model after prompt optimisation: DSPy's BootstrapFewShot or "
        "BootstrapFewShotWithRandomSearch, the task's rewards as the metric, demos from the "
        "model's own rollouts that reach --metric-threshold",
    )
    evaluate.add_argument(
        "--train-input", default=None, help="examples the optimiser draws demos from (default: the task's input)"
    )
    from raydspy.distill.evaluate import EvalSettings

    add_model_flags(
        evaluate.add_argument_group("evaluation (EvalSettings)"), EvalSettings, EVAL_FLAGS, fill_defaults=True
    )
    add_cluster_args(evaluate)


def evaluation_plan(args: argparse.Namespace):
    """What ``raydspy evaluate`` will do: ``(task, candidates, checkpoints to serve, output folder)``.

    Raises:
        ConfigError: a malformed ``--candidate`` or ``--serve``, two candidates of one name, or
            no held-out examples.
    """
    from raydspy.distill.evaluate import Candidate
    from raydspy.errors import ConfigError
    from raydspy.teacher.embedded import EMBEDDED_MODEL_ID

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
    for model, path, name in (
        ("student", args.student, "SFT student"),
        ("student-grpo", args.grpo_student, "GRPO student"),
    ):
        if path:
            served[model], names[model] = path, name
    max_chars = args.teacher_max_text_chars or None
    candidates = [Candidate.parse(c, base_url=args.base_url, max_text_chars=max_chars) for c in args.candidate]
    if not candidates:
        candidates = [
            Candidate("teacher", EMBEDDED_MODEL_ID, "structured", args.base_url, max_chars),
            Candidate("base student", EMBEDDED_MODEL_ID, task.student_decoding, args.base_url),
        ]
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


def run_evaluate(args: argparse.Namespace) -> int:
    """``raydspy evaluate``: serve the students, evaluate every candidate, write the report."""
    from ray import serve

    from raydspy.distill.evaluate import EvalSettings, evaluate
    from raydspy.distill.report import write_report
    from raydspy.errors import ConfigError
    from raydspy.pipeline.inputs import load_examples
    from raydspy.teacher.client import TeacherConfig
    from raydspy.teacher.deploy import SERVE_CONFIGS, deploy_serve_config, load_serve_config, wait_for_teacher
    from raydspy.teacher.embedded import EMBEDDED_MODEL_ID

    build(EvalSettings, EVAL_FLAGS, **{name: getattr(args, name) for name in EVAL_FLAGS})  # the limits
    task, candidates, served, output = evaluation_plan(args)
    from raydspy.core.storage import StorageOptions

    storage = StorageOptions(s3_endpoint_url=args.s3_endpoint)
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
        config = student_serve_config(
            load_serve_config(args.serve_config or SERVE_CONFIGS / "student-cpu.yaml"), served
        )
        started = time.perf_counter()
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(config, f)
        with status(common.console, "deploying the students (vLLM compiles each engine on first start: minutes)"):
            deploy_serve_config(f.name)
            deployed = True
            for model in [*served, EMBEDDED_MODEL_ID]:
                wait_for_teacher(TeacherConfig(base_url=args.base_url, model=model), timeout_s=1200)
        common.console.print(f"students ready in {time.perf_counter() - started:.0f} s")
    common.console.print(
        f"evaluating {', '.join(c.name for c in candidates)} on {len(examples)} examples of {task.held_out}"
    )
    try:
        results = evaluate(
            task.program,
            candidates,
            examples,
            output,
            rewards=task.rewards,
            reward_weights=task.reward_weights or None,
            max_tokens=args.max_tokens,
            threads=args.threads,
            optimizer=args.optimizer,
            trainset=trainset,
            max_demos=args.max_demos,
            metric_threshold=args.metric_threshold,
        )
    finally:
        if deployed:
            serve.shutdown()
    paths = write_report(results, output, title=f"{task.name}: {Path(task.held_out).name}")
    common.console.print(paths["markdown"].read_text())
    common.console.print(f"report: {paths['markdown']}, {paths['chart']}")
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
