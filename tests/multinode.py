"""Collection runs on a multi-node Ray cluster built on this machine (`ray.cluster_utils.Cluster`:
a head that takes no CPU work and two worker nodes), while nodes and actors are lost.

Run as a script, one scenario a process (a process joins one Ray cluster; the Ray tier's session
Ray is another): it prints one JSON object, the outcome, which tests/test_multinode.py checks and
the recovery benchmark reports.

    python tests/multinode.py node-loss  --rollouts 4000   # a worker node removed mid-run
    python tests/multinode.py stress     --rollouts 20000  # actors killed, nodes removed and added
    python tests/multinode.py driver-kill --rollouts 4000  # the driver killed mid-run, then rerun

The head has 0 CPUs, so every Collect, planner and committer actor and every read task runs on a
worker node (Ray Data spreads them); the driver runs on the head, with the run's commit gate
(`raydspy.pipeline.committer.open_gate`). The teacher is an instant fake in its own process
(benchmarks/common.py) that counts the requests it answers: each rollout of the banking77 program
with structured outputs is one request, so requests - planned = rollouts redone.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "tests")]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PROGRAM = "raydspy.programs.banking77:program"
REWARDS = "raydspy.programs.banking77:rewards"
WORKER_CPUS = 4


@contextlib.contextmanager
def cluster(workers: int = 2) -> Iterator:
    """A head with no CPUs and ``workers`` worker nodes of `WORKER_CPUS` logical CPUs each, in a
    temp dir of their own, found by no other process: `Cluster` would write its address where
    every ``ray.init()`` on this machine looks for a running cluster (`/tmp/ray`), and other test
    sessions' local Rays would then try to join it."""
    import ray
    import ray._private.utils
    from ray.cluster_utils import Cluster

    ray._private.utils.write_ray_address = lambda *args, **kwargs: None
    temp_dir = tempfile.mkdtemp(prefix="mn-", dir="/tmp")  # short: Ray's socket paths have a length limit
    made = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "temp_dir": temp_dir},
    )
    try:
        for _ in range(workers):
            made.add_node(num_cpus=WORKER_CPUS)
        made.wait_for_nodes()
        yield made
    finally:
        ray.shutdown()  # the driver first: the cluster will not remove the node a driver is on
        made.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def connect(address: str) -> None:
    import ray

    ray.init(
        address=address,
        log_to_driver=False,
        runtime_env={
            "env_vars": {"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        },
    )


def write_input(folder: Path, examples: int) -> str:
    from ceiling import _write_input

    return _write_input(folder / "train.csv", examples)


def collect(input_uri: str, output_uri: str, teacher_url: str, n: int, on_progress=None):
    """One run of the banking77 program (the cluster joined first); returns its `RunSummary`."""
    from raydspy.pipeline import PipelineConfig, run_pipeline
    from raydspy.teacher.client import TeacherConfig

    teacher = TeacherConfig(base_url=teacher_url, model="fake", structured_outputs=True, cache=False)
    config = PipelineConfig(input_uri=input_uri, output_uri=output_uri, n=n, num_actors=4, max_error_rate=1.0)
    return run_pipeline(PROGRAM, teacher, config, rewards=REWARDS, on_progress=on_progress)


def committed(output_uri: str) -> dict[str, int]:
    """Rows and distinct rollout ids of every committed part, read back from the files as they are
    (no dedupe: a rollout committed twice counts twice)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from raydspy.core.storage import resolve
    from raydspy.pipeline.commits import committed_files

    location = resolve(output_uri)
    files = committed_files(location)
    if not files:
        return {"rows": 0, "distinct": 0, "files": 0}
    ids = pads.dataset(files, filesystem=location.filesystem, format="parquet").to_table(columns=["rollout_id"])
    column = ids.column("rollout_id")
    return {"rows": len(column), "distinct": len(pc.unique(column)), "files": len(files)}


class Progress:
    """The driver's progress (`on_progress`), for a killer thread to wait on."""

    def __init__(self):
        self.done = 0
        self.changed = threading.Condition()
        self.commits: list[tuple[float, int]] = []  # (time, rollouts done) after each committed batch

    def __call__(self, progress) -> None:
        with self.changed:
            self.done = progress.committed
            self.commits.append((time.monotonic(), progress.committed))
            self.changed.notify_all()

    def wait_for(self, rollouts: int, timeout_s: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.done >= rollouts, timeout_s)

    def first_commit_after(self, t: float) -> float | None:
        return next((at for at, _ in self.commits if at > t), None)


def _map_workers() -> list[dict]:
    """Ray Data's live actors (Collect workers, the planner, the committer) and their processes."""
    from ray._private.state import actors

    return [
        a
        for a in actors().values()
        if a.get("State") == "ALIVE" and a.get("ActorClassName", "").startswith("MapWorker(") and a.get("Pid")
    ]


def _outcome(summary, output_uri: str, requests: int, started: float, **extra) -> dict:
    found = committed(output_uri)
    return {
        "planned": summary.planned,
        "complete": summary.complete,
        "stopped": summary.stopped,
        **found,
        "requests": requests,
        "redone": requests - summary.planned,
        "elapsed_s": round(time.monotonic() - started, 2),
        **extra,
    }


def node_loss(args) -> dict:
    """A worker node removed once ``--after`` rollouts are committed; the run must finish alone."""
    from common import serve_fake_teacher

    counter = multiprocessing.Value("i", 0)
    with tempfile.TemporaryDirectory() as tmp, serve_fake_teacher(0.002, counter=counter) as (url, _):
        with cluster() as c:
            connect(c.address)
            source = write_input(Path(tmp), args.rollouts // args.n)
            progress, lost = Progress(), {}

            def killer():
                if progress.wait_for(args.after, 600):
                    victim = next(n for n in c.list_all_nodes() if not n.head)
                    lost["at"] = time.monotonic()
                    lost["rollouts_done"] = progress.done
                    c.remove_node(victim, allow_graceful=False)

            thread = threading.Thread(target=killer, daemon=True)
            thread.start()
            started = time.monotonic()
            summary = collect(source, f"{tmp}/out", url, args.n, on_progress=progress)
            thread.join(5)
            recovered = progress.first_commit_after(lost["at"]) if lost else None
            return _outcome(
                summary,
                f"{tmp}/out",
                counter.value,
                started,
                node_removed_after=lost.get("rollouts_done"),
                recover_s=round(recovered - lost["at"], 2) if recovered and lost else None,
            )


def stress(args) -> dict:
    """Every ``--seconds``: remove a worker node and add one back (``--node-share`` of the kills),
    or SIGKILL a random Ray Data actor; until the run ends (or ``--max-kills``). The run must finish
    with every rollout once. On 2 cores a new node and its actors take several seconds to start
    (DSPy imported in each): kills every few seconds there leave it rebuilding more than running."""
    from common import serve_fake_teacher

    counter = multiprocessing.Value("i", 0)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp, serve_fake_teacher(0.002, counter=counter) as (url, _):
        with cluster() as c:
            connect(c.address)
            source = write_input(Path(tmp), args.rollouts // args.n)
            progress, kills, result = Progress(), [], {}

            def run():
                try:
                    result["summary"] = collect(source, f"{tmp}/out", url, args.n, on_progress=progress)
                except BaseException as e:  # noqa: BLE001 - handed to the main thread
                    result["error"] = e

            # The run in a thread, the killer in the main one: adding a node installs signal handlers.
            started = time.monotonic()
            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            progress.wait_for(1, 600)  # from the first commit on
            while thread.is_alive() and len(kills) < args.max_kills:
                thread.join(args.seconds)
                if not thread.is_alive():
                    break
                at = time.monotonic()
                workers = [n for n in c.list_all_nodes() if not n.head]
                if rng.random() < args.node_share and len(workers) > 1:
                    c.remove_node(rng.choice(workers), allow_graceful=False)
                    c.add_node(num_cpus=WORKER_CPUS)
                    kills.append({"what": "node", "at": at, "done": progress.done})
                elif actors := _map_workers():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(rng.choice(actors)["Pid"], signal.SIGKILL)
                    kills.append({"what": "actor", "at": at, "done": progress.done})
            thread.join()
            if "error" in result:
                raise result["error"]
            summary = result["summary"]
            recoveries = [progress.first_commit_after(k["at"]) for k in kills]
            waits = [round(r - k["at"], 2) for k, r in zip(kills, recoveries) if r is not None]
            return _outcome(
                summary,
                f"{tmp}/out",
                counter.value,
                started,
                kills={w: sum(k["what"] == w for k in kills) for w in ("node", "actor")},
                recover_s=waits,
            )


def driver_kill(args) -> dict:
    """A driver process SIGKILLed once ``--after`` rollouts are committed; a second driver runs
    the same job against the same cluster and output and must finish it exactly."""
    from common import serve_fake_teacher

    counter = multiprocessing.Value("i", 0)
    with tempfile.TemporaryDirectory() as tmp, serve_fake_teacher(0.002, counter=counter) as (url, _):
        with cluster() as c:
            source = write_input(Path(tmp), args.rollouts // args.n)
            command = [sys.executable, __file__, "drive", c.address, source, f"{tmp}/out", url, str(args.n)]
            first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 600
            while committed(f"{tmp}/out")["rows"] < args.after and first.poll() is None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            killed_at = committed(f"{tmp}/out")["rows"]
            first.kill()
            first.wait(30)
            started = time.monotonic()
            second = subprocess.run(command, capture_output=True, text=True, timeout=900)
            summary = json.loads(second.stdout.strip().splitlines()[-1])
            found = committed(f"{tmp}/out")
            return {
                "planned": summary["planned"],
                "complete": summary["complete"],
                "resumed": summary["resumed"],
                **found,
                "killed_after_rows": killed_at,
                "requests": counter.value,
                "rerun_s": round(time.monotonic() - started, 2),
            }


def drive(args) -> dict:
    """One driver of `driver_kill` (its own process): join, run, print the summary."""
    connect(args.address)
    summary = collect(args.input, args.output, args.teacher_url, args.n)
    return {"planned": summary.planned, "complete": summary.complete, "resumed": summary.resumed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="scenario", required=True)
    for name in ("node-loss", "stress", "driver-kill"):
        one = sub.add_parser(name)
        one.add_argument("--rollouts", type=int, default=4000)
        one.add_argument("--n", type=int, default=4)
        one.add_argument("--after", type=int, default=1000, help="rollouts committed before the loss")
        one.add_argument("--seconds", type=float, default=12.0, help="stress: seconds between kills")
        one.add_argument("--node-share", type=float, default=0.3, help="stress: share of kills that remove a node")
        one.add_argument("--max-kills", type=int, default=12)
        one.add_argument("--seed", type=int, default=0)
    one = sub.add_parser("drive")
    for name in ("address", "input", "output", "teacher_url"):
        one.add_argument(name)
    one.add_argument("n", type=int)
    args = parser.parse_args()
    # Bounded: a scenario that hangs prints every thread's stack and exits, never blocks its caller.
    faulthandler.dump_traceback_later(float(os.environ.get("RAYDSPY_MULTINODE_TIMEOUT_S", "600")), exit=True)
    scenario = {"node-loss": node_loss, "stress": stress, "driver-kill": driver_kill, "drive": drive}[args.scenario]
    print(json.dumps(scenario(args)), flush=True)


if __name__ == "__main__":
    main()
