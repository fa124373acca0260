"""A submitted run's entry point: read its record, run `raydspy.pipeline.driver.run_pipeline`, write
the outcome back. Runs inside a Ray task (the `task` executor) or as a Ray job's driver:

    python -m raydspy.service.worker RUN_ID --state-uri URI [--s3-endpoint URL]

The worker holds the run to the allow-lists recorded with it (`raydspy.service.policy.RunPolicy`)
as the replica did at submission: it checks the URIs and the teacher again, resolves program and
rewards within the allowed modules (here and in every actor), and reads and writes local paths
only inside the prefixes, through no symbolic link, at the moment it opens each file.

The worker is the only writer of its record once the run started. It looks for the cancel
marker after each committed batch and then stops as Ctrl-C does (what was committed stays; the
same run submitted again resumes). A Ray task cancel (``ray.cancel``) and ``ray job stop``
(SIGTERM) arrive as KeyboardInterrupt and end the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before dspy imports litellm

from raydspy.core.storage import StorageOptions  # noqa: E402
from raydspy.errors import NotAllowedError, RaydspyError  # noqa: E402
from raydspy.pipeline import PipelineConfig, RunProgress, run_pipeline  # noqa: E402
from raydspy.service.runs import RunRecord, utcnow  # noqa: E402
from raydspy.service.schemas import RunState  # noqa: E402
from raydspy.service.store import RunStore  # noqa: E402
from raydspy.teacher.client import TeacherConfig  # noqa: E402

__all__ = ["execute_run", "main"]

logger = logging.getLogger(__name__)

#: Seconds between looks at the cancel marker (one small read of the state store each).
CANCEL_POLL_S = 1.0


def _configs(record: RunRecord, s3_endpoint_url: str | None) -> tuple[TeacherConfig, PipelineConfig]:
    """The run's teacher and layout, once its record passes its policy again.

    Raises:
        NotAllowedError: the record has no policy, or leaves it (a URI or teacher refused now).
    """
    req, policy = record.request, record.policy
    if policy is None:
        raise NotAllowedError("the run's record holds no allow-lists to run under: submit it again")
    teacher = TeacherConfig(**req.teacher.model_dump(exclude_none=True))
    policy.check(
        program=req.program,
        rewards=req.rewards,
        input_uri=req.input_uri,
        output_uri=req.output_uri,
        teacher_url=teacher.base_url,
    )
    storage = policy.storage(s3_endpoint_url)
    config = PipelineConfig(input_uri=req.input_uri, output_uri=req.output_uri, storage=storage, **req.run_fields())
    return teacher, config


def execute_run(run_id: str, state_uri: str, s3_endpoint_url: str | None = None) -> str:
    """Run ``run_id`` to its end and record the outcome; Ray must be initialised.

    Returns:
        The final state's name (SUCCEEDED, STOPPED, FAILED or CANCELLED).
    """
    store = RunStore(state_uri, StorageOptions(s3_endpoint_url=s3_endpoint_url))
    record = store.get(run_id)
    if record.state.terminal:
        return record.state.value
    if store.cancel_requested(run_id):
        store.update(run_id, state=RunState.CANCELLED, finished_at=utcnow(), message="cancelled before it started")
        return RunState.CANCELLED.value
    store.update(run_id, state=RunState.RUNNING, started_at=utcnow(), message=None)
    last_poll = [0.0]

    def on_start(progress: RunProgress) -> None:
        store.update(run_id, planned=progress.planned, resumed=progress.resumed)

    def on_progress(progress: RunProgress) -> None:
        if time.monotonic() - last_poll[0] < CANCEL_POLL_S:
            return
        last_poll[0] = time.monotonic()
        if store.cancel_requested(run_id):
            raise KeyboardInterrupt  # run_pipeline stops as on Ctrl-C: "interrupted", resumable

    outcome: dict = {}
    try:
        teacher, config = _configs(record, s3_endpoint_url)
        allowed = record.policy.allowed_modules
        with contextlib.ExitStack() as stack:
            tracked = None
            if record.mlflow_tracking_uri:
                from raydspy.pipeline.tracking import MlflowRun

                tracked = stack.enter_context(
                    MlflowRun(
                        record.request.program,
                        teacher,
                        config,
                        rewards=record.request.rewards,
                        tracking_uri=record.mlflow_tracking_uri,
                        run_name=run_id,
                        traces=record.request.mlflow_traces,
                        allowed_modules=allowed,
                    )
                )
                store.update(run_id, mlflow_run_id=tracked.run_id)
            summary = run_pipeline(
                record.request.program,
                teacher,
                config,
                rewards=record.request.rewards,
                reward_weights=record.request.reward_weights or None,
                on_start=on_start,
                on_progress=on_progress,
                allowed_modules=allowed,
            )
            if tracked is not None:
                tracked.finish(summary)
        outcome["summary"] = summary.as_dict()
        if summary.complete:
            outcome["state"] = RunState.SUCCEEDED
        elif summary.stopped == "interrupted":
            outcome["state"], outcome["message"] = RunState.CANCELLED, "cancelled; committed rollouts stay"
        else:
            outcome["state"] = RunState.STOPPED
            outcome["message"] = summary.stopped or f"{summary.missing} rollouts missing (teacher failures)"
    except KeyboardInterrupt:
        outcome = {"state": RunState.CANCELLED, "message": "cancelled; committed rollouts stay"}
    except (RaydspyError, ValueError) as e:
        outcome = {"state": RunState.FAILED, "message": f"{type(e).__name__}: {e}"}
    except Exception as e:  # noqa: BLE001 - the record must say why, whatever failed
        logger.exception("run %s failed", run_id)
        outcome = {"state": RunState.FAILED, "message": f"{type(e).__name__}: {e}"}
    store.update(run_id, finished_at=utcnow(), **outcome)
    return outcome["state"].value


def main(argv: list[str] | None = None) -> int:
    """The Ray job entry point: join the cluster (``$RAY_ADDRESS``), run, exit 0 unless FAILED."""
    import ray

    parser = argparse.ArgumentParser(prog="python -m raydspy.service.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_id")
    parser.add_argument("--state-uri", required=True)
    parser.add_argument("--s3-endpoint", default=os.environ.get("AWS_ENDPOINT_URL"))
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # `ray job stop` → a resumable stop
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"))
    state = execute_run(args.run_id, args.state_uri, args.s3_endpoint)
    print(f"run {args.run_id}: {state}")
    return 1 if state == RunState.FAILED.value else 0


if __name__ == "__main__":
    sys.exit(main())
