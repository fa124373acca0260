"""The trace of one rollout: every LM call it made, in order, with who made it and what came back.

A `TraceRecorder` is a DSPy callback installed on one rollout's own LM copy and adapter copy,
which only that rollout's thread calls, so calls made by other rollouts can never land in its trace.
It sees, per LM call: the predictor that made it (the innermost ``dspy.Predict`` running), the
messages the adapter formatted, the raw completion, the adapter's parse of it (or the parse
error), token usage, latency and model; and, when asked (`raydspy.core.token_traces`), the
call's token ids and logprobs. ChatAdapter's JSON fallback makes a second LM call for the same
predictor: both calls are kept, the first with its parse error.
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

from raydspy.core.dry_run import DryRunHalt
from raydspy.core.token_traces import TokenRequest, TokenTrace, parse_token_trace, without_logprobs

__all__ = ["LMCall", "TraceRecorder", "predictor_names"]


@dataclass
class LMCall:
    """One LM call inside a rollout (one item of the rollout row's ``trace`` column).

    Attributes:
        predictor: dotted name of the predictor in the program (``named_predictors()``), e.g.
            ``"predict"`` for ChainOfThought, ``"react"`` / ``"extract.predict"`` for ReAct.
        signature: the predictor's signature as ``"in1, in2 -> out1, out2"``.
        messages: the chat messages sent, ``[{"role": ..., "content": ...}]``; non-text content
            is JSON-encoded.
        completion: the raw text the model returned; None when the call failed or in a dry run.
        outputs: the adapter's parse of the completion, JSON-encoded; None when it did not parse.
        parse_error: why the completion did not parse, else None.
        format_ok: True when the completion parsed into every output field (the format reward).
        prompt_tokens, completion_tokens: from the server's usage report; None if not reported.
        latency_s: wall time of the call in seconds, as seen by the client.
        cached: True when DSPy's cache answered (no request was sent; DSPy then reports no
            usage, so the token counts are None).
        model: the model name the LM was called with.
        error: ``"Type: message"`` when the LM call itself raised (connection, HTTP status, ...).
        tokens: the call's token ids and logprobs when the recorder asked for them, else None;
            not part of `to_dict` (the row keeps them apart, in ``trace_tokens``).
    """

    predictor: str | None
    signature: str | None
    messages: list[dict[str, str]]
    completion: str | None = None
    outputs: str | None = None
    parse_error: str | None = None
    format_ok: bool | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    cached: bool | None = None
    model: str | None = None
    error: str | None = None
    tokens: TokenTrace | None = None

    def to_dict(self) -> dict[str, Any]:
        """The call as a ``trace`` item of the rollout row (everything but ``tokens``)."""
        # Shallow: `dataclasses.asdict` deep-copies every message, a tenth of a rollout's CPU
        # time with an instant LM; the messages are already this call's own copies.
        item = dict(self.__dict__)
        del item["tokens"]
        return item


def predictor_names(program: dspy.Module) -> dict[int, str]:
    """``id(predictor) -> dotted name`` for every predictor of ``program``."""
    return {id(p): name for name, p in program.named_predictors()}


def _message_content(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, default=str)


def _completion_text(outputs: Any) -> str | None:
    """DSPy LMs return a list of choices: plain strings, or dicts with a ``text`` key."""
    if not outputs:
        return None
    first = outputs[0]
    if isinstance(first, str):
        return first
    if isinstance(first, dict):
        return first.get("text")
    return str(first)


def describe_error(exc: BaseException) -> str:
    """``"Type: message"``, one line, the form every error column uses."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


#: Ids pairing an LM call's start with its end in a recorder: a process-wide counter (``next`` on
#: it is atomic under the GIL). uuid4 took a quarter of a Collect actor's CPU against a fast teacher.
_CALL_IDS = itertools.count()


def _next_call_id() -> str:
    return str(next(_CALL_IDS))


@functools.cache
def _traced_class(cls: type) -> type:
    """``cls`` with its calls reported to the instance's ``_raydspy_recorder`` (see `attach`)."""

    def __call__(self, prompt=None, *, messages=None, **kwargs):
        recorder, call_id = self._raydspy_recorder, _next_call_id()
        recorder.on_lm_start(call_id, self, {"prompt": prompt, "messages": messages})
        try:
            outputs = super(traced, self).__call__(prompt, messages=messages, **kwargs)
        except BaseException as e:
            recorder.on_lm_end(call_id, None, e)
            raise
        recorder.on_lm_end(call_id, outputs, None)
        return without_logprobs(outputs) if recorder.tokens is not None else outputs

    async def acall(self, prompt=None, *, messages=None, **kwargs):
        recorder, call_id = self._raydspy_recorder, _next_call_id()
        recorder.on_lm_start(call_id, self, {"prompt": prompt, "messages": messages})
        try:
            outputs = await super(traced, self).acall(prompt, messages=messages, **kwargs)
        except BaseException as e:
            recorder.on_lm_end(call_id, None, e)
            raise
        recorder.on_lm_end(call_id, outputs, None)
        return without_logprobs(outputs) if recorder.tokens is not None else outputs

    traced = type(f"Traced{cls.__name__}", (cls,), {"__call__": __call__, "acall": acall, "__module__": cls.__module__})
    return traced


