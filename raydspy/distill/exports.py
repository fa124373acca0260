"""Rollouts → training sets, in the column layouts TRL's trainers read (conversational format).

Each export reads the *committed* rollout files under a URI with Ray Data (`read_rollouts`),
groups the rows by example (one shuffle; a rollout id committed twice is kept once), turns each
group into training rows, and writes them as Parquet under an output URI:

| export    | one row per                                   | columns (TRL's names first)                            |
| --------- | --------------------------------------------- | ------------------------------------------------------ |
| `to_sft`  | LM call of a kept rollout (rejection sampling)| ``messages`` (system, user, …, assistant), ``rollout_id``, ``example_id``, ``predictor``, ``reward`` |
| `to_dpo`  | example × predictor × prompt whose best and worst rollouts' rewards differ | ``prompt`` (messages), ``chosen`` / ``rejected`` (one assistant message each), ``chosen_reward``, ``rejected_reward``, ``chosen_rollout_id``, ``rejected_rollout_id``, ``example_id``, ``predictor`` |
| `to_grpo` | example × predictor × prompt                  | ``prompt`` (messages), ``inputs`` (the example as JSON: the gold label is there), one string column per name in ``columns``, ``example_id``, ``predictor``, ``call_index`` (the call's place in its rollout), ``replay`` (JSON list of the rollout's completions, null where none: `raydspy.distill.replay`) |

Messages are the trace's own: exactly what the adapter sent (system, user, demos) and the raw
completion the teacher returned, so the student learns the program's format as the program will
prompt it. A message is ``{"role": str, "content": str}``.

Example (after ``ray.init()``):
    >>> to_sft("rollouts/banking77", "datasets/banking77-sft", min_reward=1.0)  # doctest: +SKIP
    ExportSummary(kind='sft', rows=212, ...)
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pyarrow as pa

from raydspy.commits import committed_files
from raydspy.errors import ConfigError, InputError, StorageError
from raydspy.rollouts import ROLLOUT_SCHEMA
from raydspy.storage import Location, StorageOptions, resolve

__all__ = [
    "MESSAGES",
    "SFT_SCHEMA",
    "DPO_SCHEMA",
    "grpo_schema",
    "ExportSummary",
    "read_rollouts",
    "to_sft",
    "to_dpo",
    "to_grpo",
    "sft_rows",
    "dpo_rows",
    "grpo_rows",
    "load_export",
]

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

SFT_SCHEMA = pa.schema([
    ("messages", MESSAGES),
    ("rollout_id", pa.string()),
    ("example_id", pa.string()),
    ("predictor", pa.string()),
    ("reward", pa.float64()),
])

DPO_SCHEMA = pa.schema([
    ("prompt", MESSAGES),
    ("chosen", MESSAGES),
    ("rejected", MESSAGES),
    ("chosen_reward", pa.float64()),
    ("rejected_reward", pa.float64()),
    ("chosen_rollout_id", pa.string()),
    ("rejected_rollout_id", pa.string()),
    ("example_id", pa.string()),
    ("predictor", pa.string()),
])

#: Names the GRPO export uses itself; an input column cannot take them.
_GRPO_RESERVED = ("prompt", "inputs", "example_id", "predictor", "call_index", "replay", "completion", "completions",
                  "prompts")


def grpo_schema(columns: Sequence[str] = ()) -> pa.Schema:
    """The GRPO export's schema with extra string ``columns`` taken from each example's inputs."""
    return pa.schema([("prompt", MESSAGES), ("inputs", pa.string()), *((c, pa.string()) for c in columns),
                      ("example_id", pa.string()), ("predictor", pa.string()), ("call_index", pa.int32()),
                      ("replay", pa.string())])


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote.

    Attributes:
        kind: ``"sft"``, ``"dpo"`` or ``"grpo"``.
        rows: training rows written.
        rollouts: distinct rollouts read (duplicates of a committed rollout id counted once).
        output_uri: where the Parquet files are.
    """

    kind: str
    rows: int
    rollouts: int
    output_uri: str
    options: dict[str, Any] = field(default_factory=dict)


