"""The dataset card of collected rollouts: what the rollouts under an output are, what made them,
and how to read them (`raydspy.core.cards` renders and writes it). The pipeline (`run_pipeline`)
and in-process `Collect` write it.

Every run rewrites the card from the counts of everything committed under its output, so after a
resume the card describes the whole output, not the last run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import dspy
import pyarrow as pa
import pyarrow.parquet as pq

from raydspy.core.cards import DatasetCard, schema_table, size_category
from raydspy.core.rollouts import ROLLOUT_SCHEMA
from raydspy.core.stats import ACCEPT_REWARD, RolloutStats
from raydspy.core.storage import Location
from raydspy.errors import StorageError

__all__ = ["ROLLOUT_COLUMNS", "rollouts_card", "token_column_loads"]

_TOKENS = "trace_tokens"

#: What each rollout column holds (the table of `raydspy.core.rollouts`, shortened).
ROLLOUT_COLUMNS = {
    "rollout_id": "hash of (program, example, rollout index, teacher, sampling): one row per id",
    "example_id": "the input's id column, or a hash of the example",
    "rollout_index": "0 … n-1 among the example's rollouts",
    "inputs": "the example's fields, as JSON",
    "outputs": "the program's output fields, as JSON; null when the rollout failed",
    "trace": "one item per LM call: predictor, signature, messages, completion, parsed outputs, tokens, latency",
    "trace_tokens": "per LM call, the teacher's token ids and logprobs (`--record-logprobs`); null when not recorded",
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


def _rewards(stats: RolloutStats) -> str:
    def rate(x: float | None) -> str:
        return "—" if x is None else f"{x:.3f}"

    rows = ["| reward | mean |", "| --- | --- |"]
    rows += [f"| `{name}` | {rate(mean)} |" for name, mean in stats.reward_means.items()]
    rows.append(f"| combined (`reward`) | {rate(stats.mean_reward)} |")
    lines = ["\n".join(rows), ""]
    lines.append(f"- Format: {rate(stats.format_rate)} of rollouts parsed at every LM call (`format_ok`).")
    if stats.reward_count:
        accepted = stats.reward_accepted
        lines.append(
            f"- Accepted by `raydspy export sft` at its default threshold (reward ≥ {ACCEPT_REWARD:g}): "
            f"{accepted} of {stats.rows} rollouts ({accepted / stats.rows:.1%})."
        )
    errors = ", ".join(f"{kind} {count}" for kind, count in sorted(stats.errors_by_type.items()))
    lines.append(f"- Errors: {stats.error_rows} rollouts{f' ({errors})' if errors else ''}.")
    return "\n".join(lines)


def token_column_loads(stats: RolloutStats, location: Location, files: Callable[[], Sequence[str]]) -> bool:
    """Whether a card may name ``trace_tokens`` among the columns `datasets` loads: the output
    holds token-level traces, and every part file has the column.

    Parts written before raydspy recorded tokens lack it, and `datasets` fails on a file that
    lacks a column its config names (pyarrow's datasets and Ray Data read it as null). Only an
    output where some rows lack tokens can hold such parts; only then are the parts' schemas
    read (``files()``: their paths; one footer each).

    Raises:
        StorageError: a footer cannot be read.
    """
    if not stats.token_rows:
        return False
    if stats.token_rows == stats.rows:
        return True
    for path in files():
        try:
            names = pq.read_schema(path, filesystem=location.filesystem).names
        except OSError as e:
            raise StorageError(f"cannot read the schema of {path!r}: {e}") from e
        if _TOKENS not in names:
            return False
    return True


def _schema(stats: RolloutStats, token_column: bool) -> str:
    table = schema_table(ROLLOUT_SCHEMA, ROLLOUT_COLUMNS)
    if not stats.token_rows:
        return table
    loads = (
        ""
        if token_column
        else "\n\n`datasets` loads these rollouts without `trace_tokens`: some parts were written before raydspy "
        "recorded tokens and lack the column. Ray Data and pyarrow read it (null in those parts)."
    )
    return f"""{table}

Token-level traces: {stats.token_rows} of {stats.rows} rollouts hold `trace_tokens`, one item per item
of `trace` (null for a call that returned none), from the teacher's own tokenizer:

| field | type | meaning |
| --- | --- | --- |
| `prompt_token_ids` | `list<int32>` | the prompt as the teacher tokenized it (chat template applied) |
| `completion_token_ids` | `list<int32>` | the tokens sampled; decoded without special tokens, the `completion` |
| `completion_logprobs` | `list<float32>` | each sampled token's logprob (the model's, before temperature), one per token |
| `top_token_ids` | `list<list<int32>>` | the K most likely tokens at each completion position, most likely first (`--top-logprobs K`) |
| `top_logprobs` | `list<list<float32>>` | their logprobs |{loads}"""


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


def _sampling(teacher_model: str | None, sampling: Mapping[str, Any], tokens: int, rows: int) -> str:
    if teacher_model is None:
        return "No LM was called: a dry run formats each prompt with the program's adapter."
    given = ", ".join(f"{k} {v}" for k, v in sampling.items() if v is not None) or "the endpoint's defaults"
    per = f" ({tokens / rows:.1f} a rollout)" if rows else ""
    return f"Model `{teacher_model}`; sampling: {given}. Completion tokens: {tokens}{per}."


def rollouts_card(
    stats: RolloutStats,
    *,
    program: dspy.Module,
    program_name: str,
    program_hash: str,
    teacher_model: str | None,
    sampling: Mapping[str, Any],
    n: int | None,
    input_uri: str | None,
    input_license: str | None,
    data_files: str,
    token_column: bool = False,
) -> DatasetCard:
    """The card of the rollouts ``stats`` counts (everything committed under the output).

    Args:
        stats: the counts of the output's rollouts.
        program: the program the rollouts ran; ``program_name`` its spec or class name, and
            ``program_hash`` what the rows carry.
        teacher_model: the teacher's model name; None for a dry run (no LM called).
        sampling: the request parameters that matter to a reader (temperature, max_tokens, seed).
        n: rollouts per example, when one number holds for the output.
        input_uri: where the examples were read, when known; ``input_license`` what their card
            declares (`raydspy.core.cards.input_license`).
        data_files: the rollout files' glob, relative to the output (the card's config).
        token_column: name ``trace_tokens`` among the columns `datasets` loads
            (`token_column_loads`); off, the card's config leaves it out.
    """
    metadata = {
        **({"license": input_license} if input_license else {}),
        "pretty_name": f"Rollouts of {program_name}",
        "tags": ["raydspy", "dspy", "rollouts", "distillation", "synthetic"],
        "size_categories": [size_category(stats.rows)],
    }
    teacher = "none (dry run)" if teacher_model is None else f"`{teacher_model}`"
    per_example = f", {n} per example," if n else ""
    intro = (
        f"{stats.rows} rollouts of the DSPy program `{program_name}`{per_example} from the teacher {teacher}, "
        f"written by [raydspy](https://pypi.org/project/raydspy/) {_version()} on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d}. Each row is one run of the program on one example, with the "
        "full trace of its LM calls and the rewards that score it."
    )
    where = f"Examples read from `{input_uri}`" if input_uri else "Examples passed to `raydspy.Collect`"
    source = where + (
        f"; their card declares the license `{input_license}`, which these rollouts, as derived data, keep."
        if input_license
        else "; their license is not known to raydspy (no `license:` in a dataset card beside them)."
    )
    return DatasetCard(
        title=f"Rollouts of {program_name}",
        data_files=data_files,
        # What `datasets` loads (the config's features and columns); the Schema section lists all.
        schema=ROLLOUT_SCHEMA if token_column else pa.schema([f for f in ROLLOUT_SCHEMA if f.name != _TOKENS]),
        metadata=metadata,
        intro=intro,
        sections=[
            ("Program", f"Program hash `{program_hash}` (the rows' `program_hash`).\n\n{_predictors(program)}"),
            ("Teacher and sampling", _sampling(teacher_model, sampling, stats.completion_tokens, stats.rows)),
            ("Rewards", _rewards(stats)),
            ("Schema", _schema(stats, token_column)),
            ("Loading", _loading(data_files)),
            ("Source data", source),
        ],
    )
