"""End to end on the second workload, the two-stage orders program: the real vLLM teacher on Ray
Serve collects through the CLI, the rollouts export to SFT and GRPO sets with Ray Data, one GRPO
step on Ray Train scores the student's completions with the task's own rewards, and the CLI
evaluates teacher and base student on held-out orders. A handful of examples: minutes."""

from __future__ import annotations

import json

import pytest

from raydspy.cli.main import main
from raydspy.core.storage import resolve
from raydspy.pipeline.summary import read_rollouts

pytestmark = pytest.mark.e2e

REWARDS = {"city_match", "quantity_match", "item_match", "reply_mentions"}


@pytest.fixture(scope="module")
def orders_run(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("orders")
    code = main(
        [
            "collect",
            "--task",
            "orders",
            "--limit",
            "6",
            "--n",
            "2",
            "--output",
            str(out / "rollouts"),
            "--teacher-url",
            teacher.base_url,
            "--summary-json",
            str(out / "summary.json"),
        ]
    )
    assert code == 0
    return out


def test_the_task_collects_two_calls_per_rollout_scored_by_its_rewards(orders_run):
    summary = json.loads((orders_run / "summary.json").read_text())
    assert summary["rows"] == 12 and set(summary["reward_means"]) == REWARDS
    rows = read_rollouts(resolve(str(orders_run / "rollouts"))).to_pylist()
    done = [r for r in rows if r["error"] is None]
    assert len(done) >= 10  # structured outputs: nearly every completion parses
    for row in done:
        assert [c["predictor"] for c in row["trace"]] == ["extract", "confirm"]
        outputs = json.loads(row["outputs"])
        # The second predictor's prompt holds the first one's outputs.
        assert str(outputs["quantity"]) in row["trace"][1]["messages"][-1]["content"]
        assert set(dict(row["rewards"])) == REWARDS


def test_exports_and_a_grpo_step_with_the_tasks_rewards(orders_run, ray_local):
    from raydspy.distill import exports
    from raydspy.distill.config import GRPOSettings, TrainConfig
    from raydspy.distill.train import run_training

    sft = exports.to_sft(str(orders_run / "rollouts"), str(orders_run / "sft"), min_reward=0.0)
    rows = exports.load_export(str(orders_run / "sft"))
    assert sft.rows == len(rows) > 0 and set(rows["predictor"]) == {"extract", "confirm"}
    grpo = exports.to_grpo(str(orders_run / "rollouts"), str(orders_run / "grpo"))
    prompts = exports.load_export(str(orders_run / "grpo"))
    assert grpo.rows == len(prompts) and {"extract", "confirm"} <= set(prompts["predictor"])

    config = TrainConfig(
        dataset=str(orders_run / "grpo"),
        storage_path=str(orders_run / "runs"),
        name="grpo-orders",
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-5,
        cpus_per_worker=2,
        grpo=GRPOSettings(task="orders", num_generations=2, max_completion_length=24),
    )
    metrics = run_training("grpo", config).metrics
    assert metrics["global_step"] == 1
    # TRL logged every reward of the task, computed on the student's sampled completions by replay.
    for name in ("format", *REWARDS):
        assert f"rewards/{name}/mean" in metrics


def test_cli_evaluates_teacher_and_base_student_on_held_out_orders(teacher, tmp_path):
    code = main(
        [
            "evaluate",
            "--task",
            "orders",
            "--examples",
            "6",
            "--base-url",
            teacher.base_url,
            "--output",
            str(tmp_path / "eval"),
            "--threads",
            "12",
        ]
    )
    assert code == 0
    (teacher_result, student) = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert (teacher_result["name"], student["name"]) == ("teacher", "base student")
    assert set(teacher_result["rewards"]) == REWARDS and set(teacher_result["format_by_predictor"]) <= {
        "extract",
        "confirm",
    }
    assert teacher_result["format_compliance"] >= student["format_compliance"]
    assert "| teacher (`smollm2-135m-instruct`) | structured |" in (tmp_path / "eval" / "evaluation.md").read_text()
    assert (tmp_path / "eval" / "evaluation.png").stat().st_size > 0


def test_the_runs_dataset_card_names_the_program_and_the_inputs_license(orders_run, tmp_path):
    import datasets

    card = (orders_run / "rollouts" / "README.md").read_text()
    assert card.startswith("---\nlicense: cc0-1.0\n")  # the shipped orders data's own card
    assert "12 rollouts of the DSPy program `raydspy.programs.orders:program`, 2 per example" in card
    assert "| `extract` |" in card and "| `confirm` |" in card  # both predictors, with signatures
    loaded = datasets.load_dataset(str(orders_run / "rollouts"), split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.num_rows == 12
