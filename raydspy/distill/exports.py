"""Rollouts → training sets, in the column layouts TRL's trainers read (conversational format).

Each export reads the *committed* rollout files under a URI (in this process when they are
small, `raydspy.distill.in_process`; with Ray Data otherwise, `read_rollouts`),
groups the rows by example (one shuffle; a rollout id committed twice is kept once), turns each
group into training rows, and writes them as Parquet under an output URI:

| export    | one row per                                   | columns (TRL's names first)                            |
| --------- | --------------------------------------------- | ------------------------------------------------------ |
| `to_sft`  | LM call of a kept rollout (rejection sampling)| ``messages`` (system, user, …, assistant), ``rollout_id``, ``example_id``, ``predictor``, ``reward`` |
| `to_dpo`  | example × predictor × prompt whose best and worst rollouts' rewards differ | ``prompt`` (messages), ``chosen`` / ``rejected`` (one assistant message each), ``chosen_reward``, ``rejected_reward``, ``chosen_rollout_id``, ``rejected_rollout_id``, ``example_id``, ``predictor`` |
| `to_grpo` | example × predictor × prompt                  | ``prompt`` (messages), ``inputs`` (the example as JSON: the gold label is there), one string column per name in ``columns``, ``example_id``, ``predictor``, ``call_index`` (the call's place in its rollout), ``replay`` (JSON list of the rollout's completions, null where none: `raydspy.distill.replay`) |
| `to_kd`   | LM call of a kept rollout whose tokens were recorded with top-k | SFT's columns, and the teacher's ``prompt_token_ids``, ``completion_token_ids``, ``completion_logprobs``, ``top_token_ids``, ``top_logprobs`` (offline distillation) |

Rollouts recorded with token-level traces (``raydspy collect --record-logprobs``) give the SFT and
GRPO rows three more columns, `TOKEN_COLUMNS`: the call's ``prompt_token_ids``,
``completion_token_ids`` and ``completion_logprobs``, as the teacher's tokenizer made them (so a
trainer need not tokenise the text again). They are null in rows whose rollout recorded none, and
an export of rollouts that recorded none has no such columns.

Beside the rows, each export writes its dataset card, ``README.md`` (`raydspy.distill.cards`).

Messages are the trace's own: exactly what the adapter sent (system, user, demos) and the raw
completion the teacher returned, so the student learns the program's format as the program will
prompt it. A message is ``{"role": str, "content": str}``.

Example (after ``ray.init()``):
    >>> to_sft("rollouts/banking77", "datasets/banking77-sft", min_reward=1.0)  # doctest: +SKIP
    ExportSummary(kind='sft', rows=212, ...)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from raydspy.core.cards import input_license, write_card
from raydspy.core.rollouts import ROLLOUT_SCHEMA, first_per_rollout_id
from raydspy.core.stats import ACCEPT_REWARD
from raydspy.core.storage import Location, StorageOptions, resolve
from raydspy.distill import in_process
from raydspy.distill.cards import export_card
from raydspy.distill.schemas import (
    DPO_SCHEMA,
    GRPO_RESERVED,
    KD_SCHEMA,
    MESSAGES,
    SFT_SCHEMA,
    TOKEN_FIELDS,
    grpo_schema,
    with_tokens,
)
from raydspy.distill.transforms import TOKEN_COLUMNS, dpo_rows, grpo_rows, kd_rows, sft_rows
from raydspy.errors import ConfigError, InputError, StorageError
from raydspy.pipeline.commits import committed_files

__all__ = [
    "MESSAGES",
    "SFT_SCHEMA",
    "DPO_SCHEMA",
    "KD_SCHEMA",
    "TOKEN_FIELDS",
    "grpo_schema",
    "ExportSummary",
    "read_rollouts",
    "needs_ray",
    "to_sft",
    "to_dpo",
    "to_grpo",
    "to_kd",
    "sft_rows",
    "dpo_rows",
    "grpo_rows",
    "kd_rows",
    "load_export",
]


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote.

    Attributes:
        kind: ``"sft"``, ``"dpo"``, ``"grpo"`` or ``"kd"``.
        rows: training rows written.
        rollouts: distinct rollouts read (duplicates of a committed rollout id counted once).
        output_uri: where the Parquet files are.
    """

    kind: str
    rows: int
    rollouts: int
    output_uri: str
    options: dict[str, Any] = field(default_factory=dict)


# -- Ray Data ---------------------------------------------------------------------------------


