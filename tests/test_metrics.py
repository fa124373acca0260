"""Ray metrics of a collection run reach the head's Prometheus endpoint (its metrics export port):
a real job (jobs/collect.py) on a real `ray start --head` (tests/ray_head.py), against a loopback
OpenAI-compatible teacher, and scrapes of the node's /metrics while and after it runs."""

from __future__ import annotations

import time
from pathlib import Path

import requests
from fake_openai import slow_teacher
from ray_head import REPO
from test_jobs import _wait_for_job, submit_collect

from raydspy.programs import banking77

EXPECTED = [
    "ray_raydspy_rollouts_written_total",
    "ray_raydspy_rollout_errors_total",
    "ray_raydspy_reward_bucket",
    "ray_raydspy_completion_tokens_total",
    "ray_raydspy_prompt_tokens_total",
    "ray_raydspy_lm_latency_seconds_bucket",
    "ray_raydspy_requests_in_flight",
]


def _samples(text: str, run: str) -> dict[str, float]:
    """``{metric name: value}`` of the Prometheus lines tagged with ``run``."""
    found = {}
    for line in text.splitlines():
        if line.startswith("#") or f'run="{run}"' not in line:
            continue
        name = line.split("{", 1)[0]
        found[name] = float(line.rsplit(" ", 1)[1])
    return found


def submit_collect_job(client, sample: Path, output: str, teacher_url: str) -> str:
    """jobs/collect.py as a job on the head of ``client``: 2 rollouts of each example, one actor with 2
    threads, no cache, against the fake teacher at ``teacher_url`` (tests/test_prometheus.py too)."""
    flags = ["--n", "2", "--batch-size", "2", "--actors", "1", "--threads", "2", "--no-cache"]
    return submit_collect(client, sample, output, *flags, "--teacher-url", teacher_url, "--teacher-model", "slow-model")


def test_run_metrics_reach_the_metrics_endpoint(ray_head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    sample = banking77.write_sample(tmp_path / "train.csv", size=8)
    output = str(tmp_path / "out")
    teacher = slow_teacher(delay_s=0.3, bad_every=3)  # every third completion does not parse: error rows
    client = JobSubmissionClient(ray_head.dashboard_url)
    try:
        job_id = submit_collect_job(client, sample, output, teacher.url)
        seen: dict[str, float] = {}
        deadline = time.monotonic() + 420
        finished_at = None
        while time.monotonic() < deadline:
            seen.update(_samples(requests.get(ray_head.metrics_url, timeout=10).text, output))
            if all(name in seen for name in EXPECTED):
                break
            status = client.get_job_status(job_id)
            if status.is_terminal():
                finished_at = finished_at or time.monotonic()
                if time.monotonic() - finished_at > 60:  # exports trail the run by a few seconds
                    break
            time.sleep(1.0)
        status = _wait_for_job(client, job_id)
        assert status == JobStatus.SUCCEEDED, client.get_job_logs(job_id)[-3000:]
    finally:
        teacher.close()
    missing = [name for name in EXPECTED if name not in seen]
    assert not missing, f"not exported: {missing}; seen: {sorted(seen)}"
    assert seen["ray_raydspy_prompt_tokens_total"] > 0 and seen["ray_raydspy_rollout_errors_total"] > 0


def test_dashboard_plots_only_exported_metrics():
    import json
    import re

    dashboard = json.loads((REPO / "dashboards" / "raydspy.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", n) for e in exprs for n in re.findall(r"ray_raydspy_\w+", e)}
    exported = {re.sub(r"_bucket$", "", n) for n in EXPECTED}
    assert used == exported
    assert all('run=~"$run"' in e for e in exprs)
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "run"}
