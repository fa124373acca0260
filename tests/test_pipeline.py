"""The Ray Data pipeline on a real local Ray, without a teacher: dry runs and early errors."""

from __future__ import annotations

import pytest

from raydspy import ConfigError, InputError, StorageError, TeacherUnreachableError
from raydspy.core.storage import resolve
from raydspy.pipeline import PipelineConfig, run_pipeline
from raydspy.pipeline.summary import read_rollouts
from raydspy.programs import banking77
from raydspy.teacher.client import TeacherConfig

PROGRAM = "raydspy.programs.banking77:program"
REWARDS = "raydspy.programs.banking77:rewards"


@pytest.fixture(scope="module")
def sample_csv(tmp_path_factory):
    return banking77.write_sample(tmp_path_factory.mktemp("in") / "train.csv", size=12)


def test_dry_run_streams_one_file_per_block(ray_local, sample_csv, tmp_path):
    config = PipelineConfig(
        input_uri=str(sample_csv), output_uri=str(tmp_path / "out"), n=2, batch_size=4, dry_run=True
    )
    summary = run_pipeline(PROGRAM, TeacherConfig(structured_outputs=True), config, rewards=REWARDS)

    table = read_rollouts(resolve(str(tmp_path / "out")))
    assert summary.rows == table.num_rows == 24 and summary.error_rows == 0
    assert len(summary.files) >= 3  # 12 examples in blocks of 4: a file per block
    assert table.column("rollout_id").unique().to_pylist().__len__() == 24
    row = table.to_pylist()[0]
    assert row["dry_run"] and row["reward"] is None
    content = row["trace"][0]["messages"][-1]["content"]
    assert "Respond with a JSON object" in content  # structured outputs use JSONAdapter's prompt


def test_missing_input_field_fails_before_rollouts(ray_local, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "where is my card?"}\n')
    config = PipelineConfig(input_uri=str(bad), output_uri=str(tmp_path / "out"))
    with pytest.raises(InputError, match=r"lack the program's input field\(s\) \['text'\].*columns are \['query'\]"):
        run_pipeline(PROGRAM, TeacherConfig(), config)
    assert not (tmp_path / "out").exists()


def test_unreadable_input_uri(ray_local, tmp_path):
    config = PipelineConfig(input_uri=str(tmp_path / "nope.csv"), output_uri=str(tmp_path / "out"))
    with pytest.raises(StorageError, match="input not found"):
        run_pipeline(PROGRAM, TeacherConfig(), config)
    with pytest.raises(StorageError, match="unsupported URI scheme 'ftp'"):
        run_pipeline(PROGRAM, TeacherConfig(), config.model_copy(update={"input_uri": "ftp://x/y.csv"}))


def test_unreachable_teacher_fails_before_rollouts(ray_local, sample_csv, tmp_path):
    config = PipelineConfig(input_uri=str(sample_csv), output_uri=str(tmp_path / "out"))
    teacher = TeacherConfig(base_url="http://127.0.0.1:9/v1")  # discard port: nothing listens
    with pytest.raises(TeacherUnreachableError, match="teacher unreachable at http://127.0.0.1:9/v1"):
        run_pipeline(PROGRAM, teacher, config)
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_actors_that_cannot_start_fail_clearly(ray_local, sample_csv, tmp_path):
    # 2 actors x 6 CPUs on a Ray of 8: the second can never be placed. Without a wait for the whole
    # pool, the first actor would take every block; with it, a clear error instead of a hang.
    config = PipelineConfig(
        input_uri=str(sample_csv),
        output_uri=str(tmp_path / "out"),
        dry_run=True,
        num_actors=2,
        actor_num_cpus=6,
        actor_start_timeout_s=3,
    )
    with pytest.raises(
        ConfigError,
        match=r"2 Collect actors did not all start within 3 s: they ask for 2 x 6.0 "
        r"logical CPUs, and the cluster has 8 in all",
    ):
        run_pipeline(PROGRAM, TeacherConfig(), config)
    assert not list((tmp_path / "out").glob("*.parquet"))
