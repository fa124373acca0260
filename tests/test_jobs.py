"""`ray job submit` on a real Ray head (`ray start --head`, tests/ray_head.py): jobs/collect.py as a
job through `JobSubmissionClient`, and the HTTP service with runs executed as Ray jobs."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient
from ray_head import REPO

from raydspy.programs import banking77

# What a working_dir upload leaves out: environments, outputs, caches (see docs/service.md, `ray job submit`).
EXCLUDES = [
    ".venv",
    ".git",
    "rollouts",
    "runs",
    "build",
    "*.egg-info",
    ".pytest_cache",
    ".hypothesis",
    "**/__pycache__",
    "*.safetensors",
    "*.gguf",
    "checkpoints",
]


def submit_collect(client, sample: Path, output: str, *flags: str) -> str:
    """jobs/collect.py of the banking77 program and rewards on ``sample``, writing ``output``, with
    ``flags`` after them, as a job on the head of ``client`` (this repository as its working_dir);
    returns the job id."""
    entrypoint = [
        *("python", "jobs/collect.py", "--program", "raydspy.programs.banking77:program"),
        *("--rewards", "raydspy.programs.banking77:rewards", "--input", str(sample), "--output", output, *flags),
    ]
    return client.submit_job(
        entrypoint=shlex.join(entrypoint),
        runtime_env={
            "working_dir": str(REPO),
            "excludes": EXCLUDES,
            "env_vars": {"LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        },
    )


def _wait_for_job(client, job_id: str, timeout_s: float = 420.0):
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get_job_status(job_id)
        if status.is_terminal() or time.monotonic() > deadline:
            return status
        time.sleep(1.0)


def test_collect_job_through_job_submission_client(ray_head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    sample = banking77.write_sample(tmp_path / "train.csv", size=8)
    summary = tmp_path / "summary.json"
    client = JobSubmissionClient(ray_head.dashboard_url)
    job_id = submit_collect(
        client,
        sample,
        str(tmp_path / "out"),
        *("--n", "2", "--batch-size", "4", "--dry-run", "--structured-outputs", "--summary-json", str(summary)),
    )
    status = _wait_for_job(client, job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    result = json.loads(summary.read_text())
    assert result["rows"] == 16 and result["complete"] and result["error_rows"] == 0


def test_service_runs_as_ray_jobs(ray_head, tmp_path):
    from ray.job_submission import JobSubmissionClient

    from raydspy.service.api import create_app
    from raydspy.service.dispatch import RunManager
    from raydspy.service.settings import ServiceSettings

    (tmp_path / "in").mkdir()
    sample = banking77.write_sample(tmp_path / "in" / "train.csv", size=8)
    settings = ServiceSettings.load(
        dict(
            token="t",
            input_prefixes=[str(tmp_path / "in")],
            output_prefixes=[str(tmp_path / "out")],
            state_uri=str(tmp_path / "state"),
            executor="job",
            job_address=ray_head.dashboard_url,
            dispatch_interval_s=0.5,
        )
    )
    manager = RunManager(settings).start()
    auth = {"Authorization": "Bearer t"}
    try:
        with TestClient(create_app(manager)) as c:
            body = {
                "program": "raydspy.programs.banking77:program",
                "input_uri": str(sample),
                "output_uri": str(tmp_path / "out" / "r"),
                "n": 2,
                "dry_run": True,
                "batch_size": 4,
            }
            run_id = c.post("/v1/runs", json=body, headers=auth).json()["id"]
            deadline = time.monotonic() + 420
            while True:
                status = c.get(f"/v1/runs/{run_id}", headers=auth).json()
                if status["state"] not in ("PENDING", "RUNNING") or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
        record = manager.store.get(run_id)
        logs = JobSubmissionClient(ray_head.dashboard_url).get_job_logs(record.executor_ref)
        assert status["state"] == "SUCCEEDED", (status, logs[-3000:])
        assert status["rollouts_done"] == 16
        assert (
            sys.executable in JobSubmissionClient(ray_head.dashboard_url).get_job_info(record.executor_ref).entrypoint
        )
    finally:
        manager.stop()
