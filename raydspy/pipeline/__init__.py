"""The Ray pipeline: collection at cluster scale (Ray Data over an actor pool of Collect workers).

| module       | job                                                                          |
| ------------ | ---------------------------------------------------------------------------- |
| `config`     | `PipelineConfig`: how a run is laid out, its defaults and limits             |
| `driver`     | `run_pipeline`: checks, plans, follows a run                                 |
| `progress`   | `RunProgress`: the run so far, from the committer's batches                  |
| `planning`   | `PlanWorker` and the resume filter: which rollouts a run makes               |
| `workers`    | `CollectWorker`: the Ray Data actors that run rollouts                       |
| `committer`  | `RolloutCommitter` and its `CommitGate`: batches of rollouts to part files   |
| `commits`    | the exactly-once commit protocol: part names, reading what is committed      |
| `inputs`     | reading examples (CSV, JSONL, Parquet; local, s3://, gs://)                  |
| `validation` | every input row checked before any LM call                                   |
| `summary`    | `RunSummary`: what an output holds, from counts taken at commit              |
| `part_counts`| `PartCounts`: counts of each committed part, read once (status, viewer)      |
| `manifests`  | each run's committed files and counts, under `_runs/`                        |
| `cards`      | the run's dataset card, README.md beside the parts                           |
| `metrics`    | Ray metrics of runs (Prometheus, the dashboard)                              |
| `tracking`   | MLflow tracking of a run                                                     |
"""

from typing import TYPE_CHECKING

from raydspy._lazy import lazy_exports

_EXPORTS = {
    "PipelineConfig": "raydspy.pipeline.config",
    "INVALID_DIR": "raydspy.pipeline.config",
    "run_pipeline": "raydspy.pipeline.driver",
    "RunProgress": "raydspy.pipeline.progress",
    "RunSummary": "raydspy.pipeline.summary",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from raydspy.pipeline.config import INVALID_DIR, PipelineConfig
    from raydspy.pipeline.driver import run_pipeline
    from raydspy.pipeline.progress import RunProgress
    from raydspy.pipeline.summary import RunSummary

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
