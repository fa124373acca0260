"""Rewards: the format reward, ready task rewards, and how named rewards combine into one.

A reward function takes a rollout's inputs and outputs and returns a float (the seed's
``reward_fn(inputs, outputs) -> float``). One that also declares a ``trace`` parameter receives
the rollout's `raydspy.core.tracing.LMCall` list too, which is how format compliance is scored.
A DSPy metric, ``metric(example, pred, trace=None)``, is accepted wherever a reward is: it is
recognised by its first two parameters' names (``example``/``gold``, then ``pred``/
``prediction``) and adapted once by `DSPyMetric`. The other way, `RewardSet.as_metric` makes a
task's rewards the metric of DSPy's optimisers.
Every reward here is a small class, so it pickles and Ray can ship it to Collect actors.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle
import dspy
import pydantic

from raydspy.core.tracing import LMCall, describe_error
from raydspy.errors import ConfigError

__all__ = [
    "FormatReward",
    "build_format_reward",
    "ExactMatch",
    "FormatCompliance",
    "RewardSet",
    "RewardResult",
    "DSPyMetric",
    "is_dspy_metric",
]

RewardFn = Callable[..., float]


class FormatReward:
    """``fn(response_text) -> 1.0 or 0.0``: does a completion follow the program's output format?

    1.0 exactly when ``adapter.parse(signature, response_text)`` yields every output field of
    ``signature`` and each value validates against its annotation (str, int, float, bool,
    list[str], Literal[...], pydantic models, ...). Anything else, including None, bytes that
    are not UTF-8, malformed JSON or a Literal value outside its set, scores 0.0: this function
    never raises.
    """

    def __init__(self, signature: type[dspy.Signature] | str, adapter: dspy.Adapter | None = None):
        self.signature = dspy.ensure_signature(signature)
        self.adapter = adapter or dspy.ChatAdapter()
        self.__name__ = "format"
        self._validators = {
            name: pydantic.TypeAdapter(f.annotation) for name, f in self.signature.output_fields.items()
        }

    def __getstate__(self) -> dict[str, Any]:
        # Signatures built from strings are classes made at run time, which plain pickle cannot
        # find by name; cloudpickle stores them by value. The validators are rebuilt on arrival.
        return {"payload": cloudpickle.dumps((self.signature, self.adapter))}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(*cloudpickle.loads(state["payload"]))

    def __call__(self, response_text: Any) -> float:
        try:
            if isinstance(response_text, (bytes, bytearray)):
                response_text = bytes(response_text).decode("utf-8")
            if not isinstance(response_text, str) or not response_text.strip():
                return 0.0
            parsed = self.adapter.parse(self.signature, response_text)
            if not isinstance(parsed, dict) or parsed.keys() != self._validators.keys():
                return 0.0
            for name, validator in self._validators.items():
                validator.validate_python(parsed[name])
            return 1.0
        except Exception:  # noqa: BLE001 - the contract is 0.0 for *any* unparseable input
            return 0.0

    def __repr__(self) -> str:
        return f"FormatReward({self.signature.signature!r}, {type(self.adapter).__name__})"


def build_format_reward(signature: type[dspy.Signature] | str, adapter: dspy.Adapter | None = None) -> FormatReward:
    """Build the format reward of ``signature`` under ``adapter`` (ChatAdapter when None).

    Example:
        >>> reward = build_format_reward("question -> answer: int")
        >>> reward("[[ ## answer ## ]]\\n42\\n\\n[[ ## completed ## ]]")
        1.0
        >>> reward("forty-two")
        0.0

    Returns:
        A picklable `FormatReward`: ``fn(response_text) -> 1.0 or 0.0``; it never raises.
    """
    return FormatReward(signature, adapter)


@dataclass(frozen=True)
class ExactMatch:
    """1.0 when output ``field`` equals the example's ``gold_field`` (stripped, case-insensitive
    for strings), else 0.0. Examples without a gold value score None (unknown), not 0."""

    field: str
    gold_field: str

    @property
    def __name__(self) -> str:  # noqa: A003 - rewards are named by __name__
        return "exact_match"

    def __call__(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> float | None:
        gold = inputs.get(self.gold_field)
        if gold is None or gold == "":
            return None
        got = outputs.get(self.field)
        if isinstance(gold, str) and isinstance(got, str):
            return float(got.strip().lower() == gold.strip().lower())
        return float(got == gold)


class FormatCompliance:
    """1.0 when every LM call of the rollout parsed into its predictor's output fields, else 0.0.

    The rollout-level form of `build_format_reward`: it reads ``format_ok`` of each traced call,
    which the trace sets from the adapter's own parse of that completion.
    """

    __name__ = "format"

    def __call__(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any], *, trace: Sequence[LMCall]) -> float:
        return float(bool(trace) and all(call.format_ok for call in trace))


_METRIC_EXAMPLE = ("example", "gold", "ex")
_METRIC_PRED = ("pred", "prediction")


def is_dspy_metric(fn: Any) -> bool:
    """True when ``fn`` looks like a DSPy metric: its first two parameters are named ``example``
    (or ``gold``, ``ex``) and ``pred`` (or ``prediction``), as DSPy's own metrics and docs name them."""
    if isinstance(fn, DSPyMetric):
        return False
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return len(names) >= 2 and names[0] in _METRIC_EXAMPLE and names[1] in _METRIC_PRED


