"""The rollout code path: one program × one example × one rollout index → one `RolloutRecord`.

Everything that runs rollouts goes through `RolloutRunner`: `raydspy.Collect` in one process
(threads), the Ray Data pipeline's Collect actors (threads inside each actor), and the service.
So a rollout means the same thing, and has the same row, whoever ran it.

Per rollout the runner:
1. calls a private copy of the teacher LM, ``lm.copy(rollout_id=i, **sampling)``: with DSPy's
   cache on, each rollout index is its own cache key, so n rollouts are n real samples (and a
   re-run of the same rollout is a cache hit, not a second bill); when ``sampling`` has a
   ``seed``, the copy sends the rollout's own seed instead (`raydspy.core.identity.rollout_seed`);
   with ``tokens``, the copy also asks for token ids and logprobs (`raydspy.core.token_traces`);
2. attaches a `TraceRecorder` to that LM copy and to a copy of the adapter, both handed to the
   program through ``dspy.context`` (thread-local), so no other rollout's calls reach the trace;
3. runs the program; an exception (a parse failure, an HTTP error, a bug in the program) becomes
   the row's ``error`` and the run goes on;
4. scores the outputs with the `RewardSet`.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dspy

from raydspy.core.dry_run import DryRunHalt, DryRunLM, FormattedPrompt
from raydspy.core.identity import example_id, program_hash, rollout_id, rollout_seed
from raydspy.core.program import check_examples, detach_lms, program_input_fields
from raydspy.core.retrying_lm import is_transient_lm_error
from raydspy.core.rewards import RewardSet
from raydspy.core.rollouts import RolloutRecord
from raydspy.core.token_traces import TokenRequest
from raydspy.core.tracing import TraceRecorder, describe_error, predictor_names
from raydspy.errors import ConfigError

__all__ = ["RolloutRunner", "RolloutResult", "RolloutJob", "RolloutPlanner"]

logger = logging.getLogger(__name__)


@dataclass
class RolloutResult:
    """A rollout's row and, for in-process callers, the prediction itself (None if it failed).

    ``transient`` is True when the rollout failed because the teacher could not be reached (after
    the LM's retries): running it again later may succeed, so the pipeline does not commit it.
    """

    record: RolloutRecord
    prediction: dspy.Prediction | None
    transient: bool = False


@dataclass(frozen=True)
class RolloutJob:
    """One rollout to run: an example, its id, a rollout index, and the rollout's id."""

    example: Mapping[str, Any]
    example_id: str
    rollout_index: int
    rollout_id: str


@dataclass(frozen=True)
class RolloutPlanner:
    """Which rollouts a runner makes, and their ids, without the program or an LM.

    Small and picklable: the pipeline's planning stage (Ray Data tasks) computes rollout ids with
    it, so only the actors that run rollouts import the program.
    """

    program_hash: str
    teacher: str
    sampling: Mapping[str, Any]
    id_field: str | None = None

    def rollout_id(self, example_id_: str, rollout_index: int) -> str:
        """`raydspy.core.identity.rollout_id` of this program, teacher and sampling."""
        return rollout_id(self.program_hash, example_id_, rollout_index, self.teacher, self.sampling)

    def plan(self, examples: Sequence[Mapping[str, Any]], n: int) -> list[RolloutJob]:
        """The ``len(examples) * n`` rollouts of ``examples``, example-major (example 0's
        rollouts 0 … n-1 first, so job ``k`` is of example ``k // n``), each with its id."""
        jobs = []
        for example in examples:
            ex_id = example_id(example, self.id_field)
            jobs.extend(RolloutJob(example, ex_id, i, self.rollout_id(ex_id, i)) for i in range(n))
        return jobs


class RolloutRunner:
    """Runs rollouts of one program against one LM.

    Args:
        program: the DSPy program (any ``dspy.Module``).
        lm: the teacher; None means the LM configured in DSPy (``dspy.configure`` / ``dspy.context``)
            when the rollouts run.
        adapter: the adapter for every predictor; None keeps DSPy's configured one (ChatAdapter).
        rewards: a `RewardSet`, one reward function, or ``{name: function}``.
        sampling: request parameters for every LM call (``temperature``, ``max_tokens``, ...);
            part of each rollout id. A ``seed`` in it seeds the run: each rollout's calls send
            ``seed=rollout_seed(rollout_id)``, so a rollout sampled again samples the same.
        id_field: the examples' id column, if any (else ids hash the example's content).
        dry_run: format prompts only; never call an LM (see `raydspy.core.dry_run`).
        tokens: record each LM call's token ids and logprobs (the row's ``trace_tokens``); the
            teacher must be vLLM (or a server that takes its ``return_token_ids``). Not part of
            rollout ids: the samples are the same with or without it, so a run resumed with it
            on skips the rollouts already done, and records tokens for the rest.

    Raises:
        ConfigError: the program's input fields cannot be determined.
    """

    def __init__(
        self,
        program: dspy.Module,
        *,
        lm: dspy.BaseLM | None = None,
        adapter: dspy.Adapter | None = None,
        rewards: RewardSet | Callable | Mapping[str, Callable] | None = None,
        sampling: Mapping[str, Any] | None = None,
        id_field: str | None = None,
        dry_run: bool = False,
        tokens: TokenRequest | None = None,
    ):
        self.program = program
        self.lm = lm
        self.adapter = adapter
        self.rewards = rewards if isinstance(rewards, RewardSet) else RewardSet(rewards)
        self.sampling = dict(sampling or {})
        self.id_field = id_field
        self.dry_run = dry_run
        self.tokens = None if dry_run else tokens
        self.input_fields = program_input_fields(program)
        self.program_hash = program_hash(program, adapter)
        self._dry_lm = DryRunLM() if dry_run else None
        self._program = detach_lms(program)
        self._names = predictor_names(self._program)
        self._warned = threading.Event()
        self._unreached_reported = threading.Event()

    # -- one rollout -----------------------------------------------------------------------

    def run(
        self,
        example: Mapping[str, Any],
        rollout_index: int,
        *,
        example_id_: str | None = None,
        rollout_id_: str | None = None,
        lm: dspy.BaseLM | None = None,
    ) -> RolloutResult:
        """Run rollout ``rollout_index`` of ``example``; never raises for a failed rollout.
        ``example_id_`` and ``rollout_id_``, when planned already, save computing them again;
        ``lm`` replaces the runner's LM for this rollout (GRPO's replay, `raydspy.distill.replay`).

        In a dry run the prediction is a `FormattedPrompt`: the messages of the rollout's first
        LM call, as the adapter formatted them (None if the program failed before calling an LM)."""
        example = dict(example)
        ex_id = example_id_ or example_id(example, self.id_field)
        failure: Exception | None = None
        rollout_id_ = rollout_id_ or self.rollout_id(ex_id, rollout_index)
        recorder = TraceRecorder(self._names, tokens=self.tokens)
        lm = recorder.attach(self._rollout_lm(rollout_index, rollout_id_, lm))  # the rollout's own copy
        adapter = copy.copy(self.adapter or dspy.settings.adapter or dspy.ChatAdapter())
        recorder.watch_parse(adapter)
        prediction, outputs, error = None, None, None
        try:
            with dspy.context(lm=lm, adapter=adapter):
                prediction = self._program(**{f: example[f] for f in self.input_fields})
            outputs = dict(prediction.items())
        except DryRunHalt:
            pass
        except Exception as e:  # noqa: BLE001 - a failed rollout is a row, not a crashed run
            error, failure = describe_error(e), e
        recorder.finish(failed=error is not None)
        if self.dry_run:
            self._report_unreached(recorder)
            if error is None and recorder.calls:
                prediction = FormattedPrompt.of(recorder.calls[0])
        scored = self.rewards.score(example, outputs, recorder.calls) if not self.dry_run else None
        record = RolloutRecord(
            rollout_id=rollout_id_,
            example_id=ex_id,
            rollout_index=rollout_index,
            inputs=example,
            outputs=outputs,
            trace=recorder.calls,
            reward=scored.reward if scored else None,
            rewards=scored.rewards if scored else {},
            error=error or (scored.error if scored else None),
            dry_run=self.dry_run,
            program_hash=self.program_hash,
            teacher=self.teacher,
        )
        return RolloutResult(record, prediction if error is None else None, is_transient_lm_error(failure))

    def rollout_id(self, example_id_: str, rollout_index: int) -> str:
        """The id rollout ``rollout_index`` of example ``example_id_`` gets from this runner
        (`raydspy.core.identity.rollout_id` of its program, teacher and sampling)."""
        return self.planner.rollout_id(example_id_, rollout_index)

    @property
    def planner(self) -> RolloutPlanner:
        """This runner's rollout ids, as a small picklable object (the teacher is read now:
        with ``lm=None`` it is the LM DSPy has configured)."""
        return RolloutPlanner(self.program_hash, self.teacher, self.sampling, self.id_field)

    @property
    def teacher(self) -> str:
        if self.dry_run:
            return "dry-run"
        lm = self.lm or dspy.settings.lm
        return getattr(lm, "model", None) or "unknown"

    def _rollout_lm(self, rollout_index: int, rollout_id_: str, base: dspy.BaseLM | None = None) -> dspy.BaseLM:
        if self._dry_lm is not None:
            return self._dry_lm.copy()
        base = base or self.lm or dspy.settings.lm
        if base is None:
            raise ConfigError("no LM: pass `lm=` or call dspy.configure(lm=...) before collecting")
        kwargs = dict(self.sampling)
        if kwargs.get("seed") is not None:  # the run's seed names the run; each rollout sends its own
            kwargs["seed"] = rollout_seed(rollout_id_)
        if self.tokens is not None:
            kwargs.update(self.tokens.lm_kwargs(getattr(base, "kwargs", {}).get("extra_body")))
        return base.copy(rollout_id=rollout_index, **kwargs)

    # -- many rollouts ---------------------------------------------------------------------

    def plan(self, examples: Sequence[Mapping[str, Any]], n: int) -> list[RolloutJob]:
        """The ``len(examples) * n`` rollouts of ``examples`` (`RolloutPlanner.plan`)."""
        return self.planner.plan(examples, n)

    def run_many(
        self,
        examples: Sequence[Mapping[str, Any]],
        n: int,
        *,
        num_threads: int = 8,
        executor: Executor | None = None,
        on_result: Callable[[RolloutResult], None] | None = None,
    ) -> list[RolloutResult]:
        """Run ``n`` rollouts of each example, ``num_threads`` at a time (or on ``executor``).

        Args:
            examples: dicts holding at least the program's input fields.
            n: rollouts per example.
            num_threads: size of the thread pool made for this call (ignored with ``executor``).
            executor: a pool shared across calls, as a Collect actor does for its batches.
            on_result: called from a worker thread as each rollout finishes (progress).

        Returns:
            ``len(examples) * n`` results, example-major: all rollouts of example 0 (index
            0 … n-1), then example 1, ... whatever order they finished in.

        Raises:
            InputError: an example lacks a field the program takes (before any LM call).
            ConfigError: ``n`` or ``num_threads`` is below 1, or no LM is configured.
        """
        if n < 1:
            raise ConfigError(f"n must be >= 1, got n={n}")
        check_examples(examples, self.input_fields)
        return self.run_jobs(
            self.plan(examples, n), n=n, num_threads=num_threads, executor=executor, on_result=on_result
        )

    def run_jobs(
        self,
        jobs: Sequence[RolloutJob],
        *,
        n: int = 1,
        num_threads: int = 8,
        executor: Executor | None = None,
        on_result: Callable[[RolloutResult], None] | None = None,
    ) -> list[RolloutResult]:
        """Run planned rollouts (`plan`, perhaps with some left out); results in ``jobs`` order.

        ``n`` is only used to warn when n > 1 samples at temperature 0 will be identical.

        Raises:
            ConfigError: ``num_threads`` is below 1, or no LM is configured.
        """
        if num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1, got num_threads={num_threads}")
        if not jobs:
            return []
        if not self.dry_run:
            self._rollout_lm(0, jobs[0].rollout_id)  # fail now, not once per rollout, when no LM is configured
            self._warn_identical_samples(n)

        def work(job: RolloutJob) -> RolloutResult:
            result = self.run(job.example, job.rollout_index, example_id_=job.example_id, rollout_id_=job.rollout_id)
            if on_result is not None:
                on_result(result)
            return result

        if executor is None and num_threads == 1:
            return [work(job) for job in jobs]
        # Each task runs in a copy of the caller's context, so `dspy.context(...)` set around the
        # call (an LM, an adapter, callbacks) reaches the worker threads, as in dspy.Parallel.
        with contextlib.ExitStack() as stack:
            if executor is None:
                executor = stack.enter_context(ThreadPoolExecutor(num_threads, thread_name_prefix="rollout"))
            futures = [executor.submit(contextvars.copy_context().run, work, job) for job in jobs]
            return [f.result() for f in futures]

    def _report_unreached(self, recorder: TraceRecorder) -> None:
        """Say once which predictors a dry run could not format (they need model output)."""
        if self._unreached_reported.is_set():
            return
        reached = {call.predictor for call in recorder.calls}
        unreached = [name for name in self._names.values() if name not in reached]
        if unreached:
            self._unreached_reported.set()
            logger.warning(
                "dry run: only the first LM call of each rollout can be formatted without model "
                "output; the prompts of predictor(s) %s depend on earlier outputs and are not in the rows",
                unreached,
            )

    def _warn_identical_samples(self, n: int) -> None:
        if n <= 1 or self._warned.is_set():
            return
        lm = self.lm or dspy.settings.lm
        temperature = self.sampling.get("temperature", getattr(lm, "kwargs", {}).get("temperature"))
        if temperature == 0:
            self._warned.set()
            logger.warning(
                "n=%d rollouts per example at temperature 0: the samples will be identical "
                "(greedy decoding). Set temperature > 0 for distinct samples.",
                n,
            )
