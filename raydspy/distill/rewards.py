"""The task's rewards in the shape TRL's GRPOTrainer calls: ``fn(prompts, completions, **columns) -> list``.

TRL passes each batch's sampled ``completions`` (conversational: ``[{"role": "assistant",
"content": str}]``, or plain strings), the ``prompts``, and every other dataset column as a
keyword list; the GRPO export (`raydspy.distill.exports.to_grpo`) gives ``inputs``,
``call_index`` and ``replay``. Each completion is scored once by a shared
`raydspy.distill.replay.ReplayScorer` (the program replayed with the completion in place), and
each reward function reads its own number from that score:

- ``format``: the completion parsed into its predictor's output fields under the student's
  adapter (1.0 / 0.0); it takes the place of a task reward named ``format``, which scores the
  same thing on the replayed rollout;
- one function per task reward, by the reward's name: 0.0 when the completion does not parse,
  None (TRL skips it) when the replay cannot say.

The functions pickle (Ray ships them to the training workers) and carry a stable ``__name__``,
under which TRL logs them (``rewards/<name>/mean``).

Example:
    >>> from raydspy.core.adapters import PlainJSONAdapter
    >>> funcs = grpo_reward_funcs("raydspy.programs.orders:program", "raydspy.programs.orders:rewards",
    ...                           PlainJSONAdapter())
    >>> [f.__name__ for f in funcs]
    ['format', 'city_match', 'quantity_match', 'item_match', 'reply_mentions']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy

from raydspy.distill.replay import ReplayScorer

__all__ = ["GRPOReward", "grpo_reward_funcs", "completion_text", "FORMAT"]

#: The name of the format reward GRPO always trains with.
FORMAT = "format"


def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a string, or the last message's ``content``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion:
        last = completion[-1]
        return str(last.get("content") or "") if isinstance(last, dict) else str(last)
    return ""


class GRPOReward:
    """Reward ``name`` (`FORMAT` or a task reward) of each completion, read from ``scorer``'s replay."""

    def __init__(self, scorer: ReplayScorer, name: str):
        self.scorer = scorer
        self.__name__ = name

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] = (),
        inputs: Sequence[str] | None = None,
        call_index: Sequence[int] | None = None,
        replay: Sequence[str] | None = None,
        **_: Any,
    ) -> list[float | None]:
        if inputs is None or call_index is None or replay is None:
            raise ValueError(
                "GRPO rewards need the export's `inputs`, `call_index` and `replay` columns: "
                "export the prompts with `raydspy export grpo`"
            )
        prompts = prompts if prompts is not None else [None] * len(completions)
        scores: list[float | None] = []
        for prompt, completion, example, index, recorded in zip(
            prompts, completions, inputs, call_index, replay, strict=True
        ):
            row = {
                "inputs": example,
                "call_index": index,
                "replay": recorded,
                "prompt": prompt if isinstance(prompt, list) else None,
            }
            score = self.scorer.score(row, completion_text(completion))
            scores.append(score.format if self.__name__ == FORMAT else score.rewards.get(self.__name__))
        return scores

    def __repr__(self) -> str:
        return f"GRPOReward({self.__name__})"


def grpo_reward_funcs(program: Any, rewards: Any, adapter: dspy.Adapter) -> list[GRPOReward]:
    """``[format, *task rewards]`` for ``GRPOTrainer(reward_funcs=...)``, sharing one `ReplayScorer`.

    Args:
        program: the task's program (``MODULE:ATTR`` or ``dspy.Module``).
        rewards: the task's rewards (spec, function, ``{name: fn}``, DSPy metric) or None.
        adapter: the student's adapter (the one whose prompts the export recorded).
    """
    scorer = ReplayScorer(program, rewards, adapter)
    names = [FORMAT, *(n for n in scorer.reward_names if n != FORMAT)]
    return [GRPOReward(scorer, name) for name in names]
