"""The per-example transforms of the exports: one example's rollout rows (dicts) in, its training
rows out. Pure functions, so each is tested on rows without Ray; `raydspy.distill.exports` maps
them over the examples with Ray Data.

Rollouts recorded with token-level traces (``trace_tokens``) give their SFT, GRPO and KD rows the
call's tokens too (`TOKEN_COLUMNS`, `KD_COLUMNS`); a row of a rollout without them leaves those
keys out (its columns are null in the export)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

__all__ = ["TOKEN_COLUMNS", "KD_COLUMNS", "sft_rows", "dpo_rows", "grpo_rows", "kd_rows"]

#: The token fields an SFT or GRPO row takes from its call's ``trace_tokens`` item.
TOKEN_COLUMNS = ("prompt_token_ids", "completion_token_ids", "completion_logprobs")

#: The token fields a KD row takes: those and the teacher's top-k alternatives.
KD_COLUMNS = (*TOKEN_COLUMNS, "top_token_ids", "top_logprobs")


def _in_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One example's rollouts in rollout-index order (each id once: `_per_example` dedupes)."""
    return sorted(rows, key=lambda r: (r["rollout_index"], r["rollout_id"]))


def _messages(call: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"] or ""} for m in call["messages"] or []]


def _score(row: dict[str, Any], reward: str | None) -> float | None:
    if reward is None:
        return row["reward"]
    # Arrow maps come back as lists of (key, value) pairs.
    return dict(row["rewards"] or []).get(reward)


def _prompt_key(call: dict[str, Any]) -> tuple[str, str]:
    digest = hashlib.sha256(json.dumps(_messages(call), ensure_ascii=False).encode("utf-8")).hexdigest()
    return call["predictor"] or "", digest


def _answered(row: dict[str, Any]) -> bool:
    return not row["dry_run"] and bool(row["trace"])


def _tokens(row: dict[str, Any], index: int, columns: Sequence[str] = TOKEN_COLUMNS) -> dict[str, Any]:
    """``columns`` of the ``trace_tokens`` item of call ``index``, or ``{}`` when the rollout
    recorded none (rows written before the column existed lack the key)."""
    items = row.get("trace_tokens")
    item = items[index] if items and index < len(items) else None
    return {} if item is None else {c: item[c] for c in columns}


def _kept_calls(
    rows: list[dict[str, Any]], min_reward: float, reward: str | None, columns: Sequence[str]
) -> list[dict[str, Any]]:
    out = []
    for row in _in_order(rows):
        score = _score(row, reward)
        if row["error"] is not None or not _answered(row) or score is None or score < min_reward:
            continue
        for index, call in enumerate(row["trace"]):
            if call["completion"] is None or not call["format_ok"]:
                continue
            out.append(
                {
                    "messages": _messages(call) + [{"role": "assistant", "content": call["completion"]}],
                    "rollout_id": row["rollout_id"],
                    "example_id": row["example_id"],
                    "predictor": call["predictor"],
                    "reward": score,
                    **_tokens(row, index, columns),
                }
            )
    return out


def sft_rows(rows: list[dict[str, Any]], *, min_reward: float = 1.0, reward: str | None = None) -> list[dict[str, Any]]:
    """SFT rows of one example's rollouts: every parsed LM call of each rollout that did not fail
    and whose reward (the combined one, or the named ``reward``) is at least ``min_reward``;
    with the call's `TOKEN_COLUMNS` when its rollout recorded them."""
    return _kept_calls(rows, min_reward, reward, TOKEN_COLUMNS)


def kd_rows(rows: list[dict[str, Any]], *, min_reward: float = 1.0, reward: str | None = None) -> list[dict[str, Any]]:
    """Offline distillation rows of one example's rollouts: the calls `sft_rows` keeps whose
    tokens were recorded with the teacher's top-k alternatives (``--top-logprobs K``), with all
    of `KD_COLUMNS`; calls recorded without them are left out."""
    return [r for r in _kept_calls(rows, min_reward, reward, KD_COLUMNS) if r.get("top_token_ids") is not None]


def dpo_rows(rows: list[dict[str, Any]], *, reward: str | None = None) -> list[dict[str, Any]]:
    """DPO pairs of one example's rollouts: for each predictor and prompt, the completion of the
    best-rewarded rollout (chosen) against that of the worst (rejected), when they differ.

    Failed rollouts take part (their reward is 0 and their completion is what failed), which
    teaches the format; rollouts without a reward, or calls with no completion, do not. Ties go
    to the lower rollout index, so the same rollouts give the same pairs.
    """
    candidates: dict[tuple[str, str], list[tuple[float, int, dict[str, Any], dict[str, Any]]]] = {}
    for row in _in_order(rows):
        score = _score(row, reward)
        if score is None or not _answered(row):
            continue
        for call in row["trace"]:
            if call["completion"] is None:
                continue
            candidates.setdefault(_prompt_key(call), []).append((score, row["rollout_index"], row, call))
    out = []
    for (predictor, _), group in sorted(candidates.items()):
        best = max(group, key=lambda g: (g[0], -g[1]))
        worst = min(group, key=lambda g: (g[0], g[1]))
        if best[0] <= worst[0]:
            continue
        out.append(
            {
                "prompt": _messages(best[3]),
                "chosen": [{"role": "assistant", "content": best[3]["completion"]}],
                "rejected": [{"role": "assistant", "content": worst[3]["completion"]}],
                "chosen_reward": best[0],
                "rejected_reward": worst[0],
                "chosen_rollout_id": best[2]["rollout_id"],
                "rejected_rollout_id": worst[2]["rollout_id"],
                "example_id": best[2]["example_id"],
                "predictor": predictor,
            }
        )
    return out


def grpo_rows(rows: list[dict[str, Any]], *, columns: Sequence[str] = ()) -> list[dict[str, Any]]:
    """GRPO prompts of one example: one row per predictor and distinct prompt (the trainer samples
    the completions), with the example's inputs as JSON, the named ``columns`` as strings, and
    what replaying the rollout needs (``call_index``, ``replay``), and the call's
    `TOKEN_COLUMNS` when its rollout recorded them (the prompt's tokens, and the teacher's
    completion that ``replay`` holds). Dry-run rows count: their first call's prompt is recorded,
    with no completion. A call followed by one that did not parse is left out: its rollout cannot
    be replayed to the program's outputs."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in _in_order(rows):
        inputs = json.loads(row["inputs"])
        trace = row["trace"] or []
        replay = json.dumps([call["completion"] for call in trace], ensure_ascii=False)
        for index, call in enumerate(trace):
            key = _prompt_key(call)
            # A prompt whose later calls failed cannot be replayed to the program's outputs.
            if key in out or any(not later["format_ok"] for later in trace[index + 1 :]):
                continue
            extra = {}
            for name in columns:
                value = inputs.get(name)
                extra[name] = value if value is None or isinstance(value, str) else json.dumps(value)
            out[key] = {
                "prompt": _messages(call),
                "inputs": row["inputs"],
                **extra,
                "example_id": row["example_id"],
                "predictor": call["predictor"],
                "call_index": index,
                "replay": replay,
                **_tokens(row, index),
            }
    return [out[k] for k in sorted(out)]
