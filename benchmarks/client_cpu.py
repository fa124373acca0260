"""CPU seconds each client spends per rollout, against a fake teacher that answers in fixed time.

On one machine the teacher and its clients share the cores, so every CPU-second a client spends
is taken from the engine (BENCHMARKS.md, "Where the pipeline loses"). This measures that cost
alone: a loopback OpenAI-compatible server in its own process answers every request after
``--delay`` seconds with a banking77 answer in JSON, and each contender sends the same requests
with 64 in flight:

    async-client   httpx, the formatted bodies (what teacher_bench.py calls the limit)
    parallel-64    dspy.Parallel, 64 threads, the banking77 program
    pipeline-R     raydspy's Ray Data pipeline, default layout (2 actors x 32 threads), rewards,
                   commits, R rollouts per actor call (--layouts)

Each runs twice, at --requests and at --scale times as many, so the cost splits into a fixed part
(start-up: Ray workers importing DSPy, Ray Data planning) and a marginal part per rollout, the one
that matters on a long run. CPU is user + system seconds of this process and every process it
started (Ray's daemons and workers included: they run because of the clients), the fake teacher
left out; other programs on the machine do not count (`CpuMeter`).

    .venv/bin/python benchmarks/client_cpu.py [--requests 192] [--scale 3] [--delay 2] [--layouts 1,4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from common import CpuMeter, init_local_ray, serve_fake_teacher  # noqa: E402 - benchmarks/ is on sys.path when run as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=192, help="requests of the small run of each contender")
    parser.add_argument("--scale", type=int, default=3, help="the large run sends SCALE times as many")
    parser.add_argument("--delay", type=float, default=2.0, help="seconds the fake teacher takes per request")
    parser.add_argument("--layouts", default="1,4", help="rollouts per actor call of the pipelines measured")
    parser.add_argument("--out", default="benchmarks/results/client-cpu.json")
    args = parser.parse_args()

    import teacher_bench as tb

    from raydspy.programs import banking77
    from raydspy.teacher.client import TeacherConfig

    teacher_process = contextlib.ExitStack()
    url, server_pid = teacher_process.enter_context(serve_fake_teacher(args.delay))
    meter = CpuMeter(exclude=server_pid)
    teacher = TeacherConfig(
        base_url=url, model="fake", structured_outputs=True, temperature=1.0, max_tokens=192, cache=False
    )
    work = Path(tempfile.mkdtemp())
    large = args.requests * args.scale
    input_csv = str(banking77.write_sample(work / "in.csv", size=large, seed=7))
    examples = list(csv.DictReader(open(input_csv)))
    init_local_ray()
    bodies = tb.formatted_requests(examples, teacher)
    contenders = {
        "async-client": lambda k: asyncio.run(tb._limit(bodies[:k], url, 64)),
        "parallel-64": lambda k: tb.parallel(examples[:k], teacher, 64),
        **{
            f"pipeline-{r}": (lambda k, r=int(r): tb.pipeline(input_csv, teacher, k, rollouts_per_call=r))
            for r in args.layouts.split(",")
        },
    }
    rows = []
    for name, run in contenders.items():
        row = {"name": name}
        for size, count in (("small", args.requests), ("large", large)):
            time.sleep(3)  # let Ray's daemons settle between runs
            before, started = meter.total(), time.perf_counter()
            measure = run(count)
            seconds, cpu = time.perf_counter() - started, meter.total() - before
            row[size] = {
                "requests": measure.requests,
                "seconds": round(seconds, 1),
                "cpu_s": round(cpu, 1),
                "cpu_ms_per_rollout": round(1000 * cpu / measure.requests, 1),
            }
        extra = row["large"]["requests"] - row["small"]["requests"]
        row["marginal_cpu_ms_per_rollout"] = round(1000 * (row["large"]["cpu_s"] - row["small"]["cpu_s"]) / extra, 1)
        row["fixed_cpu_s"] = round(row["small"]["cpu_s"] - row["marginal_cpu_ms_per_rollout"] * args.requests / 1000, 1)
        rows.append(row)
        print(
            f"{name:14s} small {row['small']}  large {row['large']}  marginal "
            f"{row['marginal_cpu_ms_per_rollout']} CPU-ms/rollout, fixed {row['fixed_cpu_s']} CPU-s",
            flush=True,
        )
    meter.stop()
    teacher_process.close()
    Path(args.out).write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "delay_s": args.delay,
                "command": "benchmarks/client_cpu.py " + " ".join(sys.argv[1:]),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
