"""Bounded retries with exponential back-off and full jitter, for the teacher and for storage.

Which failures are worth retrying is decided by the library that raised them: DSPy classifies
LM errors (`dspy.utils.exceptions.is_retryable_lm_error`: rate limits, time-outs, 5xx, dropped
or refused connections), pyarrow's filesystems raise ``OSError`` for I/O failures. The waiting is
tenacity's ``wait_random_exponential`` ("full jitter", AWS Architecture Blog, "Exponential Backoff
And Jitter", 2015): attempt k waits a uniform random time in [0, min(max_s, initial_s * 2**k)],
so thousands of clients that failed together do not retry together when a teacher comes back.

DSPy retries LM calls itself, but with fixed delays (1, 2, 4 … s, no jitter); `RetryingLM` turns
that off (``num_retries=0``) and retries around each whole call instead, so every attempt also
passes through DSPy's callbacks and a rollout's trace shows the failed attempts before the one
that answered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RetryPolicy", "retry_call"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RetryPolicy(BaseModel):
    """How long to keep trying before a failure counts.

    Attempt k (0-based) waits uniform(0, min(max_wait_s, initial_wait_s * 2**k)) seconds; a
    ``Retry-After`` hint from a 429 or 503 is honoured as a floor. Retrying stops after
    ``max_attempts`` attempts or once ``deadline_s`` seconds have passed since the first.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(8, ge=1, description="Attempts in all, the first included.")
    initial_wait_s: float = Field(1.0, gt=0, description="Back-off scale in seconds.")
    max_wait_s: float = Field(30.0, gt=0, description="Longest single wait in seconds.")
    deadline_s: float = Field(
        900.0,
        gt=0,
        description="Give up this many seconds after the first attempt. Longer than the teacher's "
        "request timeout (`TeacherConfig.timeout_s`, 600 s), so a request that timed out is tried once more.",
    )

    def retrying(self, retry_if: Callable[[BaseException], bool], what: str) -> tenacity.Retrying:
        """A tenacity ``Retrying`` that follows this policy and logs each retry."""
        return tenacity.Retrying(**self._tenacity_kwargs(retry_if, what))

    def async_retrying(self, retry_if: Callable[[BaseException], bool], what: str) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(**self._tenacity_kwargs(retry_if, what))

    def _tenacity_kwargs(self, retry_if: Callable[[BaseException], bool], what: str) -> dict[str, Any]:
        jitter = tenacity.wait_random_exponential(multiplier=self.initial_wait_s, max=self.max_wait_s)

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            hint = getattr(error, "retry_after", None)
            floor = float(hint) if isinstance(hint, (int, float)) and 0 < hint <= self.max_wait_s else 0.0
            return max(floor, jitter(state))

        def log(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            logger.info(
                "%s failed (attempt %d): %s; retrying in %.1f s",
                what,
                state.attempt_number,
                type(error).__name__,
                state.upcoming_sleep,
            )

        return {
            "retry": tenacity.retry_if_exception(retry_if),
            "wait": wait,
            "stop": tenacity.stop_after_attempt(self.max_attempts) | tenacity.stop_after_delay(self.deadline_s),
            "before_sleep": log,
            "reraise": True,
        }


def retry_call(
    policy: RetryPolicy,
    fn: Callable[..., T],
    *args: Any,
    retry_if: Callable[[BaseException], bool],
    what: str,
    **kwargs: Any,
) -> T:
    """``fn(*args, **kwargs)``, retried under ``policy`` while ``retry_if(error)`` holds.

    Raises:
        The last error once the policy gives up, or at once an error ``retry_if`` rejects.
    """
    return policy.retrying(retry_if, what)(fn, *args, **kwargs)
