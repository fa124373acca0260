"""MLflow tracking of a collection run (`raydspy collect --mlflow`): its parameters, its summary
as metrics, the DSPy program through MLflow's DSPy flavour (``mlflow.dspy.log_model``), where
the rollouts are (the ``rollouts_uri`` tag and param), and a sample of the rollouts the run
committed as MLflow traces, one span per LM call (``--mlflow-traces N``, default `DEFAULT_TRACES`;
which rollouts: `raydspy.pipeline.samples`; the spans: `raydspy.pipeline.mlflow_traces`).

The tracking store is ``$MLFLOW_TRACKING_URI`` when set, else a local folder, ``./mlruns``
(MLflow's file store, which MLflow 3 accepts with ``MLFLOW_ALLOW_FILE_STORE=true``: set here for
file stores; browse it with ``mlflow ui --backend-store-uri ./mlruns`` where the full ``mlflow``
package is installed), or a tracking server's ``http(s)://`` URI.
Requires the ``service`` extra (mlflow-skinny).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dspy

from raydspy.core.storage import resolve
from raydspy.errors import ConfigError, RaydspyError
from raydspy.pipeline.config import PipelineConfig
from raydspy.pipeline.summary import RunSummary
from raydspy.teacher.client import TeacherConfig

__all__ = ["DEFAULT_TRACES", "MlflowRun", "default_tracking_uri"]

logger = logging.getLogger(__name__)

#: Rollouts logged as MLflow traces per run, unless told otherwise: enough to look through,
#: few enough that logging them (a few writes each) adds little to a run, even against a
#: remote tracking server.
DEFAULT_TRACES = 32


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else ``file://<cwd>/mlruns``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()


def _mlflow():
    try:
        import mlflow
        import mlflow.dspy  # noqa: F401 - the DSPy flavour
    except ImportError as e:
        raise ConfigError("--mlflow needs MLflow: pip install -c constraints.txt -e '.[service]'") from e
    return mlflow


class MlflowRun:
    """One MLflow run around one collection run::

        with MlflowRun(program, teacher, config, rewards=spec) as tracked:
            summary = run_pipeline(...)
            tracked.finish(summary)

    Entering starts the run and logs the parameters and the program; `finish` logs the summary's
    metrics, the rollouts' location and up to ``traces`` of the rollouts the run committed as
    MLflow traces (0: none). Leaving ends the run (FAILED when an exception escapes).

    Raises:
        ConfigError: MLflow is not installed, or ``traces`` is negative.
    """

    def __init__(
        self,
        program: str | dspy.Module,
        teacher: TeacherConfig,
        config: PipelineConfig,
        *,
        rewards: str | None = None,
        tracking_uri: str | None = None,
        experiment: str = "raydspy",
        run_name: str | None = None,
        traces: int = DEFAULT_TRACES,
        allowed_modules: Sequence[str] | None = None,
    ):
        if traces < 0:
            raise ConfigError(f"MLflow traces: give a number of rollouts, 0 or more; got {traces}")
        self.mlflow = _mlflow()
        self.program = program
        self.teacher = teacher
        self.config = config
        self.rewards = rewards
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.experiment = experiment
        self.run_name = run_name
        self.traces = traces
        self.allowed_modules = allowed_modules
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.model_uri: str | None = None
        self.trace_ids: list[str] = []
        self._program: dspy.Module | None = None

    def params(self) -> dict[str, Any]:
        c, t = self.config, self.teacher
        return {
            "program": self.program if isinstance(self.program, str) else type(self.program).__name__,
            "rewards": self.rewards if isinstance(self.rewards, str) or self.rewards is None else "<object>",
            "input_uri": c.input_uri,
            "output_uri": c.output_uri,
            "n": c.n,
            "limit": c.limit,
            "dry_run": c.dry_run,
            "num_actors": c.num_actors,
            "threads_per_actor": c.threads_per_actor,
            "batch_size": c.batch_size,
            "max_error_rate": c.max_error_rate,
            "teacher_model": t.model,
            "teacher_url": t.base_url,
            "temperature": t.temperature,
            "max_tokens": t.max_tokens,
            "seed": t.seed,
            "structured_outputs": t.structured_outputs,
            "mlflow_traces": self.traces,
        }

    def __enter__(self) -> MlflowRun:
        from raydspy.core.specs import load_program

        mlflow = self.mlflow
        if self.tracking_uri.startswith("file:") or "://" not in self.tracking_uri:
            # MLflow 3 keeps its file store in maintenance mode and refuses it unless asked; a
            # local folder is the store that needs no server or database (the `service` extra
            # ships mlflow-skinny, without SQLAlchemy).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(self.experiment)
        run = mlflow.start_run(run_name=self.run_name)
        self.run_id, self.experiment_id = run.info.run_id, run.info.experiment_id
        mlflow.log_params(self.params())
        mlflow.set_tag("rollouts_uri", self.config.output_uri)
        self._program = load_program(self.program, self.allowed_modules)
        self.model_uri = mlflow.dspy.log_model(self._program, name="program").model_uri
        return self

    def finish(self, summary: RunSummary) -> None:
        """Log the summary's numbers as metrics, and the whole summary as ``summary.json``."""
        mlflow = self.mlflow
        values = {
            "rows": summary.rows,
            "error_rows": summary.error_rows,
            "completion_tokens": summary.completion_tokens,
            "elapsed_s": summary.elapsed_s,
            "deferred": summary.deferred,
            "duplicate_rows": summary.duplicate_rows,
            "mean_reward": summary.mean_reward,
            "format_rate": summary.format_rate,
            "rollouts_per_s": summary.rollouts_per_s,
            "planned": summary.planned,
            "new_rows": summary.new_rows,
            "missing": summary.missing,
            **{f"reward_{name}": mean for name, mean in summary.reward_means.items()},
        }
        mlflow.log_metrics({k: float(v) for k, v in values.items() if v is not None})
        mlflow.log_param("rollouts_uri", summary.output_uri or self.config.output_uri)
        mlflow.log_dict(summary.as_dict(), "summary.json")
        self.trace_ids = self.log_traces(summary)

    def log_traces(self, summary: RunSummary) -> list[str]:
        """Log up to ``traces`` of the rollouts this run committed (``summary.manifest`` names
        their files) as MLflow traces of this run; failed ones first (`raydspy.pipeline.samples`).

        A sample that cannot be read (storage failing now) is logged as a warning, not raised:
        the run's rollouts and the rest of its tracking stand.

        Returns:
            The trace ids (none when ``traces`` is 0 or the run committed nothing).
        """
        from raydspy.pipeline.mlflow_traces import ProgramSpan, log_rollout_traces
        from raydspy.pipeline.samples import sample_run_rollouts

        if not self.traces or not summary.manifest:
            return []
        try:
            rows = sample_run_rollouts(
                resolve(self.config.output_uri, self.config.storage), summary.manifest, self.traces
            )
        except RaydspyError as e:
            logger.warning("no MLflow traces for this run: cannot read its rollouts back (%s)", e)
            return []
        program = ProgramSpan.of(self._program) if self._program is not None else ProgramSpan()
        return log_rollout_traces(rows.to_pylist(), program, run_id=self.run_id, experiment_id=self.experiment_id)

    def __exit__(self, exc_type, exc, tb) -> None:
        self.mlflow.end_run(status="FAILED" if exc_type is not None else "FINISHED")
