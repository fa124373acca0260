"""What a command pays to start: on a Ray of its own (cold) against a running cluster (warm).

The real ``raydspy`` commands run as a user runs them, in their own processes: ``collect`` of the
banking77 program on ``--rollouts`` examples (the task's n=3: three rollouts each) against an
instant fake teacher, then ``export sft`` of those rollouts. Cold, each command gets ``--ray-address local`` and starts its own local
Ray; warm, a ``ray start --head`` runs first (its own temp folder, ``RAY_TMPDIR``, so no other Ray
on this machine sees it) and each command finds it by itself, as it finds any ``ray start`` on its
machine. The rounds alternate cold and warm, so both see the same machine. Reported (medians, s):
``collect`` to its first committed rollout (a ``part-*.parquet`` file appears under the output),
``collect`` wall, ``export sft`` wall.

    .venv/bin/python benchmarks/warm_cluster.py [--rollouts 600] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from ceiling import _write_input  # noqa: E402 - benchmarks/ is on sys.path
from common import REPO, serve_fake_teacher  # noqa: E402

RAYDSPY = str(Path(sys.executable).parent / "raydspy")
RAY = str(Path(sys.executable).parent / "ray")


def _timed(command: list[str], env: dict, *, watch: Path | None = None) -> tuple[float, float | None]:
    """``(wall seconds, seconds to the first part file under watch)`` of one command."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = None
    while process.poll() is None:
        if watch is not None and first is None and any(watch.glob("**/part-*.parquet")):
            first = time.perf_counter() - started
        time.sleep(0.05)
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{process.stderr.read().decode()}")
    return wall, first


def _round(work: Path, input_csv: str, url: str, rollouts: int, env: dict, address: list[str]) -> dict:
    out, sft = work / "rollouts", work / "sft"
    shutil.rmtree(out, ignore_errors=True)
    collect = [RAYDSPY, "collect", "--task", "banking77", "--input", input_csv, "--output", str(out)]
    collect += ["--limit", str(rollouts), "--teacher-url", url, "--teacher-model", "fake", *address]
    collect_s, first_s = _timed(collect, env, watch=out)
    export_s, _ = _timed([RAYDSPY, "export", "sft", "--rollouts", str(out), "--output", str(sft), *address], env)
    return {"first_rollout_s": first_s, "collect_s": collect_s, "export_sft_s": export_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=600, help="examples (n=3 rollouts each)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of each Ray, cold and warm")
    parser.add_argument("--out", default=None, help="write the results here as JSON")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="warm-"))
    ray_tmp = Path(tempfile.mkdtemp(prefix="rw-", dir="/tmp"))  # short: Ray's socket paths are bounded
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Loopback only, as in tests/ray_head.py: no token auth (Ray turns it on when ~/.ray/auth_token exists).
    env |= {
        "RAY_TMPDIR": str(ray_tmp),
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": str(REPO),
        "RAY_AUTH_MODE": "disabled",
    }
    input_csv = _write_input(work / "in.csv", args.rollouts)
    results: dict[str, list[dict]] = {"cold": [], "warm": []}
    # --block in a session of its own: SIGTERM then stops this head and no other Ray (`ray stop`
    # would stop every Ray of this user on the machine).
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--num-cpus", str(args.num_cpus), "--include-dashboard", "false"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while not (ray_tmp / "ray" / "ray_current_cluster").exists():
            if head.poll() is not None:
                raise RuntimeError(f"ray start exited {head.returncode}")
            time.sleep(0.2)
        with serve_fake_teacher(0.0) as (url, _):
            for i in range(args.rounds):
                for name, address in (
                    ("cold", ["--ray-address", "local", "--num-cpus", str(args.num_cpus)]),
                    ("warm", []),
                ):
                    row = _round(work, input_csv, url, args.rollouts, env, address)
                    results[name].append(row)
                    print(f"round {i + 1} {name}: {json.dumps(row)}", flush=True)
    finally:
        head.terminate()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    summary = {"rollouts": args.rollouts, "rounds": args.rounds}
    for name, rows in results.items():
        for key in rows[0]:
            summary[f"{name}_{key}"] = round(statistics.median(r[key] for r in rows), 2)
    for key in ("first_rollout_s", "collect_s", "export_sft_s"):
        summary[f"cold_over_warm_{key}"] = round(summary[f"cold_{key}"] / summary[f"warm_{key}"], 2)
    summary["raw"] = results
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