def read_rollouts(uri: str, storage: StorageOptions | None = None):
    """The committed rollouts under ``uri`` as a Ray Dataset of `ROLLOUT_SCHEMA` rows.

    Only committed part files are read (`raydspy.pipeline.commits.committed_files`: no temporaries, no
    ``_invalid/``); a rollout committed twice appears twice here, and the exports keep one.

    Raises:
        StorageError: ``uri`` cannot be listed, or holds no committed rollouts.
    """
    location = resolve(uri, storage)
    return _rollouts_dataset(location, _committed(location))


def _rollouts_dataset(location: Location, files: list[str]):
    import ray.data

    return ray.data.read_parquet(files, filesystem=location.filesystem, schema=ROLLOUT_SCHEMA)


def needs_ray(rollouts_uri: str, storage: StorageOptions | None = None) -> bool:
    """Whether an export of ``rollouts_uri`` runs on Ray Data (more than `in_process.MAX_BYTES`
    committed) rather than in this process: the CLI starts or joins Ray only then.

    Raises:
        StorageError: ``uri`` cannot be listed, or holds no committed rollouts.
    """
    location = resolve(rollouts_uri, storage)
    return not in_process.fits(location, _committed(location))


def _committed(location: Location) -> list[str]:
    files = committed_files(location)
    if not files:
        raise StorageError(
            f"no committed rollouts under {location.uri!r} (expected part-*.parquet files from `raydspy collect`)"
        )
    return files


def _per_example(
    batch: pa.Table, transform: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], schema: pa.Schema
) -> pa.Table:
    """``map_groups`` body: one example's rollout rows (Arrow) → its training rows (Arrow)."""
    return pa.Table.from_pylist(transform(first_per_rollout_id(batch)[0].to_pylist()), schema=schema)


def _present(batch: pa.Table, column: str) -> pa.Table:
    return pa.table({"present": [batch.num_rows - batch.column(column).null_count]})


def _drop_absent_tokens(out, schema: pa.Schema, optional: Sequence[str]):
    """``(out, schema)`` without the ``optional`` token columns when no row has them (rollouts
    recorded without tokens export as they did before token-level traces existed)."""
    if not optional or not out.count():
        return out, schema
    body = functools.partial(_present, column=optional[0])  # the columns come and go together
    if out.select_columns([optional[0]]).map_batches(body, batch_format="pyarrow").sum("present"):
        return out, schema
    return out.drop_columns(list(optional)), pa.schema([f for f in schema if f.name not in optional])


def _export(
    kind: str,
    rollouts_uri: str,
    output_uri: str,
    transform: Callable,
    schema: pa.Schema,
    storage: StorageOptions | None,
    options: dict[str, Any],
    optional: Sequence[str] = (),
    if_empty: str | None = None,
) -> ExportSummary:
    """Read, group by example, ``transform``, write; ``optional`` columns of ``schema`` are
    left out when every row has them null. With ``if_empty``, no rows raise `InputError` with
    that message, and nothing is written. Small inputs run in this process (`in_process`), the
    rest on Ray Data."""
    source = resolve(rollouts_uri, storage)
    files = _committed(source)
    body = functools.partial(_per_example, transform=transform, schema=schema)
    if in_process.fits(source, files):
        table, schema, rollouts = in_process.export_rows(source, files, body, schema, optional)
        rows, write = table.num_rows, functools.partial(in_process.write, table)
    else:
        ds = _rollouts_dataset(source, files)
        rollouts = len(ds.select_columns(["rollout_id"]).unique("rollout_id"))
        # Few partitions: an example's rollouts are a few KB, and Ray's default (200) would start
        # hundreds of shuffle tasks for a few thousand rows.
        partitions = max(1, min(16, len(files)))
        out = ds.groupby("example_id", num_partitions=partitions).map_groups(body, batch_format="pyarrow")
        out, schema = _drop_absent_tokens(out.materialize(), schema, optional)
        rows = out.count()

        def write(location: Location) -> None:
            out.write_parquet(location.path, filesystem=location.filesystem)

    if not rows and if_empty:
        raise InputError(if_empty, uri=rollouts_uri)
    location = resolve(output_uri, storage)
    _clear(location)
    if rows:
        write(location)
    summary = ExportSummary(kind, rows, rollouts, output_uri, options)
    license_ = input_license(source)  # what the rollouts' card declares
    card = export_card(
        kind,
        rows=rows,
        rollouts=summary.rollouts,
        rollouts_uri=rollouts_uri,
        options=options,
        schema=schema,
        license_=license_,
    )
    write_card(location, card)
    return summary


