"""The dataset card of a pipeline run: what `run_pipeline` knows of the run (program, teacher,
layout, input), put into the rollouts' card (`raydspy.core.rollout_card`) beside the parts."""

from __future__ import annotations

import dspy

from raydspy.core.cards import input_license, write_card
from raydspy.core.rollout_card import rollouts_card, token_column_loads
from raydspy.core.runner import RolloutRunner
from raydspy.core.stats import RolloutStats
from raydspy.core.storage import Location
from raydspy.pipeline.commits import committed_files
from raydspy.pipeline.config import PipelineConfig
from raydspy.teacher.client import TeacherConfig

__all__ = ["write_run_card"]


def write_run_card(
    output: Location,
    stats: RolloutStats,
    runner: RolloutRunner,
    spec: str | dspy.Module,
    teacher: TeacherConfig,
    config: PipelineConfig,
    source: Location,
) -> str:
    """Write ``README.md`` under ``output``: the card of the rollouts ``stats`` counts (all
    committed there), made by ``runner``'s program (given as ``spec``) on ``teacher`` in the run
    ``config`` from the examples at ``source`` (whose own card may declare their license).

    Returns:
        The path written.

    Raises:
        StorageError: the card could not be written, or the parts' schemas read.
    """
    card = rollouts_card(
        stats,
        program=runner.program,
        program_name=spec if isinstance(spec, str) else type(spec).__name__,
        program_hash=runner.program_hash,
        teacher_model=None if config.dry_run else teacher.model,
        sampling={**teacher.sampling, "structured_outputs": teacher.structured_outputs},
        n=config.n,
        input_uri=source.uri,
        input_license=input_license(source),
        data_files="part-*.parquet",
        token_column=token_column_loads(stats, output, lambda: committed_files(output)),
    )
    return write_card(output, card)
