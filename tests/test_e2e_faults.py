"""Real faults against the real teacher: a proxy that drops, fails and slows requests, a Collect
actor killed mid-run, the driver killed mid-run, the S3 server stopped and restarted mid-run.
Each run ends, at once or after being run again, with exactly examples × n rows and no
duplicate rollout id. DSPy's cache is off here, so every rollout really calls the teacher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import boto3
import psutil
import pytest
import ray
from conftest import REPO, _free_port
from fault_proxy import FaultProxy, every
from moto.server import ThreadedMotoServer

from raydspy.core.retries import RetryPolicy
from raydspy.core.storage import StorageOptions, resolve
from raydspy.pipeline import PipelineConfig, run_pipeline
from raydspy.pipeline.commits import committed_files, read_committed
from raydspy.programs import banking77

pytestmark = pytest.mark.e2e

PROGRAM = "raydspy.programs.banking77:program"
REWARDS = "raydspy.programs.banking77:rewards"
EXAMPLES, N = 12, 2
QUICK_RETRY = RetryPolicy(max_attempts=8, initial_wait_s=0.2, max_wait_s=2.0, deadline_s=60)


@pytest.fixture
def sample_csv(tmp_path, request):
    # A different sample per test: no test's rollouts are another's.
    seed = 100 + sum(map(ord, request.node.name))
    return banking77.write_sample(tmp_path / "train.csv", size=EXAMPLES, seed=seed)


@pytest.fixture
def fresh_teacher(teacher):
    """The session's teacher, uncached and with short completions (faster rollouts)."""
    return teacher.model_copy(update={"cache": False, "max_tokens": 96, "retry": QUICK_RETRY})


def _report(fault: str, what_happened: str, rows: list) -> None:
    """One line of the fault matrix (docs/faults.md) (shown with `pytest -s`)."""
    print(f"\nFAULT-MATRIX | {fault} | {what_happened} | {EXAMPLES * N} | {len(rows)} |")


def _assert_exactly_once(location, *, errors_allowed=("AdapterParseError",)):
    table, duplicates = read_committed(location)
    rows = table.to_pylist()
    assert duplicates == 0
    assert len(rows) == EXAMPLES * N
    assert len({r["rollout_id"] for r in rows}) == EXAMPLES * N
    assert len({(r["example_id"], r["rollout_index"]) for r in rows}) == EXAMPLES * N
    for row in rows:  # no teacher failure became a row
        assert row["error"] is None or row["error"].startswith(errors_allowed), row["error"]
    return rows


