"""Checking the examples before any LM call: every row, its position in the input, and why it
cannot be run.

A row is invalid when a program input field is null or an empty string, has a type the program's
signature cannot take (a list where it wants text, text where it wants an int), is longer than the
teacher's context allows, or shares its example id with another row (the rollouts of both would
get the same ids, so which one was meant is unknowable: every row of a duplicated id is invalid).

The check runs on Ray Data, so the driver's memory does not grow with the input:

    examples ─ map_batches(_block_ids) ─ groupby(example_id).count() ─ count > 1   the duplicated ids
    examples ─ map_batches(_check_block, in input order)                       one row per block: its
                                                                               size and its invalid rows

The driver adds up the blocks' sizes in input order, so each invalid row keeps its exact position
(0-based, as a reader of the file counts rows); it holds only the invalid rows.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy
import pyarrow as pa
import ray.data
from ray.data.context import ShuffleStrategy

from raydspy.core.identity import example_id
from raydspy.errors import InputError

__all__ = ["check_columns", "InvalidRow", "InputCheck", "check_input", "input_field_types", "estimate_tokens"]

#: Characters per token for the length check: the usual rule of thumb for English with BPE
#: tokenizers (OpenAI, "What are tokens and how to count them"). An estimate, not a count.
CHARS_PER_TOKEN = 4

#: Input bytes per partition of the duplicate-id group-by, and the most partitions: Ray Data's
#: default of 200 partitions took 16 s for 100 rows on 2 cores.
BYTES_PER_PARTITION = 256 * 2**20
MAX_PARTITIONS = 64


@dataclass(frozen=True)
class InvalidRow:
    """A row that cannot be run: where it is, its id, why, and its content."""

    row: int
    example_id: str
    reason: str
    example: Mapping[str, Any] | None = None

    def describe(self) -> str:
        return f"row {self.row} (id {self.example_id}): {self.reason}"


@dataclass
class InputCheck:
    """What `check_input` found.

    Attributes:
        rows: rows read.
        invalid: the invalid rows, in input order.
    """

    rows: int = 0
    invalid: list[InvalidRow] = field(default_factory=list)

    @property
    def valid(self) -> int:
        """Rows that can be run."""
        return self.rows - len(self.invalid)

    @property
    def invalid_ids(self) -> set[str]:
        return {r.example_id for r in self.invalid}

    def summary(self, limit: int = 5) -> str:
        """One line: how many rows are invalid, and the first ``limit`` of them."""
        first = "; ".join(r.describe() for r in self.invalid[:limit])
        more = f"; and {len(self.invalid) - limit} more" if len(self.invalid) > limit else ""
        return f"{len(self.invalid)} of {self.rows} rows are invalid: {first}{more}"


def input_field_types(program: dspy.Module, fields: Sequence[str]) -> dict[str, Any]:
    """The annotation of each input field, from the first predictor whose signature declares it
    (fields no signature declares are left out, and not type-checked)."""
    types: dict[str, Any] = {}
    signatures = [getattr(program, "signature", None)] + [p.signature for p in program.predictors()]
    for signature in signatures:
        for name, info in (getattr(signature, "input_fields", None) or {}).items():
            if name in fields and name not in types:
                types[name] = info.annotation
    return types


def estimate_tokens(example: Mapping[str, Any], fields: Sequence[str]) -> int:
    """Tokens the input fields will take, estimated as characters / `CHARS_PER_TOKEN`."""
    return sum(len(str(example.get(f) or "")) for f in fields) // CHARS_PER_TOKEN


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _type_problem(value: Any, annotation: Any) -> str | None:
    """Why ``value`` cannot fill a field annotated ``annotation``, or None."""
    if _is_null(value):
        return "is empty (null)"
    origin = typing.get_origin(annotation) or annotation
    if annotation is str or annotation is None:
        if isinstance(value, str):
            return "is an empty string" if not value.strip() else None
        # Numbers and booleans have an obvious text form (CSV readers often type them so).
        return None if isinstance(value, (int, float, bool)) else f"is a {type(value).__name__}, expected text"
    if annotation is bool:
        return None if isinstance(value, bool) else f"is a {type(value).__name__}, expected bool"
    if annotation is int:
        # Integral floats pass: a column of ints with a gap in it reads as doubles.
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
        return None if ok else f"is a {type(value).__name__} ({value!r}), expected int"
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"is a {type(value).__name__}, expected float"
    if origin in (list, tuple, set):
        return None if isinstance(value, (list, tuple)) else f"is a {type(value).__name__}, expected a list"
    return None


def _row_problems(
    example: Mapping[str, Any], types: Mapping[str, Any], fields: Sequence[str], max_input_tokens: int | None
) -> list[str]:
    problems = []
    for name in fields:
        problem = _type_problem(example.get(name), types.get(name, str))
        if problem:
            problems.append(f"field {name!r} {problem}")
    if max_input_tokens is not None and not problems:
        tokens = estimate_tokens(example, fields)
        if tokens > max_input_tokens:
            problems.append(f"input is ~{tokens} tokens, over the {max_input_tokens} the teacher's context leaves")
    return problems


#: One row per block of `_check_block`: the block's size and its invalid rows (position in the
#: block, example id, problems, whether the id is duplicated, the row as JSON).
_BLOCK_CHECK = pa.schema(
    [
        ("rows", pa.int64()),
        (
            "invalid",
            pa.list_(
                pa.struct(
                    [
                        ("position", pa.int64()),
                        ("example_id", pa.string()),
                        ("reason", pa.string()),
                        ("duplicate", pa.bool_()),
                        ("example", pa.string()),
                    ]
                )
            ),
        ),
    ]
)


def _block_ids(block: pa.Table, id_field: str | None) -> pa.Table:
    return pa.table({"example_id": pa.array([example_id(row, id_field) for row in block.to_pylist()], pa.string())})


def _check_block(
    block: pa.Table,
    fields: Sequence[str],
    types: Mapping[str, Any],
    id_field: str | None,
    max_input_tokens: int | None,
    duplicated: frozenset[str],
) -> pa.Table:
    invalid = []
    rows = block.to_pylist()
    for position, example in enumerate(rows):
        ex_id = example_id(example, id_field)
        problems = _row_problems(example, types, fields, max_input_tokens)
        if problems or ex_id in duplicated:
            invalid.append(
                {
                    "position": position,
                    "example_id": ex_id,
                    "reason": "; ".join(problems),
                    "duplicate": ex_id in duplicated,
                    "example": json.dumps(example, default=str, ensure_ascii=False),
                }
            )
    return pa.Table.from_pylist([{"rows": len(rows), "invalid": invalid}], schema=_BLOCK_CHECK)


@contextlib.contextmanager
def _setting(options: Any, name: str, value: Any) -> Iterator[None]:
    """Set ``options.name`` for the duration of the block.

    Set on a dataset's own context (a Dataset copies the current DataContext when it is read, so
    the current one would not reach it), and put back after: every dataset derived from the same
    read shares that context, the run's plan included.
    """
    previous = getattr(options, name)
    setattr(options, name, value)
    try:
        yield
    finally:
        setattr(options, name, previous)


def _duplicated_ids(dataset: ray.data.Dataset, id_field: str | None, partitions: int) -> frozenset[str]:
    """The example ids more than one row has (a group-by on Ray Data: no id reaches the driver
    but those)."""
    ids = dataset.map_batches(_block_ids, fn_kwargs={"id_field": id_field}, batch_format="pyarrow")
    counts = ids.groupby("example_id", num_partitions=partitions).count()
    repeated = counts.filter(lambda row: row["count()"] > 1)
    # Ray Data's default hash shuffle starts an aggregator actor per partition, seconds before the
    # first row; the sort shuffle runs as tasks in the workers already up (a third of the time for
    # a few thousand rows, BENCHMARKS.md "Start-up"), and scales out the same way.
    with _setting(dataset.context, "shuffle_strategy", ShuffleStrategy.SORT_SHUFFLE_PULL_BASED):
        return frozenset(row["example_id"] for row in repeated.iter_rows())


def _in_input_order(dataset: ray.data.Dataset) -> Iterator[pa.Table]:
    """The dataset's blocks on the driver, in input order."""
    with _setting(dataset.context.execution_options, "preserve_order", True):
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            yield typing.cast(pa.Table, batch)


