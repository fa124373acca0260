"""Content-derived ids: the same program, example, rollout index and teacher always name the same
rollout, so a run can be resumed and two runs compared (the idea of curator's run cache).

All hashes are SHA-256 over canonical JSON (sorted keys, no whitespace), hex-encoded and cut to
the lengths below: 16 hex digits (64 bits) for examples and programs, 32 (128 bits) for rollouts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import dspy

__all__ = ["canonical_json", "example_id", "program_hash", "rollout_id", "rollout_seed"]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces; values JSON cannot encode fall back to ``str``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _digest(value: Any, length: int) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:length]


def example_id(example: Mapping[str, Any], id_field: str | None = None) -> str:
    """The id of an example: its ``id_field`` value when it has one, else a hash of all its fields.

    Args:
        example: the example's fields (inputs and any labels).
        id_field: name of an id column; ignored when None or absent from ``example``.

    Returns:
        The id column's value as a string, or 16 hex digits of SHA-256 of the canonical JSON.
    """
    if id_field and example.get(id_field) is not None:
        return str(example[id_field])
    return _digest(dict(example), 16)


def program_hash(program: dspy.Module, adapter: dspy.Adapter | None = None) -> str:
    """A hash of what the program sends: each predictor's name, signature, instructions and demos,
    and the adapter that formats them. Changing any of these changes every rollout id.

    Returns:
        16 hex digits.
    """
    parts = []
    for name, predictor in program.named_predictors():
        signature = predictor.signature
        parts.append(
            {
                "name": name,
                "signature": signature.signature,
                "instructions": signature.instructions,
                "types": {k: str(v.annotation) for k, v in signature.fields.items()},
                "demos": [dict(d) for d in predictor.demos],
            }
        )
    adapter_name = type(adapter).__name__ if adapter else None
    bound = getattr(adapter, "max_text_chars", None)
    if bound is not None:  # only when set, so ids of runs without a bound stay what they were
        adapter_name = f"{adapter_name}(max_text_chars={bound})"
    return _digest({"predictors": parts, "adapter": adapter_name}, 16)


def rollout_id(
    program_hash: str, example_id: str, rollout_index: int, teacher: str, sampling: Mapping[str, Any]
) -> str:
    """The deterministic id of one rollout (DESIGN.md, "The rollout row").

    Args:
        program_hash: from `program_hash`.
        example_id: from `example_id`.
        rollout_index: 0 … n-1.
        teacher: the teacher's model name.
        sampling: the sampling parameters sent with every call (temperature, max_tokens, ...).

    Returns:
        32 hex digits.
    """
    return _digest([program_hash, example_id, rollout_index, teacher, dict(sampling)], 32)


def rollout_seed(rollout_id_: str) -> int:
    """The sampling seed of one rollout when the run is seeded: the first 31 bits of its id.

    The id already hashes the run's base seed (it is part of ``sampling``), the program, the
    example and the rollout index, so every rollout of a seeded run gets its own seed, and the
    same rollout gets the same seed in every run of the same job: a teacher that honours OpenAI's
    ``seed`` (vLLM does, per request) then samples the same completion again, up to numerics.

    Args:
        rollout_id_: from `rollout_id` (hex digits).

    Returns:
        An int in ``[0, 2**31)``, within every server's range for ``seed``.
    """
    return int(rollout_id_[:8], 16) >> 1
