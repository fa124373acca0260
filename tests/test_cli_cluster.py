"""Which Ray a command runs on (`raydspy.cli.cluster`) and the one line a failed command prints
(`raydspy.cli.failures`).

Unit tests: the order ``--ray-address`` > ``$RAY_ADDRESS`` > a local ``ray start``'s address file >
a Ray of its own; an address where nothing listens is refused in one line within seconds (Ray itself
waits for minutes); the failure line names the innermost cause. Ray tests run the real command: a
collection joins a running head (`ray_head`); a run whose actors cannot load the program exits 1
with one line, the traceback only in the log file, or on the terminal with ``-v``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from ray_head import _free_ports
from test_cli_output import _orders_teacher

from raydspy.cli import cluster, failures
from raydspy.errors import ClusterUnreachableError

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    return _free_ports(1)[0]


# -- resolve: which cluster -------------------------------------------------------------------


@pytest.fixture
def head_file(tmp_path, monkeypatch):
    """A temp folder whose address file names ``127.0.0.1:6390``, as ``ray start --head`` writes it."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "ray_current_cluster").write_text("127.0.0.1:6390")
    return str(tmp_path)


def test_the_flag_wins_then_the_environment_then_a_local_ray_start(head_file, monkeypatch):
    assert cluster.resolve(None, temp_dir=head_file) == cluster.RayTarget("127.0.0.1:6390", "ray start")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert cluster.resolve(None, temp_dir=head_file) == cluster.RayTarget("10.0.0.5:6379", "$RAY_ADDRESS")
    assert cluster.resolve("10.0.0.9:6379", temp_dir=head_file) == cluster.RayTarget("10.0.0.9:6379", "--ray-address")
    assert not cluster.resolve("local", temp_dir=head_file).joins  # a Ray of its own, whatever runs
    assert cluster.resolve("auto", temp_dir=head_file).address == "127.0.0.1:6390"


def test_no_cluster_anywhere_means_a_ray_of_its_own_and_auto_says_none_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster.resolve(None, temp_dir=str(tmp_path)) == cluster.RayTarget(None, "local")
    with pytest.raises(ClusterUnreachableError, match="no `ray start --head` runs on this machine"):
        cluster.resolve("auto", temp_dir=str(tmp_path))


def test_an_address_where_nothing_listens_is_refused_in_seconds_and_one_line(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    address = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(ClusterUnreachableError) as caught:
        cluster.connect(address, num_cpus=2)
    assert time.monotonic() - started < cluster.PROBE_TIMEOUT_S + 5
    message = str(caught.value)
    assert "\n" not in message and address in message and "--ray-address" in message, message
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_a_stale_address_file_says_how_to_clear_it(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "ray_current_cluster").write_text(f"127.0.0.1:{_free_port()}")  # a head that died
    target = cluster.resolve(None, temp_dir=str(tmp_path))
    with pytest.raises(ClusterUnreachableError, match="no longer running: `ray stop`, or --ray-address local"):
        cluster._probe(target)


# -- the failure line -------------------------------------------------------------------------


def test_the_line_names_the_innermost_cause_the_logs_and_what_a_rerun_does(tmp_path):
    try:
        try:
            raise ModuleNotFoundError("No module named 'orders_extras'\n  (more lines)")
        except ModuleNotFoundError as inner:
            raise RuntimeError("UDF failed to process a data block") from inner
    except RuntimeError as e:
        line = failures.one_line(e, "collect", tmp_path)
    assert line == (
        f"collect failed: ModuleNotFoundError: No module named 'orders_extras' (logs: {tmp_path}; -v shows the "
        "traceback). The rollouts committed so far are kept: run the same command again to do only the rest."
    )


def test_a_lost_node_is_named_as_one(tmp_path):
    from ray.exceptions import ActorDiedError, RayTaskError

    wrapped = RayTaskError("map_batches", "Traceback ...", ActorDiedError())
    assert failures.root_cause(wrapped).__class__ is ActorDiedError
    line = failures.one_line(wrapped, "export", None)
    assert line.startswith("export failed: a Ray worker or node was lost (ActorDiedError")
    assert line.endswith("Run the same command again: it writes the export anew.") and "\n" not in line


def test_an_actor_that_could_not_start_is_named_by_the_error_its_init_raised():
    from ray.exceptions import ActorDiedError, RayTaskError

    raised = ModuleNotFoundError("No module named 'orders_extras'")
    text = f'Traceback (most recent call last):\n  File "w.py", line 1\nModuleNotFoundError: {raised}'
    died = ActorDiedError(RayTaskError("MapWorker.__init__", text, raised))
    line = failures.one_line(died, "collect", None)
    assert line.startswith("collect failed: an actor could not start: ModuleNotFoundError: No module named"), line


# -- the real command ---------------------------------------------------------------------------


def _collect(output: Path, teacher_url: str, env: dict, *extra: str) -> subprocess.CompletedProcess:
    command = [
        *(sys.executable, "-m", "raydspy.cli.main", "collect", "--task", "orders", "--limit", "3", "--n", "2"),
        *("--output", str(output), "--teacher-url", teacher_url, "--teacher-model", "fake-model", "--no-cache"),
        *("--actors", "1", "--threads", "2", *extra),
    ]
    # In tests/: a local Ray's workers get the working directory on their path (`user_programs`).
    return subprocess.run(command, cwd=REPO / "tests", env=env, capture_output=True, text=True, timeout=600)


def _env(**extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "COLUMNS": "500"}
    env.pop("RAY_ADDRESS", None)
    return {**env, **extra}


@pytest.mark.ray
def test_collect_joins_a_running_cluster(ray_head, tmp_path):
    with FakeOpenAI(reply=_orders_teacher) as teacher:
        done = _collect(tmp_path / "out", teacher.url, _env(RAY_ADDRESS=ray_head.address))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ray: joined the cluster at {ray_head.address} (from $RAY_ADDRESS)" in done.stderr, done.stderr
    assert "rows in output" in done.stdout and "6" in done.stdout, done.stdout
    assert f"{ray_head.temp_dir}" in done.stderr  # the logs are the cluster's session logs


@pytest.mark.ray
@pytest.mark.parametrize("verbose", [False, True])
def test_a_failed_run_prints_one_line_and_the_traceback_only_with_verbose(tmp_path, verbose):
    flags = ["--program", "user_programs.actor_refuses:program", "--num-cpus", "4", *(["-v"] if verbose else [])]
    with FakeOpenAI(reply=_orders_teacher) as teacher:
        done = _collect(tmp_path / "out", teacher.url, _env(), *flags)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: collect failed: ") and "orders_extras" in errors[0], errors[0]
    assert "logs: " in errors[0] and "run the same command again" in errors[0], errors[0]
    assert ("Traceback (most recent call last)" in done.stderr) is verbose, done.stderr[-3000:]
    if not verbose:
        assert len(done.stderr.splitlines()) < 10, done.stderr
        logs = Path(errors[0].split("logs: ")[1].split(";")[0])
        (own,) = logs.glob("raydspy-collect-*.log")
        assert "Traceback (most recent call last)" in own.read_text()
