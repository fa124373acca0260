"""Load on the HTTP service: concurrent status requests and concurrent run submissions.

Deploys the service (`raydspy.service.app:build_app`, as serve_configs/service.yaml does) on a
local Ray with Serve's proxy on a free port, lets one dry run finish so status requests read real
committed parts, then
1. sends ``--status-requests`` GET /v1/runs/{id} at once (default 200), and
2. submits ``--submissions`` dry runs at once (default 20; banking77, ``--examples`` × n=2 each)
   and follows them until every one has ended.
Reports errors (any status other than the expected 200 / 201, any run not SUCCEEDED) and latency
percentiles, and writes them as JSON with ``--json``. Runs execute as Ray tasks, at most
``--max-concurrent-runs`` at a time (the rest wait as PENDING).

    .venv/bin/python benchmarks/service_load.py [--status-requests 200] [--submissions 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import httpx

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
TOKEN = "bench-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentiles(latencies_s: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies_s)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49], 1),
        "p90_ms": round(q[89], 1),
        "p99_ms": round(q[98], 1),
        "max_ms": round(ms[-1], 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


async def _timed(call) -> tuple[float, int]:
    started = time.perf_counter()
    try:
        response = await call()
        return time.perf_counter() - started, response.status_code
    except httpx.HTTPError:
        return time.perf_counter() - started, -1


def _body(root: Path, name: str, examples: int) -> dict:
    return {
        "program": "raydspy.programs.banking77:program",
        "rewards": "raydspy.programs.banking77:rewards",
        "input_uri": str(root / "in" / "train.csv"),
        "output_uri": str(root / "out" / name),
        "n": 2,
        "limit": examples,
        "dry_run": True,
        "actors": 1,
        "batch_size": 4,
        "teacher": {"structured_outputs": True},
    }


async def _wait_all(client: httpx.AsyncClient, base: str, ids: list[str], timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        for run_id in ids:
            if states.get(run_id) not in (None, "PENDING", "RUNNING"):
                continue
            states[run_id] = (await client.get(f"{base}/v1/runs/{run_id}", headers=HEADERS)).json()["state"]
        if all(s not in ("PENDING", "RUNNING") for s in states.values()) and len(states) == len(ids):
            break
        await asyncio.sleep(1.0)
    return states


async def _load(base: str, root: Path, args: argparse.Namespace) -> dict:
    limits = httpx.Limits(max_connections=args.status_requests + args.submissions)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        first = (await client.post(f"{base}/v1/runs", json=_body(root, "warm", args.examples), headers=HEADERS)).json()[
            "id"
        ]
        warm = await _wait_all(client, base, [first], 600)
        assert warm[first] == "SUCCEEDED", warm

        status = await asyncio.gather(
            *[
                _timed(lambda: client.get(f"{base}/v1/runs/{first}", headers=HEADERS))
                for _ in range(args.status_requests)
            ]
        )
        started = time.perf_counter()
        results = await asyncio.gather(
            *[
                _timed(
                    lambda i=i: client.post(
                        f"{base}/v1/runs", headers=HEADERS, json=_body(root, f"load-{i}", args.examples)
                    )
                )
                for i in range(args.submissions)
            ]
        )
        runs = (await client.get(f"{base}/v1/runs", headers=HEADERS)).json()["runs"]
        ids = [r["id"] for r in runs if r["output_uri"].rsplit("/", 1)[-1].startswith("load-")]
        states = await _wait_all(client, base, ids, args.timeout_s)
        drained_s = time.perf_counter() - started
        # Status under load: the same requests again while nothing else runs is the baseline above.
    return {
        "status_requests": len(status),
        "status_errors": sum(code != 200 for _, code in status),
        "status_latency": _percentiles([t for t, _ in status]),
        "submissions": len(results),
        "submission_errors": sum(code != 201 for _, code in results),
        "submission_latency": _percentiles([t for t, _ in results]),
        "runs_succeeded": sum(s == "SUCCEEDED" for s in states.values()),
        "runs_found": len(ids),
        "all_runs_done_s": round(drained_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--status-requests", type=int, default=200)
    parser.add_argument("--submissions", type=int, default=20)
    parser.add_argument("--examples", type=int, default=8, help="examples per dry run (x n=2 rollouts)")
    parser.add_argument("--max-concurrent-runs", type=int, default=4)
    parser.add_argument("--timeout-s", type=float, default=900)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    import ray
    from ray import serve

    from raydspy.programs import banking77
    from raydspy.service.app import build_app

    root = Path(tempfile.mkdtemp(prefix="raydspy-service-load-"))
    (root / "in").mkdir()
    banking77.write_sample(root / "in" / "train.csv", size=args.examples)
    ray.init(
        num_cpus=8,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}},
    )
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        build_app(
            {
                "token": TOKEN,
                "input_prefixes": [str(root / "in")],
                "output_prefixes": [str(root / "out")],
                "state_uri": str(root / "state"),
                "max_concurrent_runs": args.max_concurrent_runs,
            }
        ),
        name="raydspy",
        route_prefix="/raydspy",
    )
    try:
        result = asyncio.run(_load(f"http://127.0.0.1:{port}/raydspy", root, args))
    finally:
        serve.shutdown()
        ray.shutdown()
    result["machine"] = f"{os.cpu_count()} cores"
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    errors = result["status_errors"] + result["submission_errors"] + (result["submissions"] - result["runs_succeeded"])
    raise SystemExit(1 if errors else 0)


if __name__ == "__main__":
    main()
