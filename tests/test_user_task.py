"""A program raydspy has never seen goes through the whole loop with a task YAML and CLI flags only.

The program (`tests/user_programs/reviews.py`) has two predictors and a list and an integer
output; its rewards are a DSPy metric and a plain reward function; its data is a JSONL the user
wrote. The teacher is a fake OpenAI server (its point here is the loop, not the LM: the real
teacher runs the orders workload in test_e2e_orders.py); the student is the embedded 135M model
trained for one step each of SFT and GRPO on a real local Ray.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from rich.console import Console

pytestmark = pytest.mark.slow  # trains the embedded model twice

REPO = Path(__file__).resolve().parents[1]
REVIEWS = [
    ("Great blender, smooth soup in a minute.", 5),
    ("It broke after a week.", 1),
    ("Great value and it works well.", 5),
    ("The lid leaks and the motor is loud.", 2),
    ("Great, quiet and easy to clean.", 5),
    ("Stopped working, awful support.", 1),
]


def _teacher(request, k):
    """Key phrases are the review's words; five stars when one is 'great', else two."""
    user = request["messages"][-1]["content"]
    if "`stars`" in request["messages"][0]["content"]:
        return json.dumps({"stars": 5 if "great" in user.lower() else 2})
    review = user.split("[[ ## review ## ]]")[-1].split("Respond with")[0]
    return json.dumps({"phrases": [w.strip(".,") for w in review.split()[:3]]})


@pytest.fixture
def user_task(tmp_path):
    for name, rows in (("train", REVIEWS), ("test", REVIEWS[:4])):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(
                json.dumps({"id": f"{name}-{i}", "review": r, "gold_stars": s}) + "\n" for i, (r, s) in enumerate(rows)
            )
        )
    task = tmp_path / "task.yaml"
    task.write_text(
        f"name: reviews\nprogram: user_programs.reviews:ReviewRater\nrewards: user_programs.reviews:rewards\n"
        f"input: {tmp_path / 'train.jsonl'}\nheld_out: {tmp_path / 'test.jsonl'}\nid_field: id\n"
        "structured_outputs: true\n"
    )
    return str(task)


def test_a_new_program_through_collect_export_train_and_evaluate(ray_local, user_task, tmp_path, monkeypatch):
    import raydspy.cli.common
    from raydspy.cli.main import main
    from raydspy.distill.exports import load_export

    log = io.StringIO()
    monkeypatch.setattr(raydspy.cli.common, "console", Console(file=log, width=400))
    configs = REPO / "jobs" / "configs"
    with FakeOpenAI(reply=_teacher) as server:
        teacher = ["--teacher-url", server.url, "--teacher-model", "fake-model"]
        assert (
            main(
                [
                    "collect",
                    "--task",
                    user_task,
                    "--output",
                    str(tmp_path / "rollouts"),
                    "--n",
                    "2",
                    "--no-cache",
                    "--summary-json",
                    str(tmp_path / "summary.json"),
                    *teacher,
                ]
            )
            == 0
        )
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert summary["rows"] == 12 and summary["reward_means"]["stars_match"] == pytest.approx(4 / 6)

        assert main(["export", "sft", "--rollouts", str(tmp_path / "rollouts"), "--output", str(tmp_path / "sft")]) == 0
        assert (
            main(["export", "grpo", "--rollouts", str(tmp_path / "rollouts"), "--output", str(tmp_path / "grpo")]) == 0
        )
        sft = load_export(str(tmp_path / "sft"))
        # Rejection sampling at reward 1.0 keeps the rollouts of the reviews the teacher rated right,
        # both LM calls of each.
        assert len(sft) == 4 * 2 * 2 and set(sft["predictor"]) == {"pick", "rate"}

        common = ["--storage-path", str(tmp_path / "runs"), "--max-steps", "1"]
        assert (
            main(
                [
                    "train",
                    "sft",
                    "--config",
                    str(configs / "sft-cpu.yaml"),
                    "--dataset",
                    str(tmp_path / "sft"),
                    "--name",
                    "reviews-sft",
                    "--copy-to",
                    str(tmp_path / "sft-model"),
                    *common,
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "train",
                    "grpo",
                    "--config",
                    str(configs / "grpo-cpu.yaml"),
                    "--task",
                    user_task,
                    "--dataset",
                    str(tmp_path / "grpo"),
                    "--model",
                    str(tmp_path / "sft-model"),
                    "--name",
                    "reviews-grpo",
                    *common,
                ]
            )
            == 0
        )
        # TRL logged the user's own rewards, scored on the student's samples by replay.
        assert "rewards/stars_match/mean" in log.getvalue() and "rewards/close_enough/mean" in log.getvalue()

        assert (
            main(
                [
                    "evaluate",
                    "--task",
                    user_task,
                    "--candidate",
                    f"teacher=fake-model@{server.url}:plain",
                    "--output",
                    str(tmp_path / "eval"),
                ]
            )
            == 0
        )
    (result,) = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert result["examples"] == 4 and result["rewards"]["stars_match"] == 0.75
    assert result["rewards"]["close_enough"] == pytest.approx((1 + 1 + 1 + 0.75) / 4)
    assert result["format_by_predictor"] == {"pick": 1.0, "rate": 1.0}
