"""The rollout row: one Arrow schema that every writer and reader of rollouts uses.

One row per example × rollout index. The program-specific parts (``inputs``, ``outputs``, and
each traced call's parsed ``outputs``) are JSON text, so every program shares this one schema and
a run's files can be read together whatever the program was.

| column          | type                      | meaning                                                   |
| --------------- | ------------------------- | --------------------------------------------------------- |
| rollout_id      | string                    | hash of (program, example, rollout index, teacher, sampling) |
| example_id      | string                    | the id column of the input, or a hash of its content       |
| rollout_index   | int32                     | 0 … n-1                                                    |
| inputs          | string (JSON object)      | the example's fields (program inputs and labels)           |
| outputs         | string (JSON object)/null | the program's output fields; null when the rollout failed  |
| trace           | list<struct>              | one item per LM call, see `raydspy.core.tracing.LMCall`         |
| trace_tokens    | list<struct> / null       | token ids and logprobs of each LM call (`TRACE_TOKENS_ITEM`); null unless recorded |
| reward          | double / null             | combined reward; null without rewards or if one raised     |
| rewards         | map<string, double>       | each named reward                                          |
| format_ok       | bool / null               | every LM call parsed (null in a dry run: nothing to parse) |
| error           | string / null             | ``"Type: message"`` of what failed, else null             |
| dry_run         | bool                      | prompts formatted, no LM called                            |
| program_hash    | string                    | hash of signatures, instructions, demos, adapter           |
| teacher         | string                    | the teacher's model name                                   |
| created_at      | timestamp[us, UTC]        | when the rollout finished                                  |
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from raydspy.core.tracing import LMCall

__all__ = [
    "ROLLOUT_SCHEMA",
    "TRACE_ITEM",
    "TRACE_TOKENS_ITEM",
    "RolloutRecord",
    "records_to_table",
    "first_per_rollout_id",
]

TRACE_ITEM = pa.struct(
    [
        ("predictor", pa.string()),
        ("signature", pa.string()),
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("completion", pa.string()),
        ("outputs", pa.string()),
        ("parse_error", pa.string()),
        ("format_ok", pa.bool_()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_s", pa.float64()),
        ("cached", pa.bool_()),
        ("model", pa.string()),
        ("error", pa.string()),
    ]
)

#: One LM call's tokens (`raydspy.core.token_traces.TokenTrace`): item i of ``trace_tokens``
#: belongs to item i of ``trace``; an item is null when its call returned no token data (it failed).
#: Lengths: ``completion_token_ids``, ``completion_logprobs``, ``top_*`` all ``[completion_len]``;
#: each ``top_*`` item ``[K]``, most likely first (null unless ``--top-logprobs K``).
TRACE_TOKENS_ITEM = pa.struct(
    [
        ("prompt_token_ids", pa.list_(pa.int32())),
        ("completion_token_ids", pa.list_(pa.int32())),
        ("completion_logprobs", pa.list_(pa.float32())),
        ("top_token_ids", pa.list_(pa.list_(pa.int32()))),
        ("top_logprobs", pa.list_(pa.list_(pa.float32()))),
    ]
)

# Token data is a column of its own, after `trace`, rather than nullable fields inside TRACE_ITEM:
# - off (the default), it is one null per row: nothing to store, and the trace items and their
#   Parquet leaf columns are those of earlier versions;
# - on, it is most of a row's bytes (8 + 8K bytes per completion token with K alternatives, before
#   compression, against about 4 bytes of its text); a reader that wants the trace and not the
#   tokens (a preview, a viewer, a text export) leaves a column out by naming the others, while
#   fields inside the trace's struct come with it;
# - files written before it lack a top-level column, which pyarrow's datasets, Ray Data and
#   `datasets` read as null given this schema (tests/test_token_traces.py), so old outputs still
#   read, resume and export, and a resumed run may mix rows with and without tokens.
ROLLOUT_SCHEMA = pa.schema(
    [
        ("rollout_id", pa.string()),
        ("example_id", pa.string()),
        ("rollout_index", pa.int32()),
        ("inputs", pa.string()),
        ("outputs", pa.string()),
        ("trace", pa.list_(TRACE_ITEM)),
        ("trace_tokens", pa.list_(TRACE_TOKENS_ITEM)),
        ("reward", pa.float64()),
        ("rewards", pa.map_(pa.string(), pa.float64())),
        ("format_ok", pa.bool_()),
        ("error", pa.string()),
        ("dry_run", pa.bool_()),
        ("program_hash", pa.string()),
        ("teacher", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass
class RolloutRecord:
    """One rollout, as produced by the runner; `to_row` gives its `ROLLOUT_SCHEMA` row."""

    rollout_id: str
    example_id: str
    rollout_index: int
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    trace: list[LMCall]
    reward: float | None
    rewards: dict[str, float]
    error: str | None
    dry_run: bool
    program_hash: str
    teacher: str
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def format_ok(self) -> bool | None:
        if self.dry_run or not self.trace:
            return None
        return all(call.format_ok for call in self.trace)

    @property
    def trace_tokens(self) -> list[dict[str, Any] | None] | None:
        """The ``trace_tokens`` item of each call, or None when no call recorded tokens."""
        if not any(call.tokens is not None for call in self.trace):
            return None
        return [None if call.tokens is None else call.tokens.to_dict() for call in self.trace]

    def to_row(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "example_id": self.example_id,
            "rollout_index": self.rollout_index,
            "inputs": json.dumps(self.inputs, default=str, ensure_ascii=False),
            "outputs": None if self.outputs is None else json.dumps(self.outputs, default=str, ensure_ascii=False),
            "trace": [call.to_dict() for call in self.trace],
            "trace_tokens": self.trace_tokens,
            "reward": self.reward,
            "rewards": list(self.rewards.items()),
            "format_ok": self.format_ok,
            "error": self.error,
            "dry_run": self.dry_run,
            "program_hash": self.program_hash,
            "teacher": self.teacher,
            "created_at": self.created_at,
        }


def records_to_table(records: list[RolloutRecord]) -> pa.Table:
    """Rows of ``records`` as a table of `ROLLOUT_SCHEMA` (an empty list gives an empty table)."""
    return pa.Table.from_pylist([r.to_row() for r in records], schema=ROLLOUT_SCHEMA)


def first_per_rollout_id(table: pa.Table, seen: set[str] | None = None) -> tuple[pa.Table, int]:
    """The one rule for a rollout id found more than once (a commit Ray retried under another
    name, a killed driver's late worker): the first row is kept, in ``table`` order.

    Args:
        table: rollout rows (any columns, ``rollout_id`` among them).
        seen: ids kept from earlier tables, left out of this one; updated with this table's ids,
            so one set read over many part files dedupes across them.

    Returns:
        ``(rows kept, rows dropped)``.
    """
    seen = set() if seen is None else seen
    keep = []
    for i, rid in enumerate(table.column("rollout_id").to_pylist()):
        if rid not in seen:
            seen.add(rid)
            keep.append(i)
    dropped = table.num_rows - len(keep)
    return (table if not dropped else table.take(pa.array(keep, pa.int64()))), dropped