def check_input(
    dataset: ray.data.Dataset,
    fields: Sequence[str],
    *,
    field_types: Mapping[str, Any] | None = None,
    id_field: str | None = None,
    max_input_tokens: int | None = None,
    input_bytes: int = 0,
) -> InputCheck:
    """Check every row of ``dataset`` against a program taking ``fields``, on Ray Data.

    Args:
        dataset: the examples (read twice: once for the duplicated ids, once for the rest).
        fields: the program's input fields (the columns are known to exist).
        field_types: annotation per field (`input_field_types`); text where absent.
        id_field: the id column, if any (else ids hash each row's content).
        max_input_tokens: reject rows whose estimated input tokens exceed this.
        input_bytes: the input's size on storage, which sizes the group-by's partitions (one per
            `BYTES_PER_PARTITION`).

    Returns:
        The `InputCheck`; its ``invalid`` rows carry their content.
    """
    partitions = max(1, min(MAX_PARTITIONS, -(-input_bytes // BYTES_PER_PARTITION)))
    duplicated = _duplicated_ids(dataset, id_field, partitions)
    checks = dataset.map_batches(
        _check_block,
        fn_kwargs={
            "fields": list(fields),
            "types": dict(field_types or {}),
            "id_field": id_field,
            "max_input_tokens": max_input_tokens,
            "duplicated": duplicated,
        },
        batch_size=None,
        batch_format="pyarrow",
    )
    check, offset = InputCheck(), 0
    invalid: list[tuple[int, str, str, bool, dict]] = []
    rows_of: dict[str, list[int]] = collections.defaultdict(list)  # duplicated ids only
    for batch in _in_input_order(checks):
        for block in batch.to_pylist():
            for found in block["invalid"]:
                row = offset + found["position"]
                invalid.append(
                    (row, found["example_id"], found["reason"], found["duplicate"], json.loads(found["example"]))
                )
                if found["duplicate"]:
                    rows_of[found["example_id"]].append(row)
            offset += block["rows"]
    check.rows = offset
    for row, ex_id, reason, duplicate, example in invalid:
        if duplicate:
            others = [r for r in rows_of[ex_id] if r != row]
            also = (
                f"duplicate example id (also row {', '.join(map(str, others[:3]))}{', …' if len(others) > 3 else ''})"
            )
            reason = f"{reason}; {also}" if reason else also
        check.invalid.append(InvalidRow(row, ex_id, reason, example))
    return check


def check_columns(columns: Sequence[str], fields: Sequence[str], uri: str) -> None:
    """Raise when the examples' columns lack a program input field.

    Raises:
        InputError: naming the missing fields, the columns found, and the URI.
    """
    missing = [f for f in fields if f not in columns]
    if missing:
        raise InputError(
            f"examples at {uri!r} lack the program's input field(s) {missing}: their columns are "
            f"{list(columns)}. Rename the columns, or pick the program that reads them.",
            uri=uri,
            missing=missing,
        )
