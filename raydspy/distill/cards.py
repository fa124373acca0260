"""The dataset card of a training-set export (SFT, DPO, GRPO, KD): what the rows are, which rollouts
they came from, and how TRL reads them (`raydspy.core.cards` renders and writes it)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from raydspy.core.cards import DatasetCard, schema_table, size_category

__all__ = ["export_card"]

#: Per kind: the rows' meaning, the TRL trainer that reads them, and the Hub's task category.
_KINDS = {
    "sft": (
        "chat `messages` of each LM call of each kept rollout (rejection sampling), conversational format",
        "trl.SFTTrainer",
        "text-generation",
    ),
    "dpo": (
        "preference pairs: a `prompt` and the `chosen` / `rejected` completions of the best and worst "
        "rollouts of one example and predictor whose rewards differ",
        "trl.DPOTrainer",
        "text-generation",
    ),
    "grpo": (
        "prompts for online RL: the `prompt` messages, the example as JSON in `inputs`, and the rollout's "
        "recorded completions in `replay`",
        "trl.GRPOTrainer",
        "reinforcement-learning",
    ),
    "kd": (
        "chat `messages` of each kept LM call with the teacher's tokens: its token ids, their logprobs and "
        "the top-k alternatives at each completion position, for token-level (offline) distillation",
        "a token-level distillation loss on the teacher's top-k logprobs",
        "text-generation",
    ),
}

_COLUMNS = {
    "messages": "system, user, …, assistant: exactly what the program sent and the teacher answered",
    "prompt": "the messages before the completion",
    "chosen": "the better rollout's completion (one assistant message)",
    "rejected": "the worse rollout's completion (one assistant message)",
    "rollout_id": "the rollout the row came from",
    "example_id": "the example",
    "predictor": "the program's predictor that made the call",
    "reward": "the rollout's reward",
    "inputs": "the example's fields, as JSON",
    "call_index": "the call's place in its rollout",
    "replay": "JSON list of the rollout's completions (null where none)",
    "prompt_token_ids": "the prompt as the teacher tokenized it (chat template applied)",
    "completion_token_ids": "the tokens the teacher sampled (decoded without special tokens: the completion)",
    "completion_logprobs": "the teacher's logprob of each sampled token",
    "top_token_ids": "the teacher's K most likely tokens at each completion position, most likely first",
    "top_logprobs": "their logprobs",
}


def export_card(
    kind: str,
    *,
    rows: int,
    rollouts: int,
    rollouts_uri: str,
    options: dict,
    schema: pa.Schema,
    license_: str | None,
    data_files: str = "*.parquet",
) -> DatasetCard:
    """The card of an export of ``kind`` (``"sft"``, ``"dpo"``, ``"grpo"``, ``"kd"``): ``rows`` training
    rows from ``rollouts`` distinct rollouts under ``rollouts_uri``, made with ``options``, in
    ``schema``; ``license_`` is what the rollouts' own card declares (None: unknown)."""
    meaning, trainer, category = _KINDS[kind]
    given = ", ".join(f"`{k}={v!r}`" for k, v in options.items() if v not in (None, [], ())) or "the defaults"
    name = kind.upper()
    ours = f", or `raydspy train {kind} --config CONFIG.yaml --dataset OUTPUT`" if kind in ("sft", "grpo") else ""
    load = f"""```python
import datasets
train = datasets.load_dataset("OUTPUT", split="train")  # OUTPUT: this folder; the files: {data_files}

from raydspy.distill.exports import load_export          # the same, from any storage raydspy reads
train = load_export("OUTPUT")
```

Train with `{trainer}(..., train_dataset=train)`{ours}."""
    source = f"Rollouts read from `{rollouts_uri}` (their own dataset card says what made them)." + (
        f" License: `{license_}`, that of the inputs the rollouts were made from."
        if license_
        else " Their license is not known to raydspy."
    )
    return DatasetCard(
        title=f"{name} training set",
        data_files=data_files,
        schema=schema,
        metadata={
            **({"license": license_} if license_ else {}),
            "pretty_name": f"{name} training set from raydspy rollouts",
            "tags": ["raydspy", "dspy", "distillation", kind, "trl"],
            "task_categories": [category],
            "size_categories": [size_category(rows)],
        },
        intro=(
            f"{rows} rows for {trainer}: {meaning}. Exported by `raydspy export {kind}` with {given} from "
            f"{rollouts} rollouts, on {dt.datetime.now(dt.UTC):%Y-%m-%d}."
        ),
        sections=[
            ("Schema", schema_table(schema, _COLUMNS)),
            ("Loading", load),
            ("Source data", source),
        ],
    )
