"""Checking the examples before any LM call: every row, its position in the input, and why it
cannot be run.

A row is invalid when a program input field is null or an empty string, has a type the program's
signature cannot take (a list where it wants text, text where it wants an int), is longer than the
teacher's context allows, or shares its example id with another row (the rollouts of both would
get the same ids, so which one was meant is unknowable: every row of a duplicated id is invalid).

The check streams the dataset through the driver in input order (row numbers are 0-based
positions in the input, as a reader of the file counts them) and keeps only ids and the invalid
rows, so memory grows with the number of examples' ids, not their content.
"""

from __future__ import annotations

import collections
import math
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy
import pyarrow as pa
import ray.data

from raydspy.core.identity import example_id
from raydspy.errors import InputError

__all__ = ["check_columns", "InvalidRow", "InputCheck", "check_input", "input_field_types", "estimate_tokens"]

#: Characters per token for the length check: the usual rule of thumb for English with BPE
#: tokenizers (OpenAI, "What are tokens and how to count them"). An estimate, not a count.
CHARS_PER_TOKEN = 4


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
        example_ids: the id of every valid row, in input order.
        invalid: the invalid rows, in input order.
    """

    rows: int = 0
    example_ids: list[str] = field(default_factory=list)
    invalid: list[InvalidRow] = field(default_factory=list)

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


def _ordered_rows(dataset: ray.data.Dataset) -> Iterator[dict[str, Any]]:
    """The dataset's rows on the driver, in input order."""
    # The dataset's own context: a Dataset copies the current DataContext when it is read, so
    # setting the current one here would not reach this dataset's execution.
    context = dataset.context
    previous = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    try:
        for batch in dataset.iter_batches(batch_size=1024, batch_format="pyarrow"):
            yield from typing.cast(pa.Table, batch).to_pylist()
    finally:
        context.execution_options.preserve_order = previous


def check_input(
    dataset: ray.data.Dataset,
    fields: Sequence[str],
    *,
    field_types: Mapping[str, Any] | None = None,
    id_field: str | None = None,
    max_input_tokens: int | None = None,
) -> InputCheck:
    """Check every row of ``dataset`` against a program taking ``fields``.

    Args:
        dataset: the examples (executed here, on the driver, in input order).
        fields: the program's input fields (the columns are known to exist).
        field_types: annotation per field (`input_field_types`); text where absent.
        id_field: the id column, if any (else ids hash each row's content).
        max_input_tokens: reject rows whose estimated input tokens exceed this.

    Returns:
        The `InputCheck`; its ``invalid`` rows carry their content.
    """
    types = dict(field_types or {})
    check = InputCheck()
    rows_of: dict[str, list[int]] = collections.defaultdict(list)
    bad: dict[int, InvalidRow] = {}
    ids: list[str] = []
    for row, example in enumerate(_ordered_rows(dataset)):
        ex_id = example_id(example, id_field)
        ids.append(ex_id)
        rows_of[ex_id].append(row)
        problems = _row_problems(example, types, fields, max_input_tokens)
        if problems:
            bad[row] = InvalidRow(row, ex_id, "; ".join(problems), example)
    check.rows = len(ids)
    duplicated = {ex_id: rows for ex_id, rows in rows_of.items() if len(rows) > 1}
    if duplicated:
        # A second pass fetches the content of the duplicated rows only.
        wanted = {row for rows in duplicated.values() for row in rows}
        for row, example in enumerate(_ordered_rows(dataset)):
            if row in wanted:
                others = [r for r in duplicated[ids[row]] if r != row]
                reason = f"duplicate example id (also row {', '.join(map(str, others[:3]))}{', …' if len(others) > 3 else ''})"
                if row in bad:
                    reason = f"{bad[row].reason}; {reason}"
                bad[row] = InvalidRow(row, ids[row], reason, example)
    check.invalid = [bad[row] for row in sorted(bad)]
    check.example_ids = [ex_id for row, ex_id in enumerate(ids) if row not in bad]
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
