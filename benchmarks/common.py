"""What the benchmark scripts share (run as scripts, so ``benchmarks/`` is on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def init_local_ray() -> None:
    """A fresh local Ray of 8 logical CPUs (never a cluster already running on this machine): the
    layout the benchmarks measure, with the repository importable by its workers."""
    import ray

    ray.init(
        address="local",
        num_cpus=8,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}},
    )
