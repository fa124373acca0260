"""Shared fixtures and the test tiers. Slow components (local Ray, the vLLM teacher on Ray Serve,
the S3 server) start once per test session and only when a test asks for them.

Tiers (pytest markers, chosen with ``-m``): ``unit`` starts no Ray and runs in seconds; ``ray`` uses
a local Ray (`ray_local`) or a Ray head (`ray_head`); ``slow`` trains or loads a model (minutes);
``e2e`` starts the real vLLM teacher. A test marked with a tier keeps it; any other test gets its
tier from the fixtures it uses, so a new test lands in the right tier without a marker.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray_head import ray_head  # noqa: F401 - a session fixture, shared from its own module

# Credentials for the loopback S3 server (moto accepts any). Set before Ray starts, so Ray's
# workers inherit them; no real cloud account is ever reached from the tests.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
# No internet here: litellm would retry fetching its model cost map for seconds at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

REPO = Path(__file__).resolve().parent.parent

TIERS = ("unit", "ray", "slow", "e2e")
_TIER_OF_FIXTURE = {"teacher": "e2e", "ray_local": "ray", "ray_head": "ray"}


def pytest_collection_modifyitems(config, items):
    """Every test gets exactly one tier: its own marker, else the heaviest of its fixtures', else unit."""
    for item in items:
        if any(item.get_closest_marker(tier) for tier in TIERS):
            continue
        found = {_TIER_OF_FIXTURE[f] for f in item.fixturenames if f in _TIER_OF_FIXTURE}
        item.add_marker(next((tier for tier in reversed(TIERS) if tier in found), "unit"))


_TIER_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Add each test's setup, call and teardown time to its tier's total (shown at the end)."""
    tier = next((t for t in TIERS if t in report.keywords), None)
    if tier is not None:
        _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if _TIER_SECONDS:
        times = ", ".join(f"{t} {_TIER_SECONDS[t]:.0f} s" for t in TIERS if t in _TIER_SECONDS)
        terminalreporter.write_line(f"time by tier: {times}")


@pytest.fixture(autouse=True)
def _unit_tests_start_no_ray(request):
    """A unit test that starts Ray fails: the tier's promise is seconds, not Ray's start-up."""
    was_up = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    yield
    if request.node.get_closest_marker("unit") and not was_up and "ray" in sys.modules:
        assert not sys.modules["ray"].is_initialized(), "a unit test started Ray: give it a Ray fixture or a tier"


@pytest.fixture(autouse=True)
def _reset_dspy():
    """Each test starts from DSPy's default settings (no LM, no adapter)."""
    import dspy

    yield
    dspy.configure(lm=None, adapter=None, callbacks=[])


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with more logical CPUs than cores: Collect actors and the Serve ingress mostly
    wait on I/O, and the teacher's replica and engine need a CPU each (RECIPES.md)."""
    import ray

    ray.init(
        num_cpus=8,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {
                # tests/ too: programs defined in test modules are pickled by reference.
                "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            }
        },
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def teacher(ray_local):
    """The embedded SmolLM2-135M teacher, served by vLLM inside Ray Serve LLM from
    serve_configs/teacher-cpu.yaml (a few minutes on first start). Yields its TeacherConfig with
    structured outputs on, as the demo uses it."""
    from filelock import FileLock
    from ray import serve

    from raydspy.teacher.client import TeacherConfig
    from raydspy.teacher.deploy import deploy_serve_config, wait_for_teacher

    config = TeacherConfig(structured_outputs=True, temperature=1.0, max_tokens=160)
    # One teacher per machine: it binds port 8000 and wants both cores, so concurrent test
    # sessions (several checkouts on one machine) take turns instead of failing on the port.
    with FileLock(Path(tempfile.gettempdir()) / "raydspy-teacher.lock"):
        deploy_serve_config(REPO / "serve_configs" / "teacher-cpu.yaml")
        wait_for_teacher(config, timeout_s=900)
        yield config
        serve.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server on loopback (moto in server mode), with bucket ``rollouts``.
    Yields its endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="rollouts")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    yield endpoint
    server.stop()
