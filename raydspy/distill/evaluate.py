"""Evaluation of any program: teacher and students, each running the task's program on held-out examples.

Every candidate runs the **same DSPy program** (no demos, unless prompt optimisation adds them)
through `raydspy.Collect`, the rollout path of collection, on the same examples: greedy
(temperature 0), one rollout each, scored by the task's own rewards. The candidates differ only
in the model behind their OpenAI-compatible endpoint and in decoding (`raydspy.task.Decoding`):
``structured`` (the server enforces each signature's JSON schema: the teacher of the CPU
recipe; ``max_text_chars`` bounds its free text so a greedy loop still closes the JSON),
``plain`` (the same JSON prompts, nothing enforced: what a student must write itself) or
``chat`` (DSPy's ChatAdapter).

Per candidate (`EvalResult`): each named reward's mean and the combined reward's (a rollout that
failed to parse scores 0 on every reward), format compliance of the rollouts (every LM call
parsed) and of each predictor's calls, errors by type, tokens and time. The rollouts stay under
``output/rollouts/<candidate>/``, so every number can be traced to its rows; `write_report`
writes ``evaluation.md``, ``evaluation.png`` and ``evaluation.json``.

With ``optimizer`` set, each candidate is evaluated a second time after prompt optimisation:
DSPy's ``BootstrapFewShot`` (``"bootstrap"``) or ``BootstrapFewShotWithRandomSearch``
(``"random-search"``) compiles the program against the candidate's own model on training
examples, with the task's rewards as the metric (`raydspy.core.rewards.RewardSet.as_metric`), keeping
as demos the candidate's own rollouts whose reward reaches ``metric_threshold``.

Example (an endpoint serving the models must be up, e.g. ``serve_configs/student-cpu.yaml``):
    >>> from raydspy.pipeline.inputs import load_examples
    >>> results = evaluate("raydspy.programs.orders:program",
    ...                    [Candidate.parse("teacher=smollm2-135m-instruct:structured"),
    ...                     Candidate.parse("sft=student:plain")],
    ...                    load_examples("raydspy/datasets/orders/test.jsonl", limit=200), "runs/orders/eval",
    ...                    rewards="raydspy.programs.orders:rewards")  # doctest: +SKIP
    >>> write_report(results, "runs/orders/eval", title="orders")  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field

from raydspy.core.stats import error_type
from raydspy.distill.optimize import OPTIMIZER_NAMES, Optimizer, optimize
from raydspy.errors import ConfigError
from raydspy.task import Decoding
from raydspy.teacher.client import DEFAULT_TEACHER_URL, TeacherConfig

__all__ = [
    "EvalSettings",
    "Candidate",
    "EvalResult",
    "evaluate",
    "score_records",
    "adapter_for",
]

DECODINGS: tuple[str, ...] = get_args(Decoding)


class EvalSettings(BaseModel):
    """How an evaluation runs: the knobs of ``raydspy evaluate`` (its flags are derived from these
    fields) and the defaults of `evaluate`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    examples: int = Field(200, ge=1, description="Use the first N held-out examples.")
    threads: int = Field(32, ge=1, le=512, description="Requests in flight.")
    max_tokens: int = Field(192, ge=1, description="Completion tokens per LM call (greedy).")
    teacher_max_text_chars: int = Field(
        400,
        ge=0,
        description="Bound on a structured candidate's free-text fields, in characters, so a greedy "
        "loop still parses; 0 for none.",
    )
    train_examples: int = Field(32, ge=1, description="Training examples the prompt optimiser uses.")
    max_demos: int = Field(4, ge=0, description="Demos per predictor the optimiser may add.")
    metric_threshold: float = Field(1.0, description="A rollout becomes a demo when its combined reward reaches this.")


_DEFAULTS = EvalSettings()


