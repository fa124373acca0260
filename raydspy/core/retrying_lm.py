"""The teacher's LM with retries: which LM errors are transient, and a ``dspy.LM`` that retries them
under a `RetryPolicy` (`raydspy.core.retries`, which imports no DSPy, so the CLI's ``--help`` and
`TeacherConfig` stay light)."""

from __future__ import annotations

from typing import Any

import dspy
from dspy.utils.exceptions import is_retryable_lm_error

from raydspy.core.retries import RetryPolicy, retry_call

__all__ = ["RetryingLM", "is_transient_lm_error"]


def is_transient_lm_error(error: BaseException | None) -> bool:
    """True when ``error``, or an error it was raised from, is one DSPy deems retryable: the
    teacher was unreachable, overloaded or too slow, not that the request or program was wrong.

    Rollouts that fail this way are worth running again later; rollouts that fail otherwise
    (a completion that does not parse, a bug in the program) would fail the same way again.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        if is_retryable_lm_error(error):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


class RetryingLM(dspy.LM):
    """A ``dspy.LM`` that retries transient failures under a `RetryPolicy`, with jitter.

    Built like ``dspy.LM`` plus ``retry_policy=``; DSPy's own retry loop is turned off
    (``num_retries`` is forced to 0), so the policy alone decides. ``copy()`` keeps the policy.
    """

    def __init__(self, model: str, *, retry_policy: RetryPolicy | None = None, **kwargs: Any):
        kwargs["num_retries"] = 0
        super().__init__(model, **kwargs)
        self.retry_policy = retry_policy or RetryPolicy()

    def __call__(self, prompt: str | None = None, *, messages: list | None = None, **kwargs: Any) -> Any:
        call = super().__call__
        return retry_call(
            self.retry_policy,
            call,
            prompt,
            messages=messages,
            retry_if=is_retryable_lm_error,
            what=f"LM call to {self.model}",
            **kwargs,
        )

    async def acall(self, prompt: str | None = None, *, messages: list | None = None, **kwargs: Any) -> Any:
        call = super().acall
        retrying = self.retry_policy.async_retrying(is_retryable_lm_error, f"LM call to {self.model}")
        return await retrying(call, prompt, messages=messages, **kwargs)
