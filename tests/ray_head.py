"""A real Ray head started with ``ray start --head``, once per test session, for the tests that need
what only a cluster has: the job manager (`JobSubmissionClient`) and the metrics export port.

``ray start --head --block`` runs in a child process on free ports, with its own ``--temp-dir``
so no other process on this machine finds it when it calls ``ray.init()`` (that looks for the
last ``ray start`` under the default temp dir). Teardown sends that child SIGTERM, which stops
this cluster's processes and no other (``ray stop`` would stop every Ray on the machine).

Use it from a test module with ``from ray_head import ray_head  # noqa: F401``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RayHead:
    address: str  # GCS address, host:port (RAY_ADDRESS for drivers)
    dashboard_url: str  # http://127.0.0.1:PORT: the job REST API (JobSubmissionClient)
    metrics_url: str  # http://127.0.0.1:PORT/metrics: the node's Prometheus export
    temp_dir: str


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="session")
def ray_head():
    gcs, dashboard, metrics, client, node_manager, object_manager, agent_grpc, agent_http, runtime_env = _free_ports(9)
    temp_dir = tempfile.mkdtemp(prefix="rh-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "RAY_USAGE_STATS_ENABLED": "0",
            # Ray 2.60 turns on token auth for a new cluster when ~/.ray/auth_token exists, and a
            # JobSubmissionClient in a process without token mode then gets 401. This loopback-only
            # test cluster runs without it; a real cluster keeps it (see docs/service.md).
            "RAY_AUTH_MODE": "disabled",
            # Workers report metrics to the node every second (default 10 s), so a scrape sees them soon.
            "RAY_metrics_report_interval_ms": "1000",
            # The job driver and workers use this venv's python and console scripts.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    env.pop("RAY_ADDRESS", None)
    ray_bin = str(Path(sys.executable).parent / "ray")
    command = [
        ray_bin,
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(gcs),
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dashboard),
        "--include-dashboard",
        "true",
        "--metrics-export-port",
        str(metrics),
        "--ray-client-server-port",
        str(client),
        "--node-manager-port",
        str(node_manager),
        "--object-manager-port",
        str(object_manager),
        "--dashboard-agent-grpc-port",
        str(agent_grpc),
        "--dashboard-agent-listen-port",
        str(agent_http),
        "--runtime-env-agent-port",
        str(runtime_env),
        "--num-cpus",
        "6",
        "--temp-dir",
        temp_dir,
        "--disable-usage-stats",
    ]
    log = open(Path(temp_dir) / "ray-start.log", "w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = RayHead(
        address=f"127.0.0.1:{gcs}",
        dashboard_url=f"http://127.0.0.1:{dashboard}",
        metrics_url=f"http://127.0.0.1:{metrics}/metrics",
        temp_dir=temp_dir,
    )
    try:
        _wait_ready(head, process, Path(temp_dir) / "ray-start.log")
        yield head
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: only this cluster's processes
            process.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_ready(head: RayHead, process: subprocess.Popen, log: Path, timeout_s: float = 180.0) -> None:
    """Until the job API answers (the dashboard is the last thing ``ray start`` brings up)."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            JobSubmissionClient(head.dashboard_url).list_jobs()
            return
        except Exception as e:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Ray head's job API did not answer in {timeout_s} s "
                    f"({type(e).__name__}: {e}):\n{log.read_text()[-1500:]}"
                ) from e
            time.sleep(1.0)
