"""The reference workflow's program: a bank's intent classifier on BANKING77.

A ``ChainOfThought`` over ``text -> label`` whose instructions list the valid intents, narrowed
to the ``num_labels`` most frequent ones in the training split (the seed used 25). The label is a
``Literal`` of those intents, so a completion naming anything else fails to parse (and the
format reward is 0).

CLI: ``raydspy collect --program raydspy.programs.banking77:program ...`` builds it with the
default 25 labels; ``raydspy demo`` runs the whole preset.
"""

from __future__ import annotations

import collections
import csv
import functools
import random
from pathlib import Path
from typing import Literal

import dspy

from raydspy.core.rewards import ExactMatch, FormatCompliance
from raydspy.datasets import banking77_path

__all__ = ["INPUT_FIELD", "GOLD_FIELD", "top_labels", "make_signature", "program", "rewards", "write_sample"]

INPUT_FIELD = "text"
GOLD_FIELD = "category"  # the CSV's label column


@functools.cache
def _rows(split: str) -> tuple[dict[str, str], ...]:
    with open(banking77_path(f"{split}.csv"), newline="", encoding="utf-8") as f:
        return tuple(csv.DictReader(f))


def top_labels(num_labels: int = 25) -> list[str]:
    """The ``num_labels`` most frequent intents of the training split, most frequent first
    (ties broken by name, so the list is stable). 1 <= num_labels <= 77."""
    if not 1 <= num_labels <= 77:
        raise ValueError(f"num_labels must be in 1..77, got {num_labels}")
    counts = collections.Counter(row[GOLD_FIELD] for row in _rows("train"))
    return [label for label, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:num_labels]]


def make_signature(labels: list[str]) -> type[dspy.Signature]:
    """``text -> label`` with the labels listed in the instructions and enforced by the type."""
    instructions = (
        "Classify the intent of an online-banking customer's query.\n"
        "Answer with exactly one of these labels:\n" + "\n".join(f"- {label}" for label in labels)
    )
    return dspy.Signature(
        {
            INPUT_FIELD: (str, dspy.InputField(desc="the customer's query")),
            "label": (Literal[tuple(labels)], dspy.OutputField(desc="the intent label")),
        },
        instructions,
    )


def program(num_labels: int = 25) -> dspy.Module:
    """The classifier program: ``ChainOfThought(text -> label)`` over the top ``num_labels``."""
    return dspy.ChainOfThought(make_signature(top_labels(num_labels)))


def rewards() -> dict[str, object]:
    """``exact_match`` (the predicted label is the gold ``category``) and ``format`` (every LM call
    of the rollout followed the output format)."""
    return {"exact_match": ExactMatch("label", GOLD_FIELD), "format": FormatCompliance()}


def write_sample(
    path: str | Path, *, split: str = "train", num_labels: int = 25, size: int | None = 100, seed: int = 0
) -> Path:
    """Write a shuffled sample of ``size`` rows (None: all) whose gold label is among the top
    ``num_labels`` to a CSV at ``path`` (columns ``text,category``). Same arguments, same file;
    a smaller ``size`` gives the first rows of a larger one.

    Returns:
        ``path``.
    """
    labels = set(top_labels(num_labels))
    rows = [row for row in _rows(split) if row[GOLD_FIELD] in labels]
    random.Random(seed).shuffle(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[INPUT_FIELD, GOLD_FIELD])
        writer.writeheader()
        writer.writerows(rows[:size])
    return path
