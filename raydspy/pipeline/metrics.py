"""Cluster metrics of collection runs, through Ray's own metrics (`ray.util.metrics`): each Ray
node exports them in Prometheus format on its metrics export port, and the Ray Dashboard's
embedded Grafana plots them (dashboards/raydspy.json). Names carry Ray's ``ray_`` prefix there.

| metric                              | kind      | unit     | what                                          |
| ----------------------------------- | --------- | -------- | --------------------------------------------- |
| raydspy_rollouts_written_total            | counter   | rollouts | rollout rows committed (error rows included)   |
| raydspy_rollout_errors_total              | counter   | rollouts | rollouts that failed (rows with an error, and teacher failures not committed) |
| raydspy_reward                      | histogram | reward   | combined reward of each scored rollout         |
| raydspy_completion_tokens_total           | counter   | tokens   | completion tokens of the LM calls              |
| raydspy_prompt_tokens_total               | counter   | tokens   | prompt tokens of the LM calls                  |
| raydspy_lm_latency_seconds          | histogram | seconds  | latency of each LM call (cache hits left out)  |
| raydspy_requests_in_flight          | gauge     | requests | rollouts handed to a worker and not finished (each holds at most one LM request at a time) |

Every metric has the tag ``run``: the run's output URI (one collection run writes one output).
The in-flight gauge also has ``worker`` (the process), so workers' values add up instead of
overwriting each other.

Recording is cheap (a few dict updates per rollout) and never raises into a rollout.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raydspy.core.runner import RolloutResult

__all__ = ["RolloutMetrics"]

logger = logging.getLogger(__name__)

REWARD_BOUNDARIES = [0.0001, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9999]
LATENCY_BOUNDARIES_S = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120]
#: Seconds between two updates of a worker's in-flight gauge.
GAUGE_PERIOD_S = 0.5

_lock = threading.Lock()
_metrics: dict[str, object] | None = None


def _instruments() -> dict[str, object]:
    """Ray's metric objects, built once per process (building them registers them with Ray)."""
    global _metrics
    with _lock:
        if _metrics is None:
            from ray.util.metrics import Counter, Gauge, Histogram

            run = ("run",)
            _metrics = {
                "written": Counter("raydspy_rollouts_written_total", "Rollout rows committed.", run),
                "errors": Counter("raydspy_rollout_errors_total", "Rollouts that failed.", run),
                "reward": Histogram(
                    "raydspy_reward", "Combined reward of each scored rollout.", REWARD_BOUNDARIES, run
                ),
                "completion_tokens": Counter("raydspy_completion_tokens_total", "Completion tokens of LM calls.", run),
                "prompt_tokens": Counter("raydspy_prompt_tokens_total", "Prompt tokens of LM calls.", run),
                "latency": Histogram(
                    "raydspy_lm_latency_seconds", "Latency of each LM call, in seconds.", LATENCY_BOUNDARIES_S, run
                ),
                "in_flight": Gauge(
                    "raydspy_requests_in_flight",
                    "Rollouts handed to this worker and not finished (each holds at most one LM request).",
                    ("run", "worker"),
                ),
            }
        return _metrics


class RolloutMetrics:
    """The metrics of one run as seen by one worker (a Collect actor).

    ``started(k)`` before handing k rollouts to the thread pool; ``finished(result)`` as each
    one ends (the runner's ``on_result``), then ``committed(results)`` once its batch is written.
    """

    def __init__(self, run: str):
        self.tags = {"run": run}
        self._worker_tags = {"run": run, "worker": str(os.getpid())}
        self._in_flight = 0
        self._gauge_set_at = float("-inf")
        self._lock = threading.Lock()
        try:
            self._m = _instruments()
        except Exception:  # noqa: BLE001 - metrics are optional (no Ray, or Ray without metrics)
            logger.warning("Ray metrics unavailable; collecting without them", exc_info=True)
            self._m = None

    def started(self, count: int) -> None:
        self._move(count)

    def finished(self, result: RolloutResult) -> None:
        """One rollout ended: its LM calls' latency and tokens, its reward, whether it failed."""
        self._move(-1)
        if self._m is None:
            return
        try:
            record = result.record
            prompt = completion = 0
            for call in record.trace:
                prompt += call.prompt_tokens or 0
                completion += call.completion_tokens or 0
                if call.latency_s is not None and not call.cached:
                    self._m["latency"].observe(call.latency_s, self.tags)
            if completion:
                self._m["completion_tokens"].inc(completion, self.tags)
            if prompt:
                self._m["prompt_tokens"].inc(prompt, self.tags)
            if record.error:
                self._m["errors"].inc(1, self.tags)
            if record.reward is not None and not result.transient:
                self._m["reward"].observe(record.reward, self.tags)
        except Exception:  # noqa: BLE001 - a metric must never fail a rollout
            logger.debug("metrics: could not record a rollout", exc_info=True)

    def committed(self, rows: int) -> None:
        """``rows`` rollout rows of the batch were committed to storage."""
        if self._m is not None and rows:
            try:
                self._m["written"].inc(rows, self.tags)
            except Exception:  # noqa: BLE001 - a metric must never fail a batch
                logger.debug("metrics: could not count committed rows", exc_info=True)

    def _move(self, delta: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._in_flight += delta
            value = self._in_flight
            # Set the gauge at most every GAUGE_PERIOD_S (and whenever the worker runs dry): a
            # Ray metric update per rollout took a sixth of an actor's CPU against a fast teacher,
            # and Prometheus scrapes every few seconds anyway.
            if value and now - self._gauge_set_at < GAUGE_PERIOD_S:
                return
            self._gauge_set_at = now
        if self._m is not None:
            try:
                self._m["in_flight"].set(value, self._worker_tags)
            except Exception:  # noqa: BLE001
                logger.debug("metrics: could not set the in-flight gauge", exc_info=True)
