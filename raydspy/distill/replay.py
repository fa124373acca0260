"""Scoring a student's completion with the task's own rewards, by replaying the teacher's rollout.

GRPO samples completions for one LM call at a time, but a task's rewards score a whole rollout:
``reward(inputs, outputs)`` on the program's outputs. This module bridges the two, for any
program, one predictor or several:

1. each GRPO prompt is one LM call ``k`` of a teacher's rollout (`raydspy.distill.exports.to_grpo`
   keeps, with the prompt, the rollout's inputs and the completions of all its calls);
2. the program runs again on the rollout's inputs through `raydspy.core.runner.RolloutRunner` (the
   rollout path of collection) with a `ReplayLM`: call ``k`` answers with the student's
   completion, every other call with the teacher's recorded one;
3. the task's rewards score the program's outputs; the format reward is whether call ``k``
   parsed (under the student's adapter).

So a single-predictor program is scored on exactly the student's answer. In a program with
several predictors, each predictor's calls are trained on the prompts the teacher's earlier
outputs built, and later calls keep the teacher's recorded completions even where the student's
output would have changed their prompt: a reward that depends only on later predictors is then
the same for every completion of a GRPO group and adds no advantage, so each predictor learns
from the rewards its own output moves (and the format reward). A completion that does not parse
scores 0.0 on every task reward; when the replay cannot be scored (the program took another
path and asked for more calls than the rollout recorded, or call ``k``'s prompt differs from the
one trained on, e.g. another adapter) the task rewards are None, which TRL ignores.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle
import dspy

from raydspy.core.rewards import RewardSet

__all__ = ["ReplayLM", "ReplayExhausted", "ReplayScore", "ReplayScorer"]

logger = logging.getLogger(__name__)


class ReplayExhausted(Exception):
    """The program asked for more LM calls than the rollout being replayed made."""


class ReplayLM(dspy.BaseLM):
    """An LM that answers call ``i`` with ``completions[i]``, and calls no model.

    Args:
        completions: the text of each LM call of a rollout, in call order.
    """

    def __init__(self, completions: Sequence[str | None], model: str = "replay"):
        super().__init__(model=model, model_type="chat", temperature=0.0, max_tokens=1)
        self.completions = list(completions)
        self.position = 0

    def __call__(self, prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None, **kwargs: Any):
        if self.position >= len(self.completions) or self.completions[self.position] is None:
            raise ReplayExhausted(f"call {self.position} has no recorded completion")
        text = self.completions[self.position]
        self.position += 1
        return [text]

    async def acall(self, prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None, **kwargs: Any):
        return self(prompt, messages=messages, **kwargs)

    def forward(self, *args: Any, **kwargs: Any):  # pragma: no cover - __call__ never gets here
        raise NotImplementedError

    def copy(self, **kwargs: Any) -> ReplayLM:
        return ReplayLM(self.completions, self.model)


@dataclass(frozen=True)
class ReplayScore:
    """What one completion scored: ``format`` (call ``k`` parsed: 1.0 / 0.0) and each task
    reward by name (None when unknown); ``matched`` is False when call ``k``'s prompt differed
    from the one trained on."""

    format: float
    rewards: dict[str, float | None]
    matched: bool = True


class ReplayScorer:
    """Scores completions of GRPO rows by replaying their rollouts (see the module docstring).

    Args:
        program: the task's program (``MODULE:ATTR`` or a ``dspy.Module``).
        rewards: the task's rewards (a spec, function, ``{name: fn}`` or DSPy metric), or None.
        adapter: the student's adapter: it must format the prompts the rows were recorded with.
        reward_weights: weights of the combined reward (unused by GRPO, which weighs each itself).

    Picklable as its arguments; the program is loaded where it is first used (a training worker).
    """

    def __init__(
        self,
        program: Any,
        rewards: Any,
        adapter: dspy.Adapter,
        reward_weights: Mapping[str, float] | None = None,
        cache_size: int = 4096,
    ):
        self.program, self.reward_spec, self.adapter = program, rewards, adapter
        self.reward_weights = dict(reward_weights or {})
        self.cache_size = cache_size
        self._setup()

    def _setup(self) -> None:
        from raydspy.core.specs import load_rewards

        self._rewards = RewardSet(load_rewards(self.reward_spec), self.reward_weights or None)
        self._runner = None
        self._cache: OrderedDict[tuple, ReplayScore] = OrderedDict()
        self._lock = threading.Lock()
        self._mismatch_reported = False

    def __getstate__(self) -> dict[str, Any]:
        # Programs and rewards built at run time (string signatures) pickle only by value.
        return {
            "payload": cloudpickle.dumps(
                (self.program, self.reward_spec, self.adapter, self.reward_weights, self.cache_size)
            )
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.program, self.reward_spec, self.adapter, self.reward_weights, self.cache_size = cloudpickle.loads(
            state["payload"]
        )
        self._setup()

    @property
    def reward_names(self) -> list[str]:
        """The task rewards' names (each becomes a TRL reward function)."""
        return self._rewards.names

    def runner(self):
        """The `RolloutRunner` of the program under the student's adapter (built once)."""
        if self._runner is None:
            from raydspy.core.runner import RolloutRunner
            from raydspy.core.specs import load_program

            self._runner = RolloutRunner(load_program(self.program), adapter=self.adapter, rewards=self._rewards)
        return self._runner

    def score(self, row: Mapping[str, Any], completion: str) -> ReplayScore:
        """Score ``completion`` as call ``row["call_index"]`` of the rollout ``row`` records.

        ``row`` holds the GRPO export's columns: ``inputs`` (JSON), ``call_index``, ``replay``
        (JSON list of the rollout's completions) and ``prompt`` (the messages trained on).
        Never raises for a bad completion or program: the failure scores as described above.
        """
        key = (row["inputs"], row["call_index"], row["replay"], completion)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        result = self._score(row, completion)
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    def _score(self, row: Mapping[str, Any], completion: str) -> ReplayScore:
        index = int(row["call_index"])
        completions = list(json.loads(row["replay"]))
        completions[index] = completion
        lm = ReplayLM(completions)
        runner = self.runner()
        result = runner.run(json.loads(row["inputs"]), 0, example_id_="replay", rollout_id_="replay", lm=lm)
        trace = result.record.trace
        unknown = dict.fromkeys(self.reward_names)
        if len(trace) <= index:  # the program stopped before call k (it raised on an earlier one)
            return ReplayScore(0.0, unknown)
        call = trace[index]
        if not _same_messages(call.messages, row.get("prompt")):
            self._report_mismatch(row)
            return ReplayScore(float(bool(call.format_ok)), unknown, matched=False)
        if result.record.error and result.record.error.startswith(ReplayExhausted.__name__):
            return ReplayScore(float(bool(call.format_ok)), unknown)
        return ReplayScore(float(bool(call.format_ok)), {n: result.record.rewards.get(n) for n in self.reward_names})

    def check(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Replay ``rows`` with their own recorded completions, before training: the program
        under the student's adapter must format the prompts the rows hold.

        Raises:
            ConfigError: no row's prompt came out the same (wrong adapter or program).
        """
        from raydspy.errors import ConfigError

        checked = [(row, json.loads(row["replay"])[int(row["call_index"])]) for row in rows]
        checked = [(row, text) for row, text in checked if text is not None]
        if checked and not any(self._score(row, text).matched for row, text in checked):
            raise ConfigError(
                f"the program {self.program!r} under {type(self.adapter).__name__} does not format the "
                "prompts of the GRPO export: is it the program the rollouts were collected with, and "
                "grpo.adapter the adapter whose prompts they hold (plain: JSON, chat: ChatAdapter)?"
            )

    def _report_mismatch(self, row: Mapping[str, Any]) -> None:
        if not self._mismatch_reported:
            self._mismatch_reported = True
            logger.warning(
                "GRPO replay: the program formatted call %s of example %s differently from the prompt "
                "trained on; its task rewards are left unscored. Is grpo.adapter the adapter the "
                "rollouts were collected with (json for JSON prompts, chat for ChatAdapter)?",
                row["call_index"],
                row.get("example_id"),
            )


def _same_messages(sent: Sequence[Mapping[str, Any]], recorded: Any) -> bool:
    """True when the messages sent equal the recorded prompt (roles and text); unknown counts as equal."""
    if recorded is None:
        return True
    if isinstance(recorded, str):
        recorded = json.loads(recorded)
    return [(m["role"], m["content"] or "") for m in sent] == [(m["role"], m["content"] or "") for m in recorded]
