"""A run on a 3-node cluster (`ray.cluster_utils.Cluster` on this machine: a head that takes no CPU
work, two worker nodes) loses a node, actors or its driver, and still commits every planned
rollout exactly once: rows == distinct rollout ids == planned, read back from the part files.

Each scenario runs in its own process (tests/multinode.py: a process joins one Ray cluster, and
this session has its own local Ray), against an instant fake teacher that counts its requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent / "multinode.py"

pytestmark = pytest.mark.ray


def _scenario(*args: str, timeout_s: int) -> dict:
    env = {**os.environ, "RAYDSPY_MULTINODE_TIMEOUT_S": str(timeout_s - 30)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, str(HARNESS), *args], capture_output=True, text=True, timeout=timeout_s, env=env
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_worker_node_lost_mid_run_leaves_a_complete_run_without_a_rerun():
    outcome = _scenario("node-loss", "--rollouts", "4000", "--after", "1000", timeout_s=600)
    assert outcome["complete"] and outcome["stopped"] is None
    assert outcome["rows"] == outcome["distinct"] == outcome["planned"] == 4000
    assert outcome["node_removed_after"] < 4000  # the node went while the run was going
    assert outcome["recover_s"] is not None  # and commits went on after it


def test_the_driver_killed_mid_run_then_the_rerun_completes_exactly():
    outcome = _scenario("driver-kill", "--rollouts", "4000", "--after", "1000", timeout_s=600)
    assert 0 < outcome["killed_after_rows"] < 4000
    assert outcome["complete"] and outcome["resumed"] >= outcome["killed_after_rows"]
    assert outcome["rows"] == outcome["distinct"] == outcome["planned"] == 4000


def test_stress_actors_killed_and_nodes_replaced_while_20000_rollouts_run():
    outcome = _scenario(
        "stress", "--rollouts", "20000", "--n", "5", "--seconds", "10", "--max-kills", "8", timeout_s=900
    )
    assert outcome["complete"]
    assert outcome["rows"] == outcome["distinct"] == outcome["planned"] == 20000
    assert sum(outcome["kills"].values()) >= 3  # the killer did its work while the run went on