def _innermost_predictor() -> dspy.Predict | None:
    """The Predict now running in this thread: DSPy keeps the stack of modules being called in
    its thread-local settings (``caller_modules``), innermost last."""
    for module in reversed(dspy.settings.caller_modules or []):
        if isinstance(module, dspy.Predict):
            return module
    return None


@dataclass
class TraceRecorder(BaseCallback):
    """Collects the `LMCall`s of one rollout, in call order.

    Attach it to the rollout's *own* LM copy (`attach`) and adapter copy (`watch_parse`), never to
    ``dspy.settings``, so no other rollout's calls reach it::

        recorder = TraceRecorder(predictor_names(program))
        lm = recorder.attach(teacher.copy(rollout_id=i))
        adapter = copy.copy(adapter); recorder.watch_parse(adapter)
        with dspy.context(lm=lm, adapter=adapter):
            program(**inputs)
        recorder.finish(failed=...)
        recorder.calls  # list[LMCall]

    It is also a DSPy callback (``on_lm_start`` / ``on_lm_end``), for LMs it is installed on
    through ``callbacks=[recorder]``. `attach` records the same events without DSPy's callback
    wrapper, whose ``inspect.getcallargs`` on every call was a fifth of a rollout's CPU time.

    With ``tokens`` (a `TokenRequest`), each answered call's token data is parsed from the LM's
    response into ``LMCall.tokens``; the LM itself must send the request's parameters (the
    runner's copy does: `raydspy.core.runner.RolloutRunner`). An LM attached with `attach` then
    hands the adapter its outputs without the logprobs, so the program's outputs are the same
    with tokens recorded or not.

    Not thread-safe by design: one rollout runs its predictors in one thread.
    """

    names: dict[int, str]
    tokens: TokenRequest | None = None
    calls: list[LMCall] = field(default_factory=list)
    _open: dict[str, tuple[LMCall, float, Any, list]] = field(default_factory=dict)

    def __hash__(self) -> int:  # callbacks are compared by identity
        return id(self)

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        predictor = _innermost_predictor()
        messages = inputs.get("messages") or [{"role": "user", "content": inputs.get("prompt") or ""}]
        call = LMCall(
            predictor=self.names.get(id(predictor)) if predictor is not None else None,
            signature=predictor.signature.signature if predictor is not None else None,
            messages=[{"role": m.get("role", ""), "content": _message_content(m.get("content"))} for m in messages],
            model=getattr(instance, "model", None),
        )
        self.calls.append(call)
        self._open[call_id] = (call, time.perf_counter(), instance, messages)

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        call, started, lm, messages = self._open.pop(call_id)
        call.latency_s = time.perf_counter() - started
        if isinstance(exception, DryRunHalt):
            return  # the prompt is what a dry run is for: no completion, no error
        if exception is not None:
            call.error = describe_error(exception)
            return
        call.completion = _completion_text(outputs)
        # Usage is not passed to callbacks; the LM's own history has it. Each rollout calls a
        # private copy of the LM, so its last entry is this call (checked by message identity).
        history = getattr(lm, "history", None)
        if history and history[-1].get("messages") is messages:
            usage = history[-1].get("usage") or {}
            call.cached = not usage  # DSPy records empty usage exactly for cache hits
            call.prompt_tokens = usage.get("prompt_tokens")
            call.completion_tokens = usage.get("completion_tokens")
            if self.tokens is not None:
                # A cache hit holds the response it answered with, token data included.
                call.tokens = parse_token_trace(history[-1].get("response"), self.tokens.top_logprobs)

    def attach(self, lm: dspy.BaseLM) -> dspy.BaseLM:
        """Record every call of ``lm`` (a rollout's private copy, changed in place and returned).

        The copy's class becomes a subclass of its own (so ``isinstance`` checks and ``copy()``
        still hold) whose ``__call__`` / ``acall`` record around the original ones.
        """
        lm.__class__ = _traced_class(type(lm))
        lm._raydspy_recorder = self
        return lm

    def watch_parse(self, adapter: dspy.Adapter) -> None:
        """Record the parse of each completion by ``adapter`` (this rollout's own copy).

        A wrapper on the instance rather than a DSPy callback: with a callback on the adapter,
        DSPy would also run its callback machinery (``inspect.getcallargs``) around ``format``,
        which the trace does not need; that machinery is most of Collect's overhead.
        """
        parse = adapter.parse

        def recording_parse(*args: Any, **kwargs: Any) -> Any:
            try:
                outputs = parse(*args, **kwargs)
            except Exception as e:
                self.on_adapter_parse_end("", None, e)
                raise
            self.on_adapter_parse_end("", outputs, None)
            return outputs

        adapter.parse = recording_parse

    def on_adapter_parse_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        if not self.calls:
            return
        call = self.calls[-1]
        if exception is not None:
            call.parse_error = describe_error(exception)
            call.format_ok = False
        else:
            call.outputs = json.dumps(outputs, default=str)
            call.format_ok = True

    def finish(self, *, failed: bool) -> None:
        """Settle ``format_ok`` of calls whose parse the recorder did not see.

        ChatAdapter's JSON fallback parses with a JSONAdapter it makes on the spot, which carries
        no callbacks. Such a call parsed exactly when the rollout went on: if it had not, its
        AdapterParseError would have ended the rollout, and it would be the last call.
        """
        for i, call in enumerate(self.calls):
            if call.format_ok is None and call.completion is not None:
                call.format_ok = not (failed and i == len(self.calls) - 1)