def _clear(location: Location) -> None:
    """Remove an earlier export's Parquet files, so the output holds only this export's rows."""
    try:
        for path in committed_files(location):
            location.filesystem.delete_file(path)
        location.filesystem.create_dir(location.path, recursive=True)
    except OSError as e:
        raise StorageError(f"cannot write to {location.uri!r}: {e}") from e


def to_sft(
    rollouts_uri: str,
    output_uri: str,
    *,
    min_reward: float = ACCEPT_REWARD,
    reward: str | None = None,
    storage: StorageOptions | None = None,
) -> ExportSummary:
    """Export the SFT set (rejection sampling): chat ``messages`` of each LM call of each rollout
    whose reward is at least ``min_reward``; see the module's table for the columns.

    Args:
        rollouts_uri: folder or prefix of a run's rollouts (local, s3://, gs://).
        output_uri: where the Parquet files go; earlier ``*.parquet`` files there are replaced.
        min_reward: the threshold on the rollout's reward (default `ACCEPT_REWARD`, 1.0: full marks only).
        reward: threshold this named reward (e.g. ``"exact_match"``) instead of the combined one.
        storage: S3-compatible endpoint options.

    Raises:
        StorageError: nothing committed under ``rollouts_uri``, or the output cannot be written.
    """
    transform = functools.partial(sft_rows, min_reward=min_reward, reward=reward)
    options = {"min_reward": min_reward, "reward": reward}
    schema = with_tokens(SFT_SCHEMA)
    return _export("sft", rollouts_uri, output_uri, transform, schema, storage, options, TOKEN_COLUMNS)


def to_kd(
    rollouts_uri: str,
    output_uri: str,
    *,
    min_reward: float = ACCEPT_REWARD,
    reward: str | None = None,
    storage: StorageOptions | None = None,
) -> ExportSummary:
    """Export the offline distillation set: the SFT rows (same filter) of calls recorded with the
    teacher's top-k alternatives (``raydspy collect --record-logprobs --top-logprobs K``), with
    the teacher's token ids, their logprobs and the alternatives (`KD_SCHEMA`): what a
    token-level distillation loss reads, for a student that shares the teacher's tokenizer.

    Raises:
        InputError: no kept call has top-k logprobs (says how to collect them).
        StorageError: nothing committed under ``rollouts_uri``, or the output cannot be written.
    """
    transform = functools.partial(kd_rows, min_reward=min_reward, reward=reward)
    options = {"min_reward": min_reward, "reward": reward}
    empty = (
        f"no LM call under {rollouts_uri!r} with the teacher's top-k logprobs among rollouts of reward >= "
        f"{min_reward}: collect with `--record-logprobs --top-logprobs K` (K > 0), or lower --min-reward"
    )
    return _export("kd", rollouts_uri, output_uri, transform, KD_SCHEMA, storage, options, if_empty=empty)


def to_dpo(
    rollouts_uri: str, output_uri: str, *, reward: str | None = None, storage: StorageOptions | None = None
) -> ExportSummary:
    """Export DPO pairs: ``prompt``, ``chosen``, ``rejected`` from the best and worst rollout of
    the same example and predictor, where their rewards differ (see `dpo_rows`).

    Raises:
        StorageError: nothing committed under ``rollouts_uri``, or the output cannot be written.
    """
    transform = functools.partial(dpo_rows, reward=reward)
    return _export("dpo", rollouts_uri, output_uri, transform, DPO_SCHEMA, storage, {"reward": reward})


def to_grpo(
    rollouts_uri: str, output_uri: str, *, columns: Sequence[str] = (), storage: StorageOptions | None = None
) -> ExportSummary:
    """Export GRPO prompts: ``prompt`` messages, ``inputs`` (the example as JSON) and each of
    ``columns`` (e.g. the gold label's field) as a string column for the reward functions.

    Raises:
        ConfigError: a name in ``columns`` is one of the export's own columns.
        StorageError: nothing committed under ``rollouts_uri``, or the output cannot be written.
    """
    columns = tuple(columns)
    clash = sorted(set(columns) & set(GRPO_RESERVED))
    if clash:
        raise ConfigError(f"columns {clash} clash with the GRPO export's own columns {list(GRPO_RESERVED)}")

    transform = functools.partial(grpo_rows, columns=columns)
    schema = with_tokens(grpo_schema(columns))
    return _export(
        "grpo", rollouts_uri, output_uri, transform, schema, storage, {"columns": list(columns)}, TOKEN_COLUMNS
    )


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