# -- the per-example transforms (pure functions on rollout rows as dicts) ---------------------


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per rollout id (the first), in rollout-index order."""
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen.setdefault(row["rollout_id"], row)
    return sorted(seen.values(), key=lambda r: (r["rollout_index"], r["rollout_id"]))


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


def sft_rows(rows: list[dict[str, Any]], *, min_reward: float = 1.0, reward: str | None = None) -> list[dict[str, Any]]:
    """SFT rows of one example's rollouts: every parsed LM call of each rollout that did not fail
    and whose reward (the combined one, or the named ``reward``) is at least ``min_reward``."""
    out = []
    for row in _dedupe(rows):
        score = _score(row, reward)
        if row["error"] is not None or not _answered(row) or score is None or score < min_reward:
            continue
        for call in row["trace"]:
            if call["completion"] is None or not call["format_ok"]:
                continue
            out.append({
                "messages": _messages(call) + [{"role": "assistant", "content": call["completion"]}],
                "rollout_id": row["rollout_id"],
                "example_id": row["example_id"],
                "predictor": call["predictor"],
                "reward": score,
            })
    return out


def dpo_rows(rows: list[dict[str, Any]], *, reward: str | None = None) -> list[dict[str, Any]]:
    """DPO pairs of one example's rollouts: for each predictor and prompt, the completion of the
    best-rewarded rollout (chosen) against that of the worst (rejected), when they differ.

    Failed rollouts take part (their reward is 0 and their completion is what failed), which
    teaches the format; rollouts without a reward, or calls with no completion, do not. Ties go
    to the lower rollout index, so the same rollouts give the same pairs.
    """
    candidates: dict[tuple[str, str], list[tuple[float, int, dict[str, Any], dict[str, Any]]]] = {}
    for row in _dedupe(rows):
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
        out.append({
            "prompt": _messages(best[3]),
            "chosen": [{"role": "assistant", "content": best[3]["completion"]}],
            "rejected": [{"role": "assistant", "content": worst[3]["completion"]}],
            "chosen_reward": best[0],
            "rejected_reward": worst[0],
            "chosen_rollout_id": best[2]["rollout_id"],
            "rejected_rollout_id": worst[2]["rollout_id"],
            "example_id": best[2]["example_id"],
            "predictor": predictor,
        })
    return out


def grpo_rows(rows: list[dict[str, Any]], *, columns: Sequence[str] = ()) -> list[dict[str, Any]]:
    """GRPO prompts of one example: one row per predictor and distinct prompt (the trainer samples
    the completions), with the example's inputs as JSON, the named ``columns`` as strings, and
    what replaying the rollout needs (``call_index``, ``replay``). Dry-run rows count: their
    first call's prompt is recorded, with no completion. A call followed by one that did not
    parse is left out: its rollout cannot be replayed to the program's outputs."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in _dedupe(rows):
        inputs = json.loads(row["inputs"])
        trace = row["trace"] or []
        replay = json.dumps([call["completion"] for call in trace], ensure_ascii=False)
        for index, call in enumerate(trace):
            key = _prompt_key(call)
            # A prompt whose later calls failed cannot be replayed to the program's outputs.
            if key in out or any(not later["format_ok"] for later in trace[index + 1:]):
                continue
            extra = {}
            for name in columns:
                value = inputs.get(name)
                extra[name] = value if value is None or isinstance(value, str) else json.dumps(value)
            out[key] = {"prompt": _messages(call), "inputs": row["inputs"], **extra,
                        "example_id": row["example_id"], "predictor": call["predictor"], "call_index": index,
                        "replay": replay}
    return [out[k] for k in sorted(out)]


# -- Ray Data ---------------------------------------------------------------------------------


def read_rollouts(uri: str, storage: StorageOptions | None = None):
    """The committed rollouts under ``uri`` as a Ray Dataset of `ROLLOUT_SCHEMA` rows.

    Only committed part files are read (`raydspy.commits.committed_files`: no temporaries, no
    ``_invalid/``); a rollout committed twice appears twice here, and the exports keep one.

    Raises:
        StorageError: ``uri`` cannot be listed, or holds no committed rollouts.
    """
    import ray.data

    location = resolve(uri, storage)
    files = committed_files(location)
    if not files:
        raise StorageError(f"no committed rollouts under {uri!r} (expected part-*.parquet files from `raydspy collect`)")
    return ray.data.read_parquet(files, filesystem=location.filesystem, schema=ROLLOUT_SCHEMA)


def _per_example(batch: pa.Table, transform: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
                 schema: pa.Schema) -> pa.Table:
    """``map_groups`` body: one example's rollout rows (Arrow) → its training rows (Arrow)."""
    return pa.Table.from_pylist(transform(batch.to_pylist()), schema=schema)


