"""The Arrow schemas of the exports' rows (`raydspy.distill.exports`), in TRL's column names.

The token columns come from the rollouts' ``trace_tokens`` (`raydspy.core.rollouts.TRACE_TOKENS_ITEM`):
optional in the SFT and GRPO layouts (`with_tokens`), the point of the KD layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from raydspy.core.rollouts import TRACE_TOKENS_ITEM
from raydspy.distill.transforms import KD_COLUMNS, TOKEN_COLUMNS

__all__ = [
    "MESSAGES",
    "SFT_SCHEMA",
    "DPO_SCHEMA",
    "KD_SCHEMA",
    "TOKEN_FIELDS",
    "GRPO_RESERVED",
    "grpo_schema",
    "with_tokens",
]

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

#: The Arrow types of the token columns (those of `raydspy.core.rollouts.TRACE_TOKENS_ITEM`).
TOKEN_FIELDS = {f.name: f for f in TRACE_TOKENS_ITEM}

SFT_SCHEMA = pa.schema(
    [
        ("messages", MESSAGES),
        ("rollout_id", pa.string()),
        ("example_id", pa.string()),
        ("predictor", pa.string()),
        ("reward", pa.float64()),
    ]
)

#: SFT's columns and every token column (`to_kd`).
KD_SCHEMA = pa.schema([*SFT_SCHEMA, *(TOKEN_FIELDS[c] for c in KD_COLUMNS)])

DPO_SCHEMA = pa.schema(
    [
        ("prompt", MESSAGES),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
        ("chosen_reward", pa.float64()),
        ("rejected_reward", pa.float64()),
        ("chosen_rollout_id", pa.string()),
        ("rejected_rollout_id", pa.string()),
        ("example_id", pa.string()),
        ("predictor", pa.string()),
    ]
)

#: Names the GRPO export uses itself; an input column cannot take them.
GRPO_RESERVED = (
    "prompt",
    "inputs",
    "example_id",
    "predictor",
    "call_index",
    "replay",
    "completion",
    "completions",
    "prompts",
    *TOKEN_COLUMNS,
)


def grpo_schema(columns: Sequence[str] = ()) -> pa.Schema:
    """The GRPO export's schema with extra string ``columns`` taken from each example's inputs."""
    return pa.schema(
        [
            ("prompt", MESSAGES),
            ("inputs", pa.string()),
            *((c, pa.string()) for c in columns),
            ("example_id", pa.string()),
            ("predictor", pa.string()),
            ("call_index", pa.int32()),
            ("replay", pa.string()),
        ]
    )


def with_tokens(schema: pa.Schema) -> pa.Schema:
    """``schema`` and the optional `TOKEN_COLUMNS` (the SFT and GRPO layouts)."""
    return pa.schema([*schema, *(TOKEN_FIELDS[c] for c in TOKEN_COLUMNS)])