def _in_background(fn):
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported to the test below
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _wait_for(predicate, timeout_s=300.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_proxy_faults_are_retried_and_lose_nothing(fresh_teacher, sample_csv, tmp_path):
    plan = every(drop=7, slow=4, **{"500": 5, "429": 6, "503": 9})
    with FaultProxy(fresh_teacher.base_url, plan, slow_s=3.0) as proxy:
        teacher = fresh_teacher.model_copy(update={"base_url": proxy.url})
        config = PipelineConfig(input_uri=str(sample_csv), output_uri=str(tmp_path / "out"), n=N, batch_size=3)
        summary = run_pipeline(PROGRAM, teacher, config, rewards=REWARDS)

    assert summary.complete and summary.deferred == 0, summary.as_dict()
    for fault in ("drop", "slow", "500", "429", "503"):
        assert proxy.faults[fault] >= 1, proxy.faults
    rows = _assert_exactly_once(resolve(str(tmp_path / "out")))
    injected = ", ".join(f"{count} {fault}" for fault, count in sorted(proxy.faults.items()) if fault != "pass")
    _report("teacher proxy: " + injected, f"retried; complete in one run ({summary.elapsed_s:.0f} s)", rows)


def _collect_actor_pids() -> list[int]:
    """Pids of the Collect actors, found by their process titles (Ray names an actor's process
    `ray::MapWorker(MapBatches(CollectWorker))`): the state API would need the dashboard, which
    the tests' Ray runs without."""
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        title = " ".join(proc.info["cmdline"] or ())
        if title.startswith("ray::") and "CollectWorker" in title:
            pids.append(proc.info["pid"])
    return pids


def test_a_collect_actor_killed_mid_run(fresh_teacher, sample_csv, tmp_path):
    out = resolve(str(tmp_path / "out"))
    config = PipelineConfig(input_uri=str(sample_csv), output_uri=out.uri, n=N, batch_size=2, num_actors=2)
    thread, box = _in_background(lambda: run_pipeline(PROGRAM, fresh_teacher, config, rewards=REWARDS))
    _wait_for(lambda: committed_files(out), what="a first committed batch")

    workers = _collect_actor_pids()
    assert workers, "no Collect actor alive"
    os.kill(workers[0], signal.SIGKILL)  # as the OOM killer or a lost node would
    thread.join(timeout=600)

    # Ray restarts the actor and retries its batches; a run that still failed is resumed.
    first = (
        "failed: " + type(box["error"]).__name__
        if "error" in box
        else ("complete" if box["result"].complete else f"incomplete ({box['result'].missing} missing)")
    )
    did = f"first run {first}"
    if "error" in box or not box["result"].complete:
        summary = run_pipeline(PROGRAM, fresh_teacher, config, rewards=REWARDS)
        assert summary.complete
        did += f"; run again: {summary.resumed} already committed, {summary.new_rows} new"
    _report("a Collect actor SIGKILLed mid-run", did, _assert_exactly_once(out))


def _cli(sample_csv, output, *extra) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "raydspy.cli.main",
        "collect",
        "--program",
        PROGRAM,
        "--rewards",
        REWARDS,
        "--input",
        str(sample_csv),
        "--output",
        output,
        "--n",
        str(N),
        "--batch-size",
        "2",
        "--structured-outputs",
        "--max-tokens",
        "96",
        "--no-cache",
        *extra,
    ]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_the_driver_stopped_mid_run_then_run_again(fresh_teacher, sample_csv, tmp_path, how):
    out = resolve(str(tmp_path / "out"))
    driver = _cli(sample_csv, out.uri)
    _wait_for(lambda: committed_files(out) or driver.poll() is not None, what="a first committed batch")
    assert driver.poll() is None, driver.stdout.read()
    driver.send_signal(getattr(signal, how))
    output, _ = driver.communicate(timeout=300)
    if how == "SIGTERM":  # a graceful stop: `ray job stop`, or Ctrl-C
        assert driver.returncode == 130, output
        assert "Run the same command again" in output
    committed = len(read_committed(out)[0])
    assert 0 < committed < EXAMPLES * N

    again = _cli(sample_csv, out.uri)
    output, _ = again.communicate(timeout=600)
    assert again.returncode == 0, output
    assert f"{committed} already committed" in output
    _report(
        f"the driver stopped by {how} mid-run",
        f"exit {driver.returncode} with {committed} committed; run again: only the missing rollouts",
        _assert_exactly_once(out),
    )


def test_the_s3_server_stopped_and_restarted_mid_run(fresh_teacher, sample_csv, tmp_path):
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="flaky")
    storage = StorageOptions(s3_endpoint_url=endpoint)
    out = resolve("s3://flaky/run", storage)
    config = PipelineConfig(input_uri=str(sample_csv), output_uri=out.uri, n=N, batch_size=2, storage=storage)
    thread, box = _in_background(lambda: run_pipeline(PROGRAM, fresh_teacher, config, rewards=REWARDS))
    try:
        _wait_for(
            lambda: s3.list_objects_v2(Bucket="flaky", Prefix="run/part-").get("KeyCount", 0) > 0,
            what="a first committed batch",
        )
        server.stop()
        time.sleep(8)  # rollouts finish meanwhile; their commits fail and are retried
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()  # moto keeps its buckets in-process: the restarted server has them
        thread.join(timeout=600)
        assert "error" not in box, box.get("error")
        assert box["result"].complete, box["result"].as_dict()
        _report(
            "the S3 server stopped 8 s, then restarted",
            "commits retried; complete in one run",
            _assert_exactly_once(out),
        )
    finally:
        server.stop()
