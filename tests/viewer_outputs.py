"""Rollout outputs for the viewer's tests, written by raydspy's own writers: `commit_rollouts` (the
pipeline's committer: ``part-<hash>.parquet`` files, exactly as a run commits them) with a run
manifest beside them, and `Collect` (``rollouts-*.parquet`` and a dataset card).

The rows are those of an orders-like program with two predictors, ``extract`` then ``confirm``;
rewards, errors and examples follow fixed rules so each test knows what a filter must return.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from raydspy.core.rollouts import RolloutRecord, records_to_table
from raydspy.core.stats import RolloutStats
from raydspy.core.storage import Location, StorageOptions, resolve
from raydspy.core.tracing import LMCall
from raydspy.pipeline.commits import commit_rollouts
from raydspy.pipeline.manifests import relative_name, write_manifest

PREDICTORS = ("extract", "confirm")
REWARDS = (0.0, 0.25, 0.5, 1.0, None)


def error_of(i: int) -> str | None:
    """Row ``i``'s error: several types, one of them a prefix of another (``Value``, ``ValueError``)."""
    if i % 7 == 3:
        return f"AdapterParseError: no city in completion {i}"
    if i % 11 == 5:
        return "Value: odd"
    if i % 17 == 8:
        return "ValueError: bad quantity"
    if i % 19 == 2:
        return "RewardError"
    return None


def cached(i: int) -> bool:
    """Whether row ``i``'s first LM call was answered from DSPy's cache (no usage reported)."""
    return i % 13 == 6


def record(i: int) -> RolloutRecord:
    """Rollout ``i``: example ``ex-{i // 2}``, rollout index ``i % 2``."""
    error, reward = error_of(i), REWARDS[i % len(REWARDS)]
    outputs = None if error else {"city": f"City{i}", "quantity": i, "item": "chairs", "reply": f"{i} chairs, sure."}
    trace = [
        LMCall(
            predictor="extract",
            signature="message -> city, quantity, item",
            messages=[{"role": "system", "content": "Extract the order."}, {"role": "user", "content": f"msg {i}"}],
            completion=f'{{"city": "City{i}", "quantity": {i}, "item": "chairs"}}',
            outputs=f'{{"city": "City{i}", "quantity": {i}, "item": "chairs"}}',
            format_ok=True,
            prompt_tokens=None if cached(i) else 40 + i,
            completion_tokens=None if cached(i) else 12,
            latency_s=0.002 if cached(i) else 0.25,
            cached=cached(i),
            model="teacher-x",
        ),
        LMCall(
            predictor="confirm",
            signature="city, quantity, item -> reply",
            messages=[{"role": "user", "content": f"confirm {i}"}],
            completion=f"<b>{i} chairs</b>, sure." if not error else "garbled",
            outputs=None if error else f'{{"reply": "{i} chairs, sure."}}',
            parse_error="AdapterParseError: no reply" if error else None,
            format_ok=not error,
            prompt_tokens=30,
            completion_tokens=7,
            latency_s=0.5,
            cached=False,
            model="teacher-x",
        ),
    ]
    return RolloutRecord(
        rollout_id=hashlib.sha256(f"rollout {i}".encode()).hexdigest()[:32],
        example_id=f"ex-{i // 2}",
        rollout_index=i % 2,
        inputs={"message": f"msg {i}", "city": f"City{i}", "quantity": i, "item": "chair"},
        outputs=outputs,
        trace=trace,
        reward=reward,
        rewards={} if reward is None else {"city_match": reward, "reply_mentions": 1.0 - reward},
        error=error,
        dry_run=False,
        program_hash="abc123",
        teacher="teacher-x",
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i),
    )


def write_parts(
    uri: str, rows: int, per_file: int, start: int = 0, storage: StorageOptions | None = None, manifest: bool = True
) -> Location:
    """Commit rows ``start`` … ``start + rows - 1`` under ``uri``, ``per_file`` to a part, and a run
    manifest of those parts."""
    location = resolve(uri, storage)
    files = {}
    for first in range(start, start + rows, per_file):
        table = records_to_table([record(i) for i in range(first, min(first + per_file, start + rows))])
        path = commit_rollouts(location, table)
        files[relative_name(location, path)] = RolloutStats.of(table)
    if manifest:
        write_manifest(location, files)
    return location
