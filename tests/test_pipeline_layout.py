"""How `PipelineConfig` lays a run out: blocks per actor call, calls an actor holds, rows a file."""

from __future__ import annotations

import pytest

from raydspy.pipeline.config import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE, MAX_FILES, PipelineConfig


def _config(**layout) -> PipelineConfig:
    return PipelineConfig(input_uri="in.csv", output_uri="out", **layout)


def test_the_default_block_is_a_wave_of_one_actor_and_files_take_whole_blocks():
    config = _config()
    assert config.call_size == config.threads_per_actor == 32
    assert config.calls_per_actor == 2  # one block fills the pool, one waits beside it
    assert config.rows_per_file == config.examples_per_file * config.n == 32  # nothing rounded


@pytest.mark.parametrize(
    ("examples", "batch_size"),
    [
        (10, DEFAULT_BATCH_SIZE),
        (DEFAULT_BATCH_SIZE * MAX_FILES, DEFAULT_BATCH_SIZE),  # the largest input at the default size
        (DEFAULT_BATCH_SIZE * MAX_FILES + 1, DEFAULT_BATCH_SIZE + 1),
        (1_000_000, 245),  # 4,082 files
        (10**9, MAX_BATCH_SIZE),  # the cap: more files than MAX_FILES
    ],
)
def test_an_unset_batch_size_bounds_the_files_a_run_writes(examples, batch_size):
    config = _config().for_examples(examples)
    assert config.batch_size == batch_size
    if batch_size < MAX_BATCH_SIZE:
        assert -(-examples // config.batch_size) <= MAX_FILES


def test_a_batch_size_given_is_kept_whatever_the_input():
    assert _config(batch_size=8).for_examples(10**7).batch_size == 8


@pytest.mark.parametrize(
    ("layout", "call_size", "calls", "rows_per_file"),
    [
        ({"rollouts_per_call": 1, "threads_per_actor": 32, "batch_size": 8}, 1, 33, 8),  # the finest grain
        ({"threads_per_actor": 3, "batch_size": 4, "n": 2}, 3, 2, 9),  # 8 rollouts a file, rounded up to 3s
        ({"rollouts_per_call": 8, "threads_per_actor": 32, "batch_size": 32, "n": 4}, 8, 5, 128),
        ({"dry_run": True, "batch_size": 4, "n": 2}, 8, 5, 8),  # a dry run: a file's worth a call
        ({"batch_size": 2, "n": 2}, 4, 9, 4),  # files smaller than a wave: calls of a file each
    ],
)
def test_layouts(layout, call_size, calls, rows_per_file):
    config = _config(**layout)
    assert (config.call_size, config.calls_per_actor, config.rows_per_file) == (call_size, calls, rows_per_file)
    # The planner hands out four waves of the whole pool per call.
    assert config.plan_size * config.n >= 4 * config.num_actors * calls * call_size
