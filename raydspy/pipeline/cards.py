"""The dataset card of a collection run: what the rollouts under an output are, what made them,
and how to read them (`raydspy.core.cards` renders and writes it).

Every run rewrites the card from the summary of everything committed under its output, so after a
resume the card describes the whole output, not the last run.
"""

from __future__ import annotations

import datetime as dt
from importlib.metadata import PackageNotFoundError, version

import dspy

from raydspy.core.cards import DatasetCard, schema_table, size_category
from raydspy.core.rollouts import ROLLOUT_SCHEMA
from raydspy.core.stats import ACCEPT_REWARD
from raydspy.pipeline.summary import RunSummary
from raydspy.teacher.client import TeacherConfig

__all__ = ["ROLLOUT_COLUMNS", "run_card"]

#: What each rollout column holds (the table of `raydspy.core.rollouts`, shortened).
ROLLOUT_COLUMNS = {
    "rollout_id": "hash of (program, example, rollout index, teacher, sampling): one row per id",
    "example_id": "the input's id column, or a hash of the example",
    "rollout_index": "0 … n-1 among the example's rollouts",
    "inputs": "the example's fields, as JSON",
    "outputs": "the program's output fields, as JSON; null when the rollout failed",
    "trace": "one item per LM call: predictor, signature, messages, completion, parsed outputs, tokens, latency",
    "reward": "combined reward (weighted mean of the named ones)",
    "rewards": "each named reward",
    "format_ok": "every LM call parsed in the program's format",
    "error": "`Type: message` of what failed, else null",
    "dry_run": "prompts formatted, no LM called",
    "program_hash": "hash of signatures, instructions, demos, adapter",
    "teacher": "the teacher's model name",
    "created_at": "when the rollout finished (UTC)",
}


def _version() -> str:
    try:
        return version("raydspy")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        return "unknown"


def _predictors(program: dspy.Module) -> str:
    rows = ["| predictor | signature | instructions |", "| --- | --- | --- |"]
    for name, predictor in program.named_predictors():
        signature = predictor.signature
        instructions = " ".join((signature.instructions or "").split())
        if len(instructions) > 160:
            instructions = instructions[:157] + "…"
        rows.append(f"| `{name}` | `{signature.signature}` | {instructions.replace('|', '/')} |")
    return "\n".join(rows)


def _rewards(summary: RunSummary) -> str:
    def rate(x: float | None) -> str:
        return "—" if x is None else f"{x:.3f}"

    rows = ["| reward | mean |", "| --- | --- |"]
    rows += [f"| `{name}` | {rate(mean)} |" for name, mean in summary.reward_means.items()]
    rows.append(f"| combined (`reward`) | {rate(summary.mean_reward)} |")
    lines = ["\n".join(rows), ""]
    lines.append(f"- Format: {rate(summary.format_rate)} of rollouts parsed at every LM call (`format_ok`).")
    if summary.mean_reward is not None:
        accepted = summary.accepted_rows
        lines.append(
            f"- Accepted by `raydspy export sft` at its default threshold (reward ≥ {ACCEPT_REWARD:g}): "
            f"{accepted} of {summary.rows} rollouts ({accepted / summary.rows:.1%})."
        )
    errors = ", ".join(f"{kind} {count}" for kind, count in sorted(summary.errors_by_type.items()))
    lines.append(f"- Errors: {summary.error_rows} rollouts{f' ({errors})' if errors else ''}.")
    return "\n".join(lines)


def _loading(data_files: str) -> str:
    return f"""```python
# Hugging Face datasets: the card's config reads {data_files} (every column but `rewards`, an
# Arrow map, which datasets cannot read: huggingface/datasets#5612; `reward` combines them)
import datasets
rollouts = datasets.load_dataset("OUTPUT", split="train")  # OUTPUT: this folder

# Ray Data, pyarrow, pandas: every column, any storage
import ray
rollouts = ray.data.read_parquet("OUTPUT", file_extensions=["parquet"])
```

Training sets: `raydspy export sft|dpo|grpo --rollouts OUTPUT --output DIR` (each writes its own card)."""


def run_card(
    summary: RunSummary,
    *,
    program: dspy.Module,
    program_name: str,
    program_hash: str,
    teacher: TeacherConfig,
    n: int,
    dry_run: bool,
    input_uri: str,
    input_license: str | None,
    data_files: str = "part-*.parquet",
) -> DatasetCard:
    """The card of the rollouts ``summary`` counts.

    Args:
        summary: the output's `RunSummary` (everything committed under it).
        program: the program the rollouts ran; ``program_name`` its spec or class name, and
            ``program_hash`` what the rows carry.
        teacher: the endpoint's model and the sampling.
        n: rollouts per example; ``dry_run``: no LM was called.
        input_uri: where the examples were read; ``input_license`` what their card declares.
        data_files: the rollout files, relative to the output.
    """
    metadata = {
        **({"license": input_license} if input_license else {}),
        "pretty_name": f"Rollouts of {program_name}",
        "tags": ["raydspy", "dspy", "rollouts", "distillation", "synthetic"],
        "size_categories": [size_category(summary.rows)],
    }
    model = "none (dry run)" if dry_run else f"`{teacher.model}`"
    intro = (
        f"{summary.rows} rollouts of the DSPy program `{program_name}`, {n} per example, from the teacher "
        f"{model}, written by [raydspy](https://pypi.org/project/raydspy/) {_version()} on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d}. Each row is one run of the program on one example, with the "
        "full trace of its LM calls and the rewards that score it."
    )
    tokens = summary.completion_tokens
    per = f" ({tokens / summary.rows:.1f} a rollout)" if summary.rows else ""
    sampling = (
        "No LM was called: a dry run formats each prompt with the program's adapter."
        if dry_run
        else f"Model `{teacher.model}`, temperature {teacher.temperature:g}, at most {teacher.max_tokens} tokens a "
        f"call{f', seed {teacher.seed}' if teacher.seed is not None else ''}; "
        f"structured outputs {'on' if teacher.structured_outputs else 'off'}. Completion tokens: {tokens}{per}."
    )
    source = f"Examples read from `{input_uri}`" + (
        f"; their card declares the license `{input_license}`, which these rollouts, as derived data, keep."
        if input_license
        else "; their license is not known to raydspy (no `license:` in a dataset card beside them)."
    )
    return DatasetCard(
        title=f"Rollouts of {program_name}",
        data_files=data_files,
        schema=ROLLOUT_SCHEMA,
        metadata=metadata,
        intro=intro,
        sections=[
            ("Program", f"Program hash `{program_hash}` (the rows' `program_hash`).\n\n{_predictors(program)}"),
            ("Teacher and sampling", sampling),
            ("Rewards", _rewards(summary)),
            ("Schema", schema_table(ROLLOUT_SCHEMA, ROLLOUT_COLUMNS)),
            ("Loading", _loading(data_files)),
            ("Source data", source),
        ],
    )
