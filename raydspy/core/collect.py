"""`Collect`: the seed's API. Run a DSPy program n times per example and keep every rollout.

    >>> collect = Collect(dspy.ChainOfThought("question -> answer"), "rollouts/",
    ...                   reward_fn=lambda inputs, outputs: float(outputs["answer"] == inputs["gold"]))
    >>> predictions = collect.collect([{"question": "2+2?", "gold": "4"}], n=4)

This is the single-process path (a thread pool); `raydspy.pipeline.driver` runs the same rollouts on a
Ray cluster. Both use `raydspy.core.runner.RolloutRunner`, so their rows are the same.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import dspy
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raydspy.core.cards import write_card
from raydspy.core.rewards import RewardSet
from raydspy.core.rollout_card import rollouts_card, token_column_loads
from raydspy.core.rollouts import RolloutRecord, records_to_table
from raydspy.core.runner import RolloutRunner
from raydspy.core.stats import RolloutStats
from raydspy.core.storage import StorageOptions, check_writable, resolve, write_atomic
from raydspy.core.token_traces import token_request
from raydspy.errors import ConfigError, InputError

__all__ = ["Collect"]

#: The name of every file `Collect` writes starts so (its dataset card's config reads them).
_FILE_PREFIX = "rollouts-"

Examples = Sequence[Mapping[str, Any] | dspy.Example] | Mapping[str, Any] | dspy.Example


class Collect(dspy.Module):
    """Collect rollouts of ``predictor`` (any DSPy program) and write them to ``output_dir``.

    Args:
        predictor: the program to roll out: a ``dspy.Predict``, ``ChainOfThought``, ``ReAct`` or
            any ``dspy.Module``.
        output_dir: folder or URI (local path, ``s3://``, ``gs://``) that receives one file of
            rollout rows (`raydspy.core.rollouts.ROLLOUT_SCHEMA`) per `collect` call, and, for
            Parquet, the dataset card of all of them, ``README.md`` (`raydspy.core.rollout_card`).
        reward_fn: ``reward_fn(inputs, outputs) -> float``, or ``{name: reward_fn}``; ``inputs``
            holds all the example's fields (so a gold label is there), ``outputs`` the program's
            output fields.
        num_threads: rollouts in flight at once (each waits on the LM most of the time).
        lm: the teacher; None uses the LM configured in DSPy.
        adapter: adapter for every predictor; None uses DSPy's configured one.
        sampling: request parameters for every call, e.g. ``{"temperature": 1.0}``.
        reward_weights: ``{name: weight}`` for combining named rewards (default: the mean).
        output_format: ``"parquet"`` (default) or ``"jsonl"``.
        storage: endpoint options for S3-compatible stores.
        record_logprobs: also record each LM call's prompt and completion token ids and the
            completion's logprobs (the rows' ``trace_tokens``; the teacher must be vLLM).
        top_logprobs: with ``record_logprobs``, the K most likely tokens at each completion
            position too (0 … 19; `raydspy.core.token_traces.TokenRequest`).

    Raises:
        ConfigError: bad ``num_threads``, ``output_format`` or ``top_logprobs``, or an uncallable
            reward.
        StorageError: ``output_dir`` cannot be written.
    """

    def __init__(
        self,
        predictor: dspy.Module,
        output_dir: str,
        reward_fn: Callable | Mapping[str, Callable] | None = None,
        num_threads: int = 8,
        *,
        lm: dspy.BaseLM | None = None,
        adapter: dspy.Adapter | None = None,
        sampling: Mapping[str, Any] | None = None,
        reward_weights: Mapping[str, float] | None = None,
        output_format: Literal["parquet", "jsonl"] = "parquet",
        storage: StorageOptions | None = None,
        record_logprobs: bool = False,
        top_logprobs: int = 0,
    ):
        super().__init__()
        if num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1, got {num_threads}")
        if output_format not in ("parquet", "jsonl"):
            raise ConfigError(f"output_format must be 'parquet' or 'jsonl', got {output_format!r}")
        self.predictor = predictor
        self.output_dir = output_dir
        self.rewards = RewardSet(reward_fn, reward_weights)
        self.num_threads = num_threads
        self.lm = lm
        self.adapter = adapter
        self.sampling = dict(sampling or {})
        self.tokens = token_request(record_logprobs, top_logprobs)
        self.output_format = output_format
        self._location = resolve(output_dir, storage)
        check_writable(self._location)
        self.last_records: list[RolloutRecord] = []
        self.last_path: str | None = None

    def forward(self, examples: Examples, n: int = 1, *, dry_run: bool = False) -> list[dspy.Prediction | None]:
        return self.collect(examples, n, dry_run=dry_run)

    def collect(self, examples: Examples, n: int = 1, *, dry_run: bool = False) -> list[dspy.Prediction | None]:
        """Run ``n`` rollouts of each example, write their rows, return their predictions.

        Args:
            examples: a list of dicts, a list of ``dspy.Example``, or one of either.
            n: rollouts per example; each is its own LM call, even with DSPy's cache on.
            dry_run: format every prompt and record it; call no LM. Each prediction is then a
                `raydspy.core.dry_run.FormattedPrompt` holding the ``messages`` of the rollout's first
                LM call (ready as a GRPO prompt).

        Returns:
            ``len(examples) * n`` predictions, example-major (example 0's rollouts 0 … n-1
            first); None where the rollout failed (its row says why). The rows are in
            ``self.last_records`` and the file written in ``self.last_path``.

        Raises:
            InputError: no examples, or an example lacks a program input field (nothing run).
            StorageError: the rows could not be written.
        """
        rows = _as_dicts(examples)
        runner = RolloutRunner(
            self.predictor,
            lm=self.lm,
            adapter=self.adapter,
            rewards=self.rewards,
            sampling=self.sampling,
            dry_run=dry_run,
            tokens=self.tokens,
        )
        results = runner.run_many(rows, n, num_threads=self.num_threads)
        self.last_records = [r.record for r in results]
        self.last_path = self._write(self.last_records)
        if self.output_format == "parquet":
            self._write_card(runner.program_hash, dry_run)
        return [r.prediction for r in results]

    def _write_card(self, program_hash: str, dry_run: bool) -> None:
        """Rewrite the output's dataset card from the counts of every rollout file Collect wrote
        there (read one at a time: memory of one file)."""
        fs, folder = self._location.filesystem, self._location.path
        files = sorted(
            info.path
            for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
            if info.base_name.startswith(_FILE_PREFIX) and info.base_name.endswith(".parquet")
        )
        stats = RolloutStats()
        for path in files:
            stats += RolloutStats.of(pq.read_table(path, filesystem=fs))
        lm = self.lm or dspy.settings.lm
        sampling = {k: getattr(lm, "kwargs", {}).get(k) for k in ("temperature", "max_tokens")} | self.sampling
        card = rollouts_card(
            stats,
            program=self.predictor,
            program_name=type(self.predictor).__name__,
            program_hash=program_hash,
            teacher_model=None if dry_run or lm is None else getattr(lm, "model", str(lm)),
            sampling=sampling,
            n=None,
            input_uri=None,
            input_license=None,
            data_files=f"{_FILE_PREFIX}*.parquet",
            token_column=token_column_loads(stats, self._location, lambda: files),
        )
        write_card(self._location, card)

    def _write(self, records: list[RolloutRecord]) -> str:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        name = f"{_FILE_PREFIX}{stamp}-{uuid.uuid4().hex[:8]}.{self.output_format}"
        table = records_to_table(records)
        buffer = io.BytesIO()
        if self.output_format == "parquet":
            pq.write_table(table, buffer)
        else:
            for row in table.to_pylist():
                buffer.write(json.dumps(row, default=str, ensure_ascii=False).encode("utf-8") + b"\n")
        return write_atomic(self._location, name, buffer.getvalue())


def _as_dicts(examples: Examples) -> list[dict[str, Any]]:
    if isinstance(examples, (Mapping, dspy.Example)):
        examples = [examples]
    rows = []
    for i, example in enumerate(examples):
        if isinstance(example, dspy.Example):
            rows.append(dict(example.toDict()))
        elif isinstance(example, Mapping):
            rows.append(dict(example))
        else:
            raise InputError(f"example {i} is a {type(example).__name__}; expected a dict or dspy.Example")
    return rows
