"""The task: one spec of *what* is distilled, read by every step of the loop.

A `TaskSpec` names the program, its rewards and its examples; ``raydspy collect``, ``export``,
``train`` and ``evaluate`` (and the HTTP service) take it as ``--task NAME_OR_YAML``. Everything
else (the teacher, the layout, the student) is the step's own configuration.

A task YAML (paths relative to the working directory, or URIs)::

    name: orders
    program: myproj.programs:solver        # a dspy.Module, or a function returning one
    rewards: myproj.rewards:all            # reward_fn(inputs, outputs), {name: fn}, or a DSPy metric
    input: s3://bucket/train.jsonl         # training examples: collection, prompt optimisation
    held_out: s3://bucket/test.jsonl       # evaluation examples
    id_field: id

Presets are tasks raydspy ships, with their data: ``banking77`` (the reference workflow, an
intent label) and ``orders`` (two stages: extraction with an integer field, then a free-text
reply). banking77's input files are written to raydspy's cache on first use.

Example:
    >>> task = load_task("orders")  # doctest: +SKIP
    >>> task.program
    'raydspy.programs.orders:program'
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from raydspy.core.configfile import read_yaml_model
from raydspy.errors import ConfigError

__all__ = ["TaskSpec", "Decoding", "load_task", "PRESETS"]

#: How a model is prompted and decoded: ``structured`` (JSONAdapter prompts, the JSON schema
#: enforced by the server: the teacher of the CPU recipe), ``plain`` (the same prompts, nothing
#: enforced: a student must write the format itself), ``chat`` (DSPy's ChatAdapter).
Decoding = Literal["structured", "plain", "chat"]


class TaskSpec(BaseModel):
    """A program, its rewards and its examples: what every step of the loop needs to know.

    Raises:
        pydantic.ValidationError: a field is missing or mistyped (`load_task` turns it into a
            `ConfigError` naming the file).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("task", description="Name in reports and run folders.")
    program: str = Field(..., description="MODULE:ATTR of the dspy.Module, or of a function returning one.")
    rewards: str | None = Field(
        None,
        description="MODULE:ATTR of reward_fn(inputs, outputs) -> float, "
        "{name: fn}, a DSPy metric(example, pred, trace=None), or a function returning one.",
    )
    reward_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Weight of each named reward in the combined reward (default: the plain mean).",
    )
    input: str | None = Field(None, description="Training examples (CSV, JSONL, Parquet; local, s3://, gs://).")
    held_out: str | None = Field(None, description="Evaluation examples, never used for training.")
    id_field: str | None = Field(None, description="Column holding example ids (default: a hash of each example).")
    n: int | None = Field(None, ge=1, description="Rollouts per example when collecting (default 1).")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Teacher sampling temperature.")
    max_tokens: int | None = Field(None, ge=1, description="Completion tokens per LM call.")
    structured_outputs: bool | None = Field(None, description="Teacher decoding with the JSON schema enforced.")
    max_text_chars: int | None = Field(None, ge=1, description="Bound on the teacher's free-text fields.")
    student_decoding: Decoding = Field(
        "plain",
        description="How students are prompted: the adapter whose "
        "prompts match the teacher's (plain for JSON prompts, chat for ChatAdapter).",
    )

    @classmethod
    def from_yaml(cls, path: str | Path) -> TaskSpec:
        """Read a task file.

        Raises:
            ConfigError: the file is missing, not YAML, or not a valid task (the message says why).
        """
        return read_yaml_model(cls, path, "task file")

    def teacher_defaults(self) -> dict[str, Any]:
        """The teacher settings this task sets (``temperature``, ``max_tokens``, ...), unset ones left out."""
        keys = ("temperature", "max_tokens", "structured_outputs", "max_text_chars")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def _cache() -> Path:
    from raydspy.teacher.embedded import default_cache_dir

    return default_cache_dir() / "data"


#: The dataset card of the banking77 samples the preset writes (`raydspy.core.cards.input_license`
#: reads its license).
BANKING77_SAMPLE_CARD = """---
license: cc-by-4.0
pretty_name: BANKING77, the 25 most frequent intents
---

# BANKING77, the 25 most frequent intents

Shuffled samples of BANKING77 (PolyAI, Casanueva et al., 2020) written by `raydspy.task` from the
copy shipped in `raydspy/datasets/banking77/` (its README gives the source and the attribution).
License: Creative Commons Attribution 4.0 International.
"""


def banking77_task() -> TaskSpec:
    """The reference workflow: banking77 queries among the 25 most frequent intents, shuffled
    (seed 0), ``ChainOfThought(text -> label)``, rewards exact match and format."""
    from raydspy.programs import banking77

    cache = _cache() / "banking77"
    cache.mkdir(parents=True, exist_ok=True)
    # A card beside the samples, so that the dataset card of a run on them names their license.
    (cache / "README.md").write_text(BANKING77_SAMPLE_CARD, encoding="utf-8")
    return TaskSpec(
        name="banking77",
        program="raydspy.programs.banking77:program",
        rewards="raydspy.programs.banking77:rewards",
        input=str(banking77.write_sample(cache / "banking77-train-top25.csv", size=None)),
        held_out=str(banking77.write_sample(cache / "banking77-test-top25.csv", split="test", size=None)),
        n=3,
        temperature=1.0,
        max_tokens=192,
        structured_outputs=True,
    )


def orders_task() -> TaskSpec:
    """The second workload: customer order messages, ``message -> city, quantity: int, item ->
    reply`` (two predictors), rewards: each extracted field against the gold one, and whether
    the reply names them (`raydspy.programs.orders`)."""
    from raydspy.datasets import orders_path

    return TaskSpec(
        name="orders",
        program="raydspy.programs.orders:program",
        rewards="raydspy.programs.orders:rewards",
        input=str(orders_path("train.jsonl")),
        held_out=str(orders_path("test.jsonl")),
        id_field="id",
        n=2,
        temperature=0.3,
        max_tokens=96,
        structured_outputs=True,
    )


#: Shipped tasks by name: ``--task banking77`` or ``--task orders``.
PRESETS: dict[str, Callable[[], TaskSpec]] = {"banking77": banking77_task, "orders": orders_task}


def load_task(ref: str | TaskSpec) -> TaskSpec:
    """The task ``ref`` names: a preset (`PRESETS`) or a task YAML file; a `TaskSpec` passes through.

    Raises:
        ConfigError: ``ref`` is neither a preset nor a readable, valid task file.
    """
    if isinstance(ref, TaskSpec):
        return ref
    if ref in PRESETS:
        return PRESETS[ref]()
    if not Path(ref).is_file():
        raise ConfigError(f"--task {ref!r} is neither a preset ({', '.join(PRESETS)}) nor a task YAML file")
    return TaskSpec.from_yaml(ref)