def _export(kind: str, rollouts_uri: str, output_uri: str, transform: Callable, schema: pa.Schema,
            storage: StorageOptions | None, options: dict[str, Any]) -> ExportSummary:
    ds = read_rollouts(rollouts_uri, storage)
    rollouts = ds.select_columns(["rollout_id"]).unique("rollout_id")
    # Few partitions: an example's rollouts are a few KB, and Ray's default (200) would start
    # hundreds of shuffle tasks for a few thousand rows.
    partitions = max(1, min(16, len(ds.input_files())))
    body = functools.partial(_per_example, transform=transform, schema=schema)
    out = ds.groupby("example_id", num_partitions=partitions).map_groups(body, batch_format="pyarrow").materialize()
    rows = out.count()
    location = resolve(output_uri, storage)
    _clear(location)
    if rows:
        out.write_parquet(location.path, filesystem=location.filesystem)
    return ExportSummary(kind, rows, len(rollouts), output_uri, options)


def _clear(location: Location) -> None:
    """Remove an earlier export's Parquet files, so the output holds only this export's rows."""
    try:
        for path in committed_files(location):
            location.filesystem.delete_file(path)
        location.filesystem.create_dir(location.path, recursive=True)
    except OSError as e:
        raise StorageError(f"cannot write to {location.uri!r}: {e}") from e


def to_sft(rollouts_uri: str, output_uri: str, *, min_reward: float = 1.0, reward: str | None = None,
           storage: StorageOptions | None = None) -> ExportSummary:
    """Export the SFT set (rejection sampling): chat ``messages`` of each LM call of each rollout
    whose reward is at least ``min_reward``; see the module's table for the columns.

    Args:
        rollouts_uri: folder or prefix of a run's rollouts (local, s3://, gs://).
        output_uri: where the Parquet files go; earlier ``*.parquet`` files there are replaced.
        min_reward: the threshold on the rollout's reward (default 1.0: full marks only).
        reward: threshold this named reward (e.g. ``"exact_match"``) instead of the combined one.
        storage: S3-compatible endpoint options.

    Raises:
        StorageError: nothing committed under ``rollouts_uri``, or the output cannot be written.
    """
    transform = functools.partial(sft_rows, min_reward=min_reward, reward=reward)
    return _export("sft", rollouts_uri, output_uri, transform, SFT_SCHEMA, storage,
                   {"min_reward": min_reward, "reward": reward})


def to_dpo(rollouts_uri: str, output_uri: str, *, reward: str | None = None,
           storage: StorageOptions | None = None) -> ExportSummary:
    """Export DPO pairs: ``prompt``, ``chosen``, ``rejected`` from the best and worst rollout of
    the same example and predictor, where their rewards differ (see `dpo_rows`).

    Raises:
        StorageError: nothing committed under ``rollouts_uri``, or the output cannot be written.
    """
    transform = functools.partial(dpo_rows, reward=reward)
    return _export("dpo", rollouts_uri, output_uri, transform, DPO_SCHEMA, storage, {"reward": reward})


def to_grpo(rollouts_uri: str, output_uri: str, *, columns: Sequence[str] = (),
            storage: StorageOptions | None = None) -> ExportSummary:
    """Export GRPO prompts: ``prompt`` messages, ``inputs`` (the example as JSON) and each of
    ``columns`` (e.g. the gold label's field) as a string column for the reward functions.

    Raises:
        ConfigError: a name in ``columns`` is one of the export's own columns.
        StorageError: nothing committed under ``rollouts_uri``, or the output cannot be written.
    """
    columns = tuple(columns)
    clash = sorted(set(columns) & set(_GRPO_RESERVED))
    if clash:
        raise ConfigError(f"columns {clash} clash with the GRPO export's own columns {list(_GRPO_RESERVED)}")

    transform = functools.partial(grpo_rows, columns=columns)
    return _export("grpo", rollouts_uri, output_uri, transform, grpo_schema(columns), storage, {"columns": list(columns)})


def load_export(uri: str, storage: StorageOptions | None = None):
    """An export's rows as a Hugging Face ``datasets.Dataset`` (what TRL's trainers take).

    Raises:
        InputError: no Parquet files under ``uri``.
        StorageError: they cannot be read.
    """
    import datasets
    import pyarrow.dataset as pads

    location = resolve(uri, storage)
    files = committed_files(location)
    if not files:
        raise InputError(f"no training rows under {uri!r}: run `raydspy export` first", uri=uri)
    try:
        table = pads.dataset(files, filesystem=location.filesystem, format="parquet").to_table()
    except OSError as e:
        raise StorageError(f"cannot read {uri!r}: {e}") from e
    return datasets.Dataset(table)