class DSPyMetric:
    """A DSPy metric ``metric(example, pred, trace=None) -> float | bool`` as a raydspy reward.

    Called with a rollout's ``inputs`` (every field of the example, labels too) as a
    ``dspy.Example`` and its ``outputs`` as a ``dspy.Prediction``, ``trace=None`` (DSPy's
    evaluation mode); True/False become 1.0/0.0, None stays None (no score).
    """

    def __init__(self, metric: Callable[..., Any], name: str | None = None):
        self.metric = metric
        self.__name__ = name or getattr(metric, "__name__", "metric")

    def __call__(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> float | None:
        value = self.metric(dspy.Example(**inputs), dspy.Prediction(**outputs), None)
        return None if value is None else float(value)

    def __repr__(self) -> str:
        return f"DSPyMetric({self.__name__})"


class _RewardMetric:
    """`RewardSet.as_metric`: the combined reward of a set's trace-free rewards, as a DSPy metric."""

    def __init__(self, rewards: RewardSet):
        self.rewards = rewards
        self.__name__ = "reward"

    def __call__(self, example: Any, pred: Any, trace: Any = None) -> float:
        inputs = dict(example.toDict()) if hasattr(example, "toDict") else dict(example)
        outputs = dict(pred.items()) if hasattr(pred, "items") else dict(pred)
        return self.rewards.score(inputs, outputs, []).reward or 0.0


@dataclass
class RewardResult:
    """What `RewardSet.score` found for one rollout.

    Attributes:
        reward: the combined reward, None when no reward is configured, when none applied (all
            None), or when a reward function raised.
        rewards: each named reward's value; a reward that returned None is left out.
        error: ``"RewardError: <name>: <Type>: <message>"`` when a reward function raised.
    """

    reward: float | None
    rewards: dict[str, float]
    error: str | None = None


class RewardSet:
    """Named reward functions and their combination.

    Args:
        rewards: None, one function, ``{name: function}``, or another `RewardSet`. A single
            function is named by its ``__name__`` (``"reward"`` for lambdas); DSPy metrics are
            adapted (`DSPyMetric`).
        weights: ``{name: weight}``; the combined reward is ``sum(w * r) / sum(w)`` over the
            rewards that returned a value (default: all weights 1, the plain mean).

    Raises:
        ConfigError: a reward is not callable, or a weight names no reward, is negative or not finite.
    """

    def __init__(
        self,
        rewards: RewardFn | Mapping[str, RewardFn] | None = None,
        weights: Mapping[str, float] | None = None,
    ):
        if isinstance(rewards, RewardSet):  # a set passes through, with its weights unless given
            rewards, weights = rewards.functions, weights if weights is not None else rewards.weights
        if rewards is None:
            rewards = {}
        elif callable(rewards):
            name = getattr(rewards, "__name__", "reward")
            rewards = {"reward" if name == "<lambda>" else name: rewards}
        self.functions: dict[str, RewardFn] = {
            name: DSPyMetric(fn, name) if is_dspy_metric(fn) else fn for name, fn in rewards.items()
        }
        for name, fn in self.functions.items():
            if not callable(fn):
                raise ConfigError(f"reward {name!r} is not callable: got {fn!r}")
        self.weights = {name: 1.0 for name in self.functions}
        for name, weight in (weights or {}).items():
            if name not in self.functions:
                raise ConfigError(f"weight given for unknown reward {name!r}; rewards: {sorted(self.functions)}")
            if not math.isfinite(weight) or weight < 0:
                raise ConfigError(f"weight of reward {name!r} must be a finite number >= 0, got {weight}")
            self.weights[name] = float(weight)
        self._wants_trace = {name: _accepts_trace(fn) for name, fn in self.functions.items()}

    def __bool__(self) -> bool:
        return bool(self.functions)

    @property
    def names(self) -> list[str]:
        """The rewards' names, in order."""
        return list(self.functions)

    def as_metric(self) -> Callable[..., float]:
        """This set as a DSPy metric, ``metric(example, pred, trace=None) -> float``, for DSPy's
        optimisers: the combined reward of the rewards that do not read the trace (a prediction
        that reaches a DSPy metric has parsed, so format rewards would only say 1.0), 0.0 when
        none applies. Picklable."""
        plain = {n: f for n, f in self.functions.items() if not self._wants_trace[n]}
        return _RewardMetric(RewardSet(plain, {n: self.weights[n] for n in plain}))

    def score(
        self, inputs: Mapping[str, Any], outputs: Mapping[str, Any] | None, trace: Sequence[LMCall]
    ) -> RewardResult:
        """Score one rollout.

        A failed rollout (``outputs`` None) scores 0.0 on every reward without calling them: its
        output did not parse, which is what the rewards exist to penalise.
        """
        if not self.functions:
            return RewardResult(None, {})
        if outputs is None:
            return RewardResult(0.0, {name: 0.0 for name in self.functions})
        values: dict[str, float] = {}
        for name, fn in self.functions.items():
            try:
                value = fn(inputs, outputs, trace=trace) if self._wants_trace[name] else fn(inputs, outputs)
                if value is None:
                    continue
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError(f"returned {value}, not a finite number")
            except Exception as e:  # noqa: BLE001 - a reward bug marks the row, the run goes on
                return RewardResult(None, values, f"RewardError: {name}: {describe_error(e)}")
            values[name] = value
        total = sum(self.weights[n] for n in values)
        reward = sum(self.weights[n] * v for n, v in values.items()) / total if total > 0 else None
        return RewardResult(reward, values)


def _accepts_trace(fn: RewardFn) -> bool:
    try:
        return "trace" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