def adapter_for(decoding: Decoding, max_text_chars: int | None = None) -> Any:
    """The adapter of a decoding: `StructuredOutputAdapter` (``structured``, free text bounded to
    ``max_text_chars``), `PlainJSONAdapter` (``plain``) or ``dspy.ChatAdapter`` (``chat``).

    Raises:
        ConfigError: an unknown decoding.
    """
    import dspy

    from raydspy.core.adapters import PlainJSONAdapter, StructuredOutputAdapter

    if decoding == "structured":
        return StructuredOutputAdapter(max_text_chars=max_text_chars)
    if decoding == "plain":
        return PlainJSONAdapter()
    if decoding == "chat":
        return dspy.ChatAdapter(use_json_adapter_fallback=False)
    raise ConfigError(f"decoding must be one of {list(DECODINGS)}, got {decoding!r}")


@dataclass(frozen=True)
class Candidate:
    """One model to evaluate: its name in the report, the model id its endpoint serves, decoding.

    Attributes:
        max_text_chars: ``structured`` only: bound on free-text output strings, in characters.
    """

    name: str
    model: str
    decoding: Decoding = "plain"
    base_url: str = DEFAULT_TEACHER_URL
    max_text_chars: int | None = None
    api_key: str = "not-needed"

    @classmethod
    def parse(
        cls,
        spec: str,
        *,
        base_url: str = DEFAULT_TEACHER_URL,
        max_text_chars: int | None = None,
        api_key: str = "not-needed",
    ) -> Candidate:
        """A candidate from ``NAME=MODEL[@URL][:plain|structured|chat]`` (the ``--candidate`` flag).

        ``URL`` defaults to ``base_url``, decoding to ``plain``; ``max_text_chars`` applies to a
        structured candidate.

        Raises:
            ConfigError: the spec is not of that form.
        """
        name, sep, rest = spec.partition("=")
        decoding: str = "plain"
        for option in DECODINGS:
            if rest.endswith(f":{option}"):
                rest, decoding = rest[: -len(option) - 1], option
                break
        model, _, url = rest.partition("@")
        if not sep or not name.strip() or not model.strip():
            raise ConfigError(f"--candidate must be NAME=MODEL[@URL][:{'|'.join(DECODINGS)}], got {spec!r}")
        return cls(
            name.strip(),
            model.strip(),
            decoding,
            url.strip() or base_url,  # type: ignore[arg-type]
            max_text_chars if decoding == "structured" else None,
            api_key,
        )

    def teacher(self, max_tokens: int) -> TeacherConfig:
        """The endpoint as a greedy, uncached `TeacherConfig`."""
        return TeacherConfig(
            base_url=self.base_url,
            model=self.model,
            api_key=self.api_key,
            temperature=0.0,
            max_tokens=max_tokens,
            cache=False,
        )

    def adapter(self) -> Any:
        """The adapter of this candidate's decoding (`adapter_for`)."""
        return adapter_for(self.decoding, self.max_text_chars)


@dataclass(frozen=True)
class EvalResult:
    """One candidate's scores on ``examples`` held-out examples (shares and means in 0..1).

    Attributes:
        reward: mean combined reward (None without rewards).
        rewards: each named reward's mean, over the rollouts it scored.
        format_compliance: share of rollouts whose every LM call parsed.
        format_by_predictor: per predictor, the share of its LM calls that parsed.
        errors: rollouts with an error; ``errors_by_type`` counts them by exception type.
        prompt_tokens, completion_tokens: totals reported by the endpoint.
        demos: few-shot demos per predictor in the evaluated program (prompt optimisation).
    """

    name: str
    model: str
    decoding: str
    examples: int
    reward: float | None
    rewards: dict[str, float]
    format_compliance: float
    format_by_predictor: dict[str, float]
    errors: int
    errors_by_type: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    elapsed_s: float
    demos: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def score_records(
    name: str, candidate: Candidate, records: Sequence[Any], elapsed_s: float, demos: int = 0
) -> EvalResult:
    """The `EvalResult` of one candidate's rollout records (`raydspy.core.rollouts.RolloutRecord`)."""
    count = len(records)

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    names = list(dict.fromkeys(n for r in records for n in r.rewards))
    calls: dict[str, list[bool]] = collections.defaultdict(list)
    for record in records:
        for call in record.trace:
            calls[call.predictor or "?"].append(bool(call.format_ok))
    errors = collections.Counter(error_type(r.error) for r in records if r.error)
    return EvalResult(
        name=name,
        model=candidate.model,
        decoding=candidate.decoding,
        examples=count,
        reward=mean([r.reward for r in records if r.reward is not None]),
        rewards={n: mean([r.rewards[n] for r in records if n in r.rewards]) or 0.0 for n in names},
        format_compliance=sum(bool(r.format_ok) for r in records) / count if count else 0.0,
        format_by_predictor={p: sum(ok) / len(ok) for p, ok in calls.items()},
        errors=sum(errors.values()),
        errors_by_type=dict(errors.most_common()),
        prompt_tokens=sum(c.prompt_tokens or 0 for r in records for c in r.trace),
        completion_tokens=sum(c.completion_tokens or 0 for r in records for c in r.trace),
        elapsed_s=round(elapsed_s, 1),
        demos=demos,
    )


