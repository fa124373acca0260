"""The task spec (presets, YAML files, the command line's overrides) and the orders workload."""

from __future__ import annotations

import json
import pickle

import dspy
import pydantic
import pytest

from raydspy.core.program import program_input_fields
from raydspy.errors import ConfigError
from raydspy.programs import orders
from raydspy.task import PRESETS, TaskSpec, load_task


def test_presets_name_loadable_programs_rewards_and_data():
    from raydspy.core.specs import load_program, load_rewards
    from raydspy.pipeline.inputs import load_examples

    for name in PRESETS:
        task = load_task(name)
        program = load_program(task.program)
        rewards = load_rewards(task.rewards)
        assert task.name == name and isinstance(program, dspy.Module) and rewards
        for uri in (task.input, task.held_out):
            rows = load_examples(uri, limit=3)
            assert len(rows) == 3 and set(program_input_fields(program)) <= set(rows[0])


def test_a_task_file_and_its_errors(tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text(
        "name: qa\nprogram: myproj.programs:qa\nrewards: myproj.rewards:all\n"
        "input: s3://bucket/train.jsonl\nheld_out: data/test.jsonl\nreward_weights: {exact: 2}\n"
    )
    task = load_task(str(path))
    assert (task.name, task.program, task.held_out, task.reward_weights) == (
        "qa",
        "myproj.programs:qa",
        "data/test.jsonl",
        {"exact": 2.0},
    )
    assert task.teacher_defaults() == {}
    (tmp_path / "bad.yaml").write_text("program: p:q\nprogramme: typo\n")
    with pytest.raises(ConfigError, match="programme"):
        load_task(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="neither a preset"):
        load_task("no-such-task")


def test_the_command_line_overrides_the_task_and_loads_its_specs_before_ray():
    from raydspy.cli.common import task_from_args
    from raydspy.cli.main import build_parser

    args = build_parser().parse_args(["collect", "--task", "orders", "--output", "out", "--input", "x.jsonl"])
    task = task_from_args(args, need=("program", "input"))
    assert (task.program, task.input, task.id_field) == ("raydspy.programs.orders:program", "x.jsonl", "id")
    old = build_parser().parse_args(["collect", "--preset", "banking77", "--output", "out"])  # the old flag
    assert task_from_args(old).name == "banking77"
    bad = build_parser().parse_args(
        ["collect", "--task", "orders", "--rewards", "raydspy.programs.orders:nothing", "--output", "out"]
    )
    with pytest.raises(ConfigError, match="nothing"):
        task_from_args(bad)
    bare = build_parser().parse_args(["collect", "--program", "raydspy.programs.orders:program", "--output", "out"])
    with pytest.raises(ConfigError, match="--input"):
        task_from_args(bare, need=("program", "input"))


# -- the orders workload -------------------------------------------------------------------------


def test_the_shipped_orders_are_the_generators_output():
    from raydspy.datasets import orders_path

    for split, rows in orders.shipped_splits().items():
        shipped = [json.loads(line) for line in orders_path(f"{split}.jsonl").read_text().splitlines()]
        assert shipped == rows
    splits = orders.shipped_splits()
    assert not {r["message"] for r in splits["train"]} & {r["message"] for r in splits["test"]}
    assert orders_path("LICENSE").is_file() and "CC0" in orders_path("README.md").read_text()


def test_the_orders_program_has_two_predictors_the_second_reading_the_first():
    program = orders.program()
    assert [name for name, _ in program.named_predictors()] == ["extract", "confirm"]
    assert program_input_fields(program) == ["message"]
    assert program.predictors()[0].signature.output_fields["quantity"].annotation is int


def test_orders_rewards_normalise_and_score_free_text():
    rewards = orders.rewards()
    gold = {"city": "Oslo", "quantity": 3, "item": "wool scarves"}
    good = {
        "city": "oslo ",
        "quantity": 3,
        "item": "Wool Scarf",
        "reply": "Your three wool scarves are on their way to Oslo.",
    }
    assert {n: f(gold, good) for n, f in rewards.items()} == {
        "city_match": 1.0,
        "quantity_match": 1.0,
        "item_match": 1.0,
        "reply_mentions": 1.0,
    }
    bad = {"city": "Bergen", "quantity": "three", "item": "mugs", "reply": "Oslo"}
    assert {n: f(gold, bad) for n, f in rewards.items()} == {
        "city_match": 0.0,
        "quantity_match": 0.0,
        "item_match": 0.0,
        "reply_mentions": 0.0,
    }
    assert orders.normalize("Blue  Mugs!") == "blue mug" and orders.normalize("paintbrushes") == "paintbrush"
    assert rewards["city_match"]({"message": "no gold"}, good) is None
    assert pickle.loads(pickle.dumps(rewards["item_match"]))(gold, good) == 1.0


def test_task_spec_is_frozen_and_validated():
    with pytest.raises(pydantic.ValidationError):
        TaskSpec(program="p:q", n=0)
    task = TaskSpec(program="p:q")
    assert task.model_copy(update={"input": "x"}).input == "x" and task.input is None
