"""Training progress, from the Ray Train workers to the driver, as it happens.

The TRL trainer runs inside Ray Train workers, whose output the CLI does not forward (it would
bury the console in every library's warnings). Rank 0 instead puts a small snapshot after each
optimizer step and each TRL log entry on a `ray.util.queue.Queue` (an actor, so it works on a
cluster as on one machine); the driver drains it in a thread and hands each snapshot to a
callback, which the CLI draws as a progress bar.

A snapshot: ``{"step": int, "max_steps": int, "elapsed_s": float}`` plus, on log steps, TRL's
numeric log entries (``loss``, ``learning_rate``, ``mean_token_accuracy``, rewards, ...).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

__all__ = ["ProgressCallback", "ProgressFeed"]

logger = logging.getLogger(__name__)

Snapshot = dict[str, Any]


class ProgressCallback(TrainerCallback):
    """Puts rank 0's progress on ``queue`` (a `ray.util.queue.Queue`); never fails the training."""

    def __init__(self, queue: Any):
        self.queue = queue
        self.started = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self.started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self._put(state, {})

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        self._put(state, {k: number for k, v in (logs or {}).items() if (number := _number(v)) is not None})

    def _put(self, state, extra: dict[str, Any]) -> None:
        if not state.is_world_process_zero:
            return
        snapshot = {
            "step": state.global_step,
            "max_steps": state.max_steps,
            "elapsed_s": round(time.monotonic() - self.started, 1),
            **extra,
        }
        try:
            self.queue.put_nowait(snapshot)
        except Exception as e:  # noqa: BLE001 - a full or gone queue loses a progress line, not the run
            logger.debug("progress snapshot dropped: %s", e)


def _number(value: Any) -> float | None:
    """A log value as a number (some transformers versions hand callbacks formatted strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class ProgressFeed:
    """The driver's end: ``with ProgressFeed(on_progress) as feed: ... feed.queue ...``.

    Creates the queue actor (no CPU reserved), and a thread that calls ``on_progress`` with each
    snapshot, merged into the last one (so ``loss`` stays known between log steps). On exit the
    thread stops and the actor is released.
    """

    def __init__(self, on_progress: Callable[[Snapshot], None], poll_s: float = 1.0):
        self.on_progress = on_progress
        self.poll_s = poll_s
        self.queue: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ProgressFeed:
        from ray.util.queue import Queue

        self.queue = Queue(maxsize=10_000, actor_options={"num_cpus": 0})
        self._thread = threading.Thread(target=self._drain, name="train-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10 * self.poll_s)
        self.queue.shutdown()

    def _drain(self) -> None:
        from ray.util.queue import Empty

        latest: Snapshot = {}
        while True:
            try:
                latest = {**latest, **self.queue.get(timeout=self.poll_s)}
            except Empty:
                if self._stop.is_set():
                    return
                continue
            except Exception as e:  # noqa: BLE001 - the queue actor is gone: no more progress
                logger.debug("progress feed stopped: %s", e)
                return
            self.on_progress(dict(latest))