def evaluate(
    program: Any,
    candidates: Sequence[Candidate],
    examples: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    *,
    rewards: Any = None,
    reward_weights: Mapping[str, float] | None = None,
    max_tokens: int = _DEFAULTS.max_tokens,
    threads: int = _DEFAULTS.threads,
    optimizer: Optimizer | None = None,
    trainset: Sequence[Mapping[str, Any]] = (),
    max_demos: int = _DEFAULTS.max_demos,
    metric_threshold: float = _DEFAULTS.metric_threshold,
) -> list[EvalResult]:
    """Run ``program`` on ``examples`` once per candidate and score it with ``rewards``; with
    ``optimizer``, once more per candidate after `optimize` on ``trainset`` (named
    ``"<name> + <optimizer>"``).

    Args:
        program: a ``MODULE:ATTR`` spec or a ``dspy.Module`` (each candidate gets a fresh copy).
        rewards: a reward spec, function, ``{name: function}`` or DSPy metric (`raydspy.core.rewards`).

    Returns:
        One `EvalResult` per candidate (and per optimised candidate), in ``candidates`` order.

    Raises:
        TeacherUnreachableError: a candidate's endpoint does not serve its model.
        ConfigError: ``optimizer`` set with no ``trainset`` or no rewards, or a bad spec.
    """
    from raydspy.core.rewards import RewardSet
    from raydspy.core.specs import load_program, load_rewards

    reward_set = RewardSet(load_rewards(rewards), reward_weights)
    if optimizer is not None and not (trainset and reward_set):
        raise ConfigError("prompt optimisation needs training examples (trainset) and rewards for its metric")
    results = []
    for candidate in candidates:
        teacher = candidate.teacher(max_tokens)
        teacher.check_reachable()
        program_ = load_program(program).deepcopy()
        results.append(_score(candidate.name, candidate, program_, teacher, reward_set, examples, output_dir, threads))
        if optimizer is not None:
            compiled = optimize(
                program_,
                trainset,
                optimizer,
                lm=teacher.lm(),
                adapter=candidate.adapter(),
                metric=reward_set.as_metric(),
                metric_threshold=metric_threshold,
                max_demos=max_demos,
                threads=min(threads, 8),
            )
            results.append(
                _score(
                    f"{candidate.name} + {OPTIMIZER_NAMES[optimizer]}",
                    candidate,
                    compiled,
                    teacher,
                    reward_set,
                    examples,
                    output_dir,
                    threads,
                )
            )
    return results


def _score(
    name: str,
    candidate: Candidate,
    program: Any,
    teacher: TeacherConfig,
    rewards: Any,
    examples: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    threads: int,
) -> EvalResult:
    """One rollout of ``program`` per example through `raydspy.Collect`; rows go to ``rollouts/<name>/``."""
    from raydspy.core.collect import Collect

    folder = Path(output_dir) / "rollouts" / name.replace(" + ", "+").replace(" ", "-")
    collect = Collect(
        program,
        str(folder),
        reward_fn=rewards,
        num_threads=threads,
        lm=teacher.lm(),
        adapter=candidate.adapter(),
        sampling=teacher.sampling,
    )
    started = time.perf_counter()
    collect.collect([dict(e) for e in examples], n=1)
    demos = max((len(p.demos) for p in program.predictors()), default=0)
    return score_records(name, candidate, collect.last_records, time.perf_counter() - started, demos)
