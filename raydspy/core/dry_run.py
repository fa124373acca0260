"""A true dry run: prompts formatted by the program's own adapter, and no LM called, ever.

`DryRunLM` stands in for every LM of the program during a dry run. When the program makes its
first LM call, the adapter has already formatted the messages; the trace recorder keeps them and
`DryRunLM` stops the rollout by raising `DryRunHalt` instead of calling a model. That makes the
recorded messages exactly what a real run would send, ready to serve as GRPO prompts:
``Collect.collect(examples, dry_run=True)`` returns one `FormattedPrompt` per rollout, and
``raydspy export grpo`` reads dry-run rows as prompts.

What a dry run cannot do: format the prompt of a later predictor whose inputs are an earlier
predictor's outputs (ReAct's next step, a two-stage pipeline). Those need model output, so a dry
run records the first call of each rollout and reports the predictors it could not reach.
"""

from __future__ import annotations

from typing import Any

import dspy
from dspy.utils.callback import with_callbacks

__all__ = ["DryRunHalt", "DryRunLM", "FormattedPrompt"]


class DryRunHalt(Exception):
    """Raised by `DryRunLM` where a real LM would have been called; not an error."""


class DryRunLM(dspy.BaseLM):
    """An LM that never calls a model. Calling it raises `DryRunHalt` after the trace recorder
    (and any callbacks) have seen the formatted messages."""

    def __init__(self, model: str = "dry-run"):
        super().__init__(model=model, model_type="chat", temperature=0.0, max_tokens=1)

    @with_callbacks  # other callbacks (the user's) see the formatted prompt too
    def __call__(self, prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None, **kwargs: Any):
        raise DryRunHalt("dry run: prompt formatted, no LM called")

    @with_callbacks
    async def acall(self, prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None, **kwargs: Any):
        raise DryRunHalt("dry run: prompt formatted, no LM called")

    def forward(self, *args: Any, **kwargs: Any):  # pragma: no cover - __call__ never gets here
        raise DryRunHalt("dry run: no LM called")

    def copy(self, **kwargs: Any) -> DryRunLM:
        return DryRunLM(self.model)  # a fresh one: each rollout attaches its own trace recorder


class FormattedPrompt(dspy.Prediction):
    """A dry run's prediction: the first LM call of a rollout, formatted and not sent.

    Attributes:
        messages: the chat messages, ``[{"role": str, "content": str}]``, exactly as a real run sends them.
        predictor: the dotted name of the predictor that made the call.
        signature: its signature, ``"in1, in2 -> out1, out2"``.
    """

    @classmethod
    def of(cls, call: Any) -> FormattedPrompt:
        """The prompt of a traced call (`raydspy.core.tracing.LMCall`)."""
        return cls(messages=call.messages, predictor=call.predictor, signature=call.signature)
