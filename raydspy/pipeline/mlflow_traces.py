"""Rollout rows as MLflow traces: one trace per rollout, one span per LM call, built from what
the row recorded, so the MLflow UI shows a collection run's rollouts as it shows the traces of
``mlflow.dspy.autolog()``.

The spans follow what MLflow's DSPy callback (``mlflow.dspy.callback.MlflowCallback``) records
for a live program, from the rollout row (`raydspy.core.rollouts.ROLLOUT_SCHEMA`) instead:

    OrderAssistant.forward   CHAIN (AGENT for ReAct, LLM for a bare Predict): the program
      inputs   the program's input fields of the row's ``inputs``
      outputs  the row's ``outputs`` (null when the rollout failed)
      attributes  every other column of the row: rollout_id, example_id, rollout_index, reward,
               rewards {name: value}, format_ok, error, dry_run, program_hash, teacher,
               created_at; example_fields (the example's other columns: labels, ids);
               mlflow.chat.tokenUsage (the calls' tokens added up); signature (Predict and
               ChainOfThought, as autolog sets it)
      status   ERROR with an exception event when the rollout failed
    ├─ extract             CHAT_MODEL: one LM call, named after the predictor that made it
    │    inputs   {"messages": [{"role", "content"}, ...]}     (as DSPy's LM.__call__ span)
    │    outputs  [completion]                                 (null when no completion came)
    │    attributes  every field of the trace item: predictor, signature, parse_error, format_ok,
    │             prompt_tokens, completion_tokens, latency_s, cached, model, error; parsed (the
    │             adapter's parse of the completion); call_index; model_type "chat";
    │             mlflow.message.format "dspy" (the UI renders the messages as a chat);
    │             mlflow.llm.model, mlflow.llm.provider, mlflow.chat.tokenUsage
    │    status   ERROR with an exception event when the call raised, or when its parse error
    │             ended the rollout (the last call of a failed rollout)
    └─ confirm             ...

Autolog also has a span per module call (``Predict.forward``) and per adapter format and parse;
a row records LM calls, not module calls (ChatAdapter's JSON fallback makes two LM calls in one
``Predict.forward``), so each LM call is one span under the program's, its parse on it.

Times: a row stores when the rollout finished (``created_at``) and each call's latency. The calls
are laid back to back, ending at ``created_at``, and the program's span covers them: true
durations, start times exact to within the (small) time spent outside LM calls.

Rewards are also logged as MLflow feedback on each trace (`reward_feedback`: ``reward`` and each
named reward, source CODE ``raydspy``), which the UI's Traces table shows as columns.

Each trace is tagged with the MLflow run (trace metadata ``mlflow.sourceRun``), so it shows in
that run's Traces tab, and with ``raydspy.rollout_id`` and ``raydspy.example_id`` (trace tags,
searchable: ``tags.`raydspy.example_id` = '...'``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dspy

__all__ = ["ProgramSpan", "SpanSpec", "rollout_spans", "log_rollout_traces", "reward_feedback"]

logger = logging.getLogger(__name__)

#: MLflow's names (``mlflow.tracing.constant``, ``mlflow.entities.SpanType``), spelled here so
#: this module builds spans without importing MLflow (the ``service`` extra).
SOURCE_RUN = "mlflow.sourceRun"
MESSAGE_FORMAT = "mlflow.message.format"
LLM_MODEL = "mlflow.llm.model"
LLM_PROVIDER = "mlflow.llm.provider"
CHAT_USAGE = "mlflow.chat.tokenUsage"
CHAIN, AGENT, LLM, CHAT_MODEL = "CHAIN", "AGENT", "LLM", "CHAT_MODEL"

#: Columns of the row that become the root span's inputs and outputs, or its child spans.
_ROOT_DATA = ("inputs", "outputs", "trace")
#: Columns that become no attribute: ``trace_tokens`` (``--record-logprobs``) holds every token id
#: and logprob of every call, tens of KB a rollout, which a span's attributes are not for (the
#: rollouts keep them, and the call spans keep the token counts).
_NOT_ATTRIBUTES = (*_ROOT_DATA, "trace_tokens")
#: Fields of a trace item that become the call span's inputs and outputs.
_CALL_DATA = ("messages", "completion", "outputs")


@dataclass(frozen=True)
class ProgramSpan:
    """What the root span says of the program (the row does not name it).

    Attributes:
        name: the span's name, ``<program class>.forward`` as autolog names a module's call.
        span_type: CHAIN; AGENT for ReAct, LLM for a bare Predict (autolog's choice).
        input_fields: the program's input fields: the root span's inputs (other example
            columns go to the ``example_fields`` attribute); empty: every column is an input.
        attributes: set on every root span (``signature`` for Predict and ChainOfThought).
    """

    name: str = "Module.forward"
    span_type: str = CHAIN
    input_fields: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, program: dspy.Module) -> ProgramSpan:
        """The root span of ``program``'s rollouts, named and typed as autolog would."""
        from raydspy.core.program import program_input_fields
        from raydspy.errors import ConfigError

        try:
            fields = tuple(program_input_fields(program))
        except ConfigError:
            fields = ()
        if isinstance(program, dspy.ReAct):
            span_type = AGENT
        elif isinstance(program, dspy.Predict):
            span_type = LLM
        else:
            span_type = CHAIN
        attributes = {}
        signature = getattr(program, "signature", None) or getattr(getattr(program, "predict", None), "signature", None)
        if isinstance(program, (dspy.Predict, dspy.ChainOfThought)) and signature is not None:
            attributes["signature"] = signature.signature
        return cls(f"{type(program).__name__}.forward", span_type, fields, attributes)


@dataclass(frozen=True)
class SpanSpec:
    """One span to log: what `rollout_spans` builds and `log_rollout_traces` sends.

    Attributes:
        start_ns, end_ns: nanoseconds since the Unix epoch.
        error: ``"Type: message"`` when the span failed (status ERROR, with an exception event),
            else None (status OK).
    """

    name: str
    span_type: str
    inputs: Any
    outputs: Any
    attributes: dict[str, Any]
    start_ns: int
    end_ns: int
    error: str | None = None


def _json(text: str | None) -> Any:
    """A JSON column's value (``inputs``, ``outputs``, a call's parse), or the text itself when
    it is not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _epoch_ns(when: dt.datetime | None) -> int:
    if when is None:
        return time.time_ns()
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1) * 1000


def _usage(prompt_tokens: int | None, completion_tokens: int | None) -> dict[str, int] | None:
    """MLflow's token usage attribute (``mlflow.chat.tokenUsage``); None when no count is known."""
    if prompt_tokens is None and completion_tokens is None:
        return None
    inputs, outputs = prompt_tokens or 0, completion_tokens or 0
    return {"input_tokens": inputs, "output_tokens": outputs, "total_tokens": inputs + outputs}


def _column(value: Any) -> Any:
    """A row's value as an attribute: a map column (``rewards``) as a dict, a time as ISO 8601."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return dict(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _call_span(index: int, call: Mapping[str, Any], start_ns: int, end_ns: int, *, ended_rollout: bool) -> SpanSpec:
    model = call.get("model")
    attributes = {k: _column(v) for k, v in call.items() if k not in _CALL_DATA}
    attributes.update(call_index=index, parsed=_json(call.get("outputs")), model_type="chat")
    attributes[MESSAGE_FORMAT] = "dspy"
    if model:
        attributes[LLM_MODEL] = model
        if "/" in model:
            attributes[LLM_PROVIDER] = model.split("/", 1)[0]
    if (usage := _usage(call.get("prompt_tokens"), call.get("completion_tokens"))) is not None:
        attributes[CHAT_USAGE] = usage
    completion = call.get("completion")
    error = call.get("error") or (call.get("parse_error") if ended_rollout else None)
    return SpanSpec(
        name=call.get("predictor") or "LM.__call__",
        span_type=CHAT_MODEL,
        inputs={"messages": [dict(m) for m in call.get("messages") or []]},
        outputs=None if completion is None else [completion],
        attributes=attributes,
        start_ns=start_ns,
        end_ns=end_ns,
        error=error,
    )


def rollout_spans(row: Mapping[str, Any], program: ProgramSpan = ProgramSpan()) -> list[SpanSpec]:
    """The spans of one rollout row (a `ROLLOUT_SCHEMA` row as a dict, ``Table.to_pylist``):
    the program's first, then one per LM call in call order (the module docstring's layout).

    Pure: no MLflow needed; `log_rollout_traces` sends them.
    """
    calls = list(row.get("trace") or [])
    end_ns = _epoch_ns(row.get("created_at"))
    # Back to back, ending when the rollout finished: walk the calls from the last one.
    bounds, cursor = [], end_ns
    for call in reversed(calls):
        latency_ns = int(max(call.get("latency_s") or 0.0, 0.0) * 1e9)
        bounds.append((cursor - latency_ns, cursor))
        cursor -= latency_ns
    bounds.reverse()
    failed = row.get("error") is not None
    children = [
        _call_span(i, call, start, end, ended_rollout=failed and i == len(calls) - 1)
        for i, (call, (start, end)) in enumerate(zip(calls, bounds, strict=True))
    ]

    inputs = _json(row.get("inputs")) or {}
    if isinstance(inputs, dict) and program.input_fields and any(f in inputs for f in program.input_fields):
        program_inputs = {k: v for k, v in inputs.items() if k in program.input_fields}
        example_fields = {k: v for k, v in inputs.items() if k not in program.input_fields}
    else:
        program_inputs, example_fields = inputs, {}
    attributes = {k: _column(v) for k, v in row.items() if k not in _NOT_ATTRIBUTES}
    if "rewards" in row:  # a map column: pairs, none when the run has no named rewards
        attributes["rewards"] = dict(row["rewards"] or [])
    attributes.update(program.attributes, example_fields=example_fields)
    usage = _usage(
        sum(c.get("prompt_tokens") or 0 for c in calls)
        if any(c.get("prompt_tokens") is not None for c in calls)
        else None,
        sum(c.get("completion_tokens") or 0 for c in calls)
        if any(c.get("completion_tokens") is not None for c in calls)
        else None,
    )
    if usage is not None:
        attributes[CHAT_USAGE] = usage
    root = SpanSpec(
        name=program.name,
        span_type=program.span_type,
        inputs=program_inputs,
        outputs=_json(row.get("outputs")),
        attributes=attributes,
        start_ns=cursor,
        end_ns=end_ns,
        error=row.get("error"),
    )
    return [root, *children]


def _exception_event(error: str) -> Any:
    from mlflow.entities import SpanEvent

    kind, _, message = error.partition(": ")
    return SpanEvent(name="exception", attributes={"exception.type": kind, "exception.message": message or kind})


def _end(span: Any, spec: SpanSpec) -> None:
    if spec.error is not None:
        span.add_event(_exception_event(spec.error))
    span.end(outputs=spec.outputs, status="ERROR" if spec.error is not None else "OK", end_time_ns=spec.end_ns)


def log_rollout_traces(
    rows: Iterable[Mapping[str, Any]],
    program: ProgramSpan = ProgramSpan(),
    *,
    run_id: str | None = None,
    experiment_id: str | None = None,
) -> list[str]:
    """Log one MLflow trace per row (`rollout_spans`), in the tracking store MLflow is set to,
    and wait until they are written.

    Args:
        rows: `ROLLOUT_SCHEMA` rows as dicts.
        program: the root span's name, type and input fields (`ProgramSpan.of`).
        run_id: the MLflow run the traces belong to (``mlflow.sourceRun``); None: the active run,
            if any, as MLflow links traces by default.
        experiment_id: the experiment to log to; None: MLflow's active experiment.

    Returns:
        The ids of the traces logged, in row order. MLflow turns its own failures into warnings
        and no-op spans (tracing disabled, a store that refuses a trace): those rows have none.
    """
    import mlflow
    from mlflow.entities.span import NO_OP_SPAN_TRACE_ID

    trace_ids, scored = [], []
    for row in rows:
        root_spec, *call_specs = rollout_spans(row, program)
        root = mlflow.start_span_no_context(
            root_spec.name,
            span_type=root_spec.span_type,
            inputs=root_spec.inputs,
            attributes=root_spec.attributes,
            tags={"raydspy.rollout_id": str(row.get("rollout_id")), "raydspy.example_id": str(row.get("example_id"))},
            metadata={SOURCE_RUN: run_id} if run_id else None,
            experiment_id=experiment_id,
            start_time_ns=root_spec.start_ns,
        )
        for spec in call_specs:
            child = mlflow.start_span_no_context(
                spec.name,
                span_type=spec.span_type,
                parent_span=root,
                inputs=spec.inputs,
                attributes=spec.attributes,
                start_time_ns=spec.start_ns,
            )
            _end(child, spec)
        _end(root, root_spec)
        if root.trace_id != NO_OP_SPAN_TRACE_ID:
            trace_ids.append(root.trace_id)
            scored.append((root.trace_id, root_spec.attributes))
    # MLflow writes traces from a background queue: the caller may end the run (or the process)
    # next, and feedback needs its trace stored, so wait for them here.
    mlflow.flush_trace_async_logging()
    _log_rewards(scored)
    return trace_ids


def reward_feedback(attributes: Mapping[str, Any]) -> dict[str, float]:
    """The rewards of a root span's attributes as MLflow feedback: ``reward`` (the combined one)
    and each named reward under its name; a reward without a value (it raised) is left out."""
    named = {name: value for name, value in (attributes.get("rewards") or {}).items() if value is not None}
    combined = attributes.get("reward")
    return {**({"reward": combined} if combined is not None else {}), **named}


def _log_rewards(scored: list[tuple[str, Mapping[str, Any]]]) -> None:
    """Each trace's rewards as feedback (assessments from CODE, source ``raydspy``), which the
    MLflow UI shows as columns of the Traces table, as it shows scorers' results.

    A store that takes traces but not assessments (an older tracking server) gets a warning.
    """
    import mlflow
    from mlflow.entities import AssessmentSource
    from mlflow.exceptions import MlflowException

    source = AssessmentSource(source_type="CODE", source_id="raydspy")
    try:
        for trace_id, attributes in scored:
            for name, value in reward_feedback(attributes).items():
                mlflow.log_feedback(trace_id=trace_id, name=name, value=value, source=source)
    except MlflowException as e:
        logger.warning("MLflow traces logged without their rewards as feedback: %s", e)
