"""raydspy's rewards in the shape TRL's GRPOTrainer calls: ``fn(prompts, completions, **columns) -> list``.

TRL passes each batch's sampled ``completions`` (conversational: ``[{"role": "assistant",
"content": str}]``, or plain strings) and every other dataset column as a keyword list; the GRPO
export (`raydspy.distill.exports.to_grpo`) gives ``inputs``, the example as JSON. Both classes
here are picklable (Ray ships them to the training workers) and carry a stable ``__name__``,
under which TRL logs them.

- `GRPOFormatReward`: `raydspy.rewards.build_format_reward` of the program's signature under the
  student's adapter (1.0 when the completion parses into every output field, else 0.0).
- `GRPOTaskReward`: a raydspy task reward (``reward(inputs, outputs) -> float | None``, e.g.
  `raydspy.rewards.ExactMatch`) on the adapter's parse of the completion; 0.0 when it does not
  parse, None (TRL ignores it) when the example has no gold value.

Example:
    >>> from raydspy.adapters import PlainJSONAdapter
    >>> from raydspy.programs import banking77
    >>> sig = banking77.make_signature(banking77.top_labels(25))
    >>> funcs = grpo_reward_funcs(sig, PlainJSONAdapter(), ExactMatch("label", "category"))
    >>> [f.__name__ for f in funcs]
    ['format', 'exact_match']
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import cloudpickle
import dspy

from raydspy.rewards import ExactMatch, build_format_reward  # noqa: F401 - ExactMatch: the usual task reward

__all__ = ["GRPOFormatReward", "GRPOTaskReward", "grpo_reward_funcs", "completion_text"]


def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a string, or the last message's ``content``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion:
        last = completion[-1]
        return str(last.get("content") or "") if isinstance(last, dict) else str(last)
    return ""


class GRPOFormatReward:
    """1.0 per completion that parses into the signature's output fields under ``adapter``."""

    __name__ = "format"

    def __init__(self, signature: type[dspy.Signature], adapter: dspy.Adapter):
        self.reward = build_format_reward(signature, adapter)

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **_: Any) -> list[float]:
        return [self.reward(completion_text(c)) for c in completions]


class GRPOTaskReward:
    """``reward(inputs, parsed outputs)`` per completion; ``inputs`` is the export's JSON column."""

    def __init__(self, signature: type[dspy.Signature], adapter: dspy.Adapter, reward: Any, name: str | None = None):
        self.signature = signature
        self.adapter = adapter
        self.reward = reward
        self.__name__ = name or getattr(reward, "__name__", "task")

    def __getstate__(self) -> dict[str, Any]:
        # Signatures built at run time (banking77's) only pickle by value.
        return {"payload": cloudpickle.dumps((self.signature, self.adapter, self.reward, self.__name__))}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(*cloudpickle.loads(state["payload"]))

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 inputs: Sequence[str] | None = None, **_: Any) -> list[float | None]:
        if inputs is None:
            raise ValueError("the task reward needs the dataset's `inputs` column (the GRPO export has it)")
        scores: list[float | None] = []
        for completion, example in zip(completions, inputs, strict=True):
            try:
                outputs = self.adapter.parse(self.signature, completion_text(completion))
            except Exception:  # noqa: BLE001 - any parse failure scores 0, as in the format reward
                scores.append(0.0)
                continue
            value = self.reward(json.loads(example), outputs)
            scores.append(None if value is None else float(value))
        return scores


def grpo_reward_funcs(signature: type[dspy.Signature], adapter: dspy.Adapter,
                      task_reward: Any | None = None) -> list[Any]:
    """``[format reward, task reward]`` (the task one only when given), for ``GRPOTrainer(reward_funcs=...)``."""
    funcs: list[Any] = [GRPOFormatReward(signature, adapter)]
    if task_reward is not None:
        funcs.append(GRPOTaskReward(signature, adapter, task_reward))
    return funcs

