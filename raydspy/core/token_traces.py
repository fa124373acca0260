"""Token-level traces: what the teacher's tokenizer made of an LM call, and how likely each
completion token was, as vLLM's OpenAI-compatible server reports them.

Text-only traces are not enough for on-policy training: tokenising a completion again may not
give the tokens the teacher sampled (merges differ at the boundary of the prompt, or where the
text was cut). With `TokenRequest` on, each LM call asks vLLM for

| request parameter            | what comes back (vLLM 0.32, chat completions)                         |
| ---------------------------- | --------------------------------------------------------------------- |
| ``logprobs: true``           | ``choices[0].logprobs.content[i].logprob``: the sampled token's logprob |
| ``top_logprobs: K + 1``      | ``content[i].top_logprobs``: alternatives (see `TokenRequest`)         |
| ``return_token_ids: true``   | ``prompt_token_ids`` (top level), ``choices[0].token_ids``             |
| ``return_tokens_as_token_ids: true`` | every ``token`` spelled ``"token_id:N"``, so alternatives carry ids |

The last two are vLLM's own, sent in ``extra_body``. DSPy's native client (lm15) cannot carry
``extra_body``, so DSPy sends such calls through LiteLLM, which keeps ``prompt_token_ids`` on the
response and moves ``token_ids`` to ``choices[0].provider_specific_fields``; `parse_token_trace`
reads either shape, and the raw JSON. The logprobs are the model's own (vLLM's default
``logprobs_mode``, ``raw_logprobs``): before temperature, top-p or structured-output masking.

`TokenTrace` is one call's data; the rollout row stores one per traced call in its
``trace_tokens`` column (`raydspy.core.rollouts`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raydspy.errors import ConfigError

__all__ = [
    "MAX_TOP_LOGPROBS",
    "TokenRequest",
    "TokenTrace",
    "token_request",
    "parse_token_trace",
    "without_logprobs",
]

logger = logging.getLogger(__name__)

#: The most alternatives a call can record: vLLM serves at most ``max_logprobs`` (20 by default)
#: per token, and `TokenRequest` asks for one more than it keeps.
MAX_TOP_LOGPROBS = 19

_TOKEN_ID_PREFIX = "token_id:"


@dataclass(frozen=True)
class TokenRequest:
    """Record token-level traces: the request parameters that ask for them, and how many
    alternatives per completion token to keep.

    vLLM lists a position's alternatives with the *sampled* token first, then the most likely
    ones (``vllm/logprobs.py``, ``append_logprobs_for_next_position``), and cuts the list at
    ``top_logprobs``. When the sampled token is not among the K most likely (often, at
    temperature 1), asking for K would return the sampled token and only K - 1 of the K most likely,
    unsorted. So the request asks for K + 1, and `parse_token_trace` sorts them and keeps the best
    K: these are then exactly the K most likely tokens, whatever was sampled.

    Attributes:
        top_logprobs: alternatives to keep per completion token (0: none, only the sampled
            token's logprob); at most `MAX_TOP_LOGPROBS`.

    Raises:
        ValueError: ``top_logprobs`` outside 0 … `MAX_TOP_LOGPROBS`.
    """

    top_logprobs: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs must be in 0 … {MAX_TOP_LOGPROBS}, got {self.top_logprobs}")

    def lm_kwargs(self, extra_body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The request parameters of a ``dspy.LM`` call that records tokens; ``extra_body`` is
        the LM's own (kept, with vLLM's token-id switches added)."""
        kwargs: dict[str, Any] = {
            "logprobs": True,
            "extra_body": {**(extra_body or {}), "return_token_ids": True, "return_tokens_as_token_ids": True},
        }
        if self.top_logprobs:
            kwargs["top_logprobs"] = self.top_logprobs + 1
        return kwargs


def token_request(record_logprobs: bool, top_logprobs: int = 0) -> TokenRequest | None:
    """The `TokenRequest` of the ``record_logprobs`` / ``top_logprobs`` settings (CLI flags,
    `raydspy.Collect` arguments), or None when recording is off.

    Raises:
        ConfigError: ``top_logprobs`` outside 0 … `MAX_TOP_LOGPROBS`, or above 0 without
            ``record_logprobs``.
    """
    if top_logprobs and not record_logprobs:
        raise ConfigError(
            f"top_logprobs={top_logprobs} keeps alternatives of recorded tokens: turn record_logprobs on too "
            "(--record-logprobs)"
        )
    if not record_logprobs:
        return None
    try:
        return TokenRequest(top_logprobs)
    except ValueError as e:
        raise ConfigError(str(e)) from e


@dataclass
class TokenTrace:
    """The tokens of one LM call. Every list is None when the server did not return it.

    Attributes:
        prompt_token_ids: the prompt as the teacher tokenised it (chat template applied),
            ``[prompt_len]``.
        completion_token_ids: the tokens sampled, ``[completion_len]`` (an end-of-sequence
            token included when the model stopped on one; decoding with special tokens skipped
            gives the completion text).
        completion_logprobs: the natural-log probability of each sampled token,
            ``[completion_len]``, each <= 0.
        top_token_ids, top_logprobs: the ``K`` most likely tokens at each completion position and
            their logprobs, most likely first, ``[completion_len][K]``; None unless asked for.
    """

    prompt_token_ids: list[int] | None = None
    completion_token_ids: list[int] | None = None
    completion_logprobs: list[float] | None = None
    top_token_ids: list[list[int]] | None = None
    top_logprobs: list[list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _get(obj: Any, key: str) -> Any:
    """``obj[key]`` of a dict, ``obj.key`` of an object (LiteLLM's pydantic models), else None."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _token_id(token: Any) -> int | None:
    """``N`` of vLLM's ``"token_id:N"`` spelling, else None."""
    if isinstance(token, str) and token.startswith(_TOKEN_ID_PREFIX):
        try:
            return int(token[len(_TOKEN_ID_PREFIX) :])
        except ValueError:
            return None
    return None


def _ids(values: Any) -> list[int] | None:
    return [int(v) for v in values] if isinstance(values, Sequence) and not isinstance(values, str) else None


def _top(content: Sequence[Any], k: int) -> tuple[list[list[int]], list[list[float]]] | None:
    """The ``k`` most likely alternatives of each position, sorted; None when a position's
    alternatives carry no ids (a server that ignored ``return_tokens_as_token_ids``)."""
    ids, logprobs = [], []
    for position in content:
        ranked = []
        for alternative in _get(position, "top_logprobs") or []:
            token_id = _token_id(_get(alternative, "token"))
            if token_id is None:
                return None
            ranked.append((float(_get(alternative, "logprob")), token_id))
        ranked.sort(key=lambda pair: -pair[0])  # stable: equal logprobs keep the server's order
        ids.append([token_id for _, token_id in ranked[:k]])
        logprobs.append([logprob for logprob, _ in ranked[:k]])
    return ids, logprobs


def parse_token_trace(response: Any, top_logprobs: int = 0) -> TokenTrace | None:
    """The token data in a chat completion ``response`` (its first choice), or None if it has none.

    Args:
        response: what the LM's history holds as ``response``: LiteLLM's ``ModelResponse``,
            DSPy's native ``lm15`` ``Response`` (its ``provider_data`` is the raw body), or the
            JSON body as a dict.
        top_logprobs: alternatives to keep per completion token (`TokenRequest.top_logprobs`).

    Returns:
        The call's `TokenTrace`. Completion token ids come from ``token_ids``, else from the
        ``"token_id:N"`` tokens of the logprobs. If the server returned as many logprobs as
        token ids, the logprobs are kept; if not (no server seen does this), they are dropped
        with a warning rather than stored misaligned.
    """
    raw = _get(response, "provider_data")
    if isinstance(raw, Mapping) and "choices" in raw:
        response = raw
    choices = _get(response, "choices") or []
    if not choices:
        return None
    choice = choices[0]
    completion_ids = _ids(_get(choice, "token_ids")) or _ids(
        _get(_get(choice, "provider_specific_fields"), "token_ids")
    )
    content = _get(_get(choice, "logprobs"), "content")
    trace = TokenTrace(prompt_token_ids=_ids(_get(response, "prompt_token_ids")))
    if content:
        if completion_ids is None:
            spelled = [_token_id(_get(position, "token")) for position in content]
            completion_ids = None if None in spelled else spelled
        if completion_ids is not None and len(completion_ids) != len(content):
            logger.warning(
                "the teacher returned %d completion token ids but %d logprobs: logprobs not recorded",
                len(completion_ids),
                len(content),
            )
        else:
            trace.completion_logprobs = [float(_get(position, "logprob")) for position in content]
            top = _top(content, top_logprobs) if top_logprobs else None
            if top is not None:
                trace.top_token_ids, trace.top_logprobs = top
    trace.completion_token_ids = completion_ids
    if all(value is None for value in trace.__dict__.values()):
        return None
    return trace


def without_logprobs(outputs: Any) -> Any:
    """An LM's outputs as DSPy returns them when no logprobs were asked for.

    With ``logprobs`` requested, ``dspy.LM`` returns ``[{"text": ..., "logprobs": ...}]`` and
    the adapter copies the logprobs into the program's prediction (and so into the rollout's
    ``outputs``). The recorder keeps them in the trace instead, and hands the adapter this, so a
    program sees the same outputs whether tokens are recorded or not.
    """
    if not isinstance(outputs, list):
        return outputs
    stripped = [
        {k: v for k, v in output.items() if k != "logprobs"} if isinstance(output, dict) else output
        for output in outputs
    ]
    # DSPy's own rule (BaseLM._process_completion): choices that are only text are plain strings.
    if all(isinstance(output, dict) and set(output) == {"text"} for output in stripped):
        return [output["text"] for output in stripped]
    return stripped
