"""MLflow tracking of a collection run (`raydspy collect --mlflow`), in a real local MLflow store."""

from __future__ import annotations

import dspy
import pytest

from raydspy.pipeline import PipelineConfig
from raydspy.pipeline.summary import RunSummary
from raydspy.teacher.client import TeacherConfig

mlflow = pytest.importorskip("mlflow")

PROGRAM = "raydspy.programs.banking77:program"
REWARDS = "raydspy.programs.banking77:rewards"


def test_mlflow_run_logs_params_metrics_program_and_rollouts(tmp_path):
    from raydspy.pipeline.tracking import MlflowRun

    uri = (tmp_path / "mlruns").as_uri()
    out = str(tmp_path / "out")
    config = PipelineConfig(input_uri="train.csv", output_uri=out, n=2)
    summary = RunSummary(
        rows=4,
        error_rows=1,
        mean_reward=0.5,
        reward_means={"exact_match": 0.25, "format": 0.75},
        completion_tokens=40,
        elapsed_s=2.0,
        output_uri=out,
        planned=4,
        new_rows=4,
    )
    with MlflowRun(PROGRAM, TeacherConfig(), config, rewards=REWARDS, tracking_uri=uri) as tracked:
        tracked.finish(summary)

    run = mlflow.MlflowClient(uri).get_run(tracked.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["program"] == PROGRAM and run.data.params["n"] == "2"
    assert run.data.params["rollouts_uri"] == out and run.data.tags["rollouts_uri"] == out
    assert run.data.metrics["mean_reward"] == 0.5 and run.data.metrics["reward_exact_match"] == 0.25
    assert run.data.metrics["rollouts_per_s"] == 2.0 and run.data.metrics["error_rows"] == 1
    program = mlflow.dspy.load_model(tracked.model_uri)
    assert isinstance(program, dspy.Module)
    assert "label" in program.predict.signature.output_fields


def test_a_failed_run_is_marked_failed(tmp_path):
    from raydspy.pipeline.tracking import MlflowRun

    uri = (tmp_path / "mlruns").as_uri()
    config = PipelineConfig(input_uri="train.csv", output_uri=str(tmp_path / "out"))
    with pytest.raises(RuntimeError):
        with MlflowRun(PROGRAM, TeacherConfig(), config, tracking_uri=uri) as tracked:
            raise RuntimeError("boom")
    assert mlflow.MlflowClient(uri).get_run(tracked.run_id).info.status == "FAILED"


def test_collect_cli_with_mlflow(ray_local, tmp_path, monkeypatch):
    """`raydspy collect --mlflow` on a dry run: the MLflow run holds the summary the CLI printed."""
    from raydspy.cli.main import main
    from raydspy.programs import banking77

    sample = banking77.write_sample(tmp_path / "train.csv", size=6)
    uri = (tmp_path / "mlruns").as_uri()
    code = main(
        [
            "collect",
            "--program",
            PROGRAM,
            "--rewards",
            REWARDS,
            "--input",
            str(sample),
            "--output",
            str(tmp_path / "out"),
            "--n",
            "2",
            "--dry-run",
            "--mlflow",
            "--mlflow-tracking-uri",
            uri,
            "--mlflow-experiment",
            "cli-test",
        ]
    )
    assert code == 0
    experiment = mlflow.MlflowClient(uri).get_experiment_by_name("cli-test")
    (run,) = mlflow.MlflowClient(uri).search_runs([experiment.experiment_id])
    assert run.data.metrics["rows"] == 12 and run.data.params["dry_run"] == "True"
    assert run.data.tags["rollouts_uri"] == str(tmp_path / "out")
