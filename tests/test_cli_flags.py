"""The command line's flags come from the pydantic configs: defaults, limits, and the precedence
flag > task > model default."""

from __future__ import annotations

import pytest

from raydspy.cli.main import build_parser
from raydspy.errors import ConfigError


def _collect(*argv: str):
    from raydspy.cli.flags import pipeline_from, teacher_from
    from raydspy.task import TaskSpec

    args = build_parser().parse_args(["collect", "--output", "out", *argv])
    task = TaskSpec(program="p:q", input="in.jsonl", n=3, temperature=0.2)
    return teacher_from(args, task.teacher_defaults()), pipeline_from(args, task=task, output_uri=args.output)


def test_every_field_of_the_teacher_and_the_layout_can_be_set():
    teacher, config = _collect(
        "--teacher-url", "http://t:1/v1", "--teacher-model", "big", "--temperature", "0.9", "--max-tokens", "64",
        "--seed", "7", "--structured-outputs", "--max-text-chars", "99", "--request-timeout", "30", "--no-cache",
        "--n", "5", "--actors", "3", "--threads", "4", "--batch-size", "2", "--rollouts-per-call", "6",
        "--actor-start-timeout", "60", "--limit", "10", "--id-field", "id", "--dry-run", "--max-error-rate", "0.2",
        "--skip-invalid",
    )  # fmt: skip
    assert (teacher.base_url, teacher.model, teacher.temperature, teacher.max_tokens, teacher.seed) == (
        "http://t:1/v1", "big", 0.9, 64, 7)  # fmt: skip
    assert teacher.structured_outputs and teacher.max_text_chars == 99 and teacher.timeout_s == 30 and not teacher.cache
    assert (config.n, config.num_actors, config.threads_per_actor, config.batch_size, config.rollouts_per_call) == (
        5, 3, 4, 2, 6)  # fmt: skip
    assert (config.actor_start_timeout_s, config.limit, config.id_field, config.max_error_rate) == (60, 10, "id", 0.2)
    assert config.dry_run and config.skip_invalid


def test_unset_flags_take_the_tasks_values_then_the_models_defaults():
    from raydspy.pipeline.config import PipelineConfig
    from raydspy.teacher.client import TeacherConfig

    teacher, config = _collect()
    assert (teacher.temperature, config.n) == (0.2, 3)  # the task's
    assert teacher.max_tokens == TeacherConfig.model_fields["max_tokens"].default
    assert config.threads_per_actor == PipelineConfig.model_fields["threads_per_actor"].default


def test_a_value_outside_its_limits_names_the_flag():
    with pytest.raises(ConfigError, match="--threads"):
        _collect("--threads", "0")


def test_train_overrides_and_evaluate_settings_are_the_configs_fields():
    from raydspy.cli.distill import TRAIN_FLAGS
    from raydspy.cli.evaluate import EVAL_FLAGS
    from raydspy.distill.config import TrainConfig
    from raydspy.distill.evaluate import EvalSettings

    assert set(TRAIN_FLAGS) <= set(TrainConfig.model_fields) and set(EVAL_FLAGS) == set(EvalSettings.model_fields)
    args = build_parser().parse_args(["evaluate", "--threads", "3"])
    assert (args.threads, args.examples) == (3, EvalSettings().examples)
