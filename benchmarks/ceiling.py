"""The pipeline's own ceiling: rollouts per second when the teacher is not what limits them.

A fake OpenAI-compatible teacher in its own process answers every request after a fixed delay
(instant: 2 ms; slow: 1 s) with a banking77 answer, and each contender runs the same examples:

    async-client   httpx with 64 requests in flight, the formatted bodies, no DSPy: what the
                   teacher's HTTP front can take (the limit of any client)
    collect        `raydspy.Collect` in this process, 32 threads (the banking77 program, its
                   rewards, one Parquet file): what one Python process of DSPy makes
    pipeline-A     `raydspy collect`'s pipeline (`run_pipeline`) in its default layout with A Collect
                   actors: planning, rollouts in actors, commits, the driver following the run

For each: rollouts/s over the whole run and over its active window (first request to last
answer, no start-up) and the start-up (seconds from the call to the first request: for the
pipelines, the input checks and the actors' start), CPU-seconds per rollout of this process tree (Ray's daemons and workers
included, the fake teacher left out), and for the pipelines the requests in flight during the
active window against the layout's actors x threads, and the drain (seconds from the last moment
90% of those were in flight to the last answer). Contenders alternate for --rounds rounds; each
row is the median round. The headline is pipeline-A / collect, on the same teacher in the same run:
over the whole run and over the active window (the pipeline's steady rate, what the start-up
does not amortise on a short run).

    .venv/bin/python benchmarks/ceiling.py [--requests 3000] [--slow-requests 1024] [--actors 1,4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from common import CpuMeter, init_local_ray, serve_fake_teacher  # noqa: E402 - benchmarks/ is on sys.path

PROGRAM = "raydspy.programs.banking77:program"
REWARDS = "raydspy.programs.banking77:rewards"
COLLECT_THREADS = 32
LIMIT_IN_FLIGHT = 64


def _in_flight(windows: list[tuple[float, float]], every_s: float) -> list[int]:
    first, last = min(s for s, _ in windows), max(e for _, e in windows)
    steps = int((last - first) / every_s) + 1
    return [sum(1 for s, e in windows if s <= first + i * every_s < e) for i in range(steps)]


def _windows(rollouts: str) -> list[tuple[float, float]]:
    import teacher_bench as tb

    return tb.call_windows(rollouts)


def _write_input(path: Path, size: int) -> str:
    """``size`` banking77 queries (CSV: text, category); past the 4,171 of the sample's labels, the
    queries again with a numbered suffix, so every example stays distinct (its own example id)."""
    from raydspy.programs import banking77

    rows = list(csv.DictReader(open(banking77.write_sample(path, size=None, seed=7))))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "category"])
        writer.writeheader()
        for i in range(size):
            row = rows[i % len(rows)]
            lap = i // len(rows)
            writer.writerow({**row, "text": row["text"] + (f" (#{lap})" if lap else "")})
    return str(path)


def run_collect(examples: list[dict], teacher, *, out: str) -> dict:
    import raydspy
    from raydspy.core.specs import load_program, load_rewards

    collect = raydspy.Collect(
        load_program(PROGRAM),
        out,
        reward_fn=load_rewards(REWARDS),
        num_threads=COLLECT_THREADS,
        lm=teacher.lm(),
        adapter=teacher.adapter(),
        sampling=teacher.sampling,
    )
    collect.collect(examples, n=1)
    return {"rollouts": len(examples), "in_flight_capacity": COLLECT_THREADS}


def run_pipeline_once(input_csv: str, teacher, *, out: str, count: int, actors: int) -> dict:
    from raydspy.pipeline import PipelineConfig, run_pipeline

    config = PipelineConfig(
        input_uri=input_csv, output_uri=out, n=1, limit=count, max_error_rate=1.0, num_actors=actors
    )
    summary = run_pipeline(PROGRAM, teacher, config, rewards=REWARDS)
    return {"rollouts": summary.new_rows, "in_flight_capacity": config.num_actors * config.threads_per_actor}


def run_async_client(bodies: list[dict], url: str, out: str) -> dict:
    import teacher_bench as tb

    measure = asyncio.run(tb._limit(bodies, url, LIMIT_IN_FLIGHT))
    return {"rollouts": measure.requests, "in_flight_capacity": LIMIT_IN_FLIGHT}


def measure(name: str, run, meter: CpuMeter, delay_s: float, out: str | None) -> dict:
    time.sleep(2)  # let Ray's daemons settle between contenders
    before, started, wall_start = meter.total(), time.perf_counter(), time.time()
    result = run()
    seconds, cpu = time.perf_counter() - started, meter.total() - before
    row = {
        "name": name,
        **result,
        "seconds": round(seconds, 2),
        "rollouts_per_s": round(result["rollouts"] / seconds, 1),
        "cpu_ms_per_rollout": round(1000 * cpu / result["rollouts"], 2),
    }
    if out is not None and Path(out).exists():
        windows = _windows(out)
        active = max(e for _, e in windows) - min(s for s, _ in windows)
        row["active_s"] = round(active, 2)
        row["active_rollouts_per_s"] = round(result["rollouts"] / active, 1)
        row["start_s"] = round(min(s for s, _ in windows) - wall_start, 2)  # the call until its first request
        if delay_s >= 0.5:  # a slow teacher: how full the layout kept it
            profile = _in_flight(windows, every_s=delay_s / 4)
            capacity = result["in_flight_capacity"]
            full = [i for i, k in enumerate(profile) if k >= 0.9 * capacity]
            row["mean_in_flight"] = round(statistics.mean(profile), 1)
            row["in_flight_share"] = round(statistics.mean(profile) / capacity, 3)
            row["drain_s"] = round((len(profile) - 1 - (full[-1] if full else 0)) * delay_s / 4, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="rollouts per contender, instant teacher")
    parser.add_argument("--slow-requests", type=int, default=1024, help="rollouts per contender, slow teacher")
    parser.add_argument("--delays", default="0.002,1.0", help="the fake teacher's seconds per answer")
    parser.add_argument("--actors", default="1,4", help="Collect actors of the pipelines measured")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--contenders", default="async-client,collect,pipeline", help="a subset to run")
    parser.add_argument("--out", default="benchmarks/results/ceiling.json")
    args = parser.parse_args()

    import teacher_bench as tb

    from raydspy.teacher.client import TeacherConfig

    work = Path(tempfile.mkdtemp())
    size = max(args.requests, args.slow_requests)
    input_csv = _write_input(work / "in.csv", size)
    all_examples = [{"text": r["text"]} for r in csv.DictReader(open(input_csv))]
    wanted = set(args.contenders.split(","))
    init_local_ray()
    results = []
    for delay_s in (float(d) for d in args.delays.split(",")):
        count = args.requests if delay_s < 0.5 else args.slow_requests
        examples = all_examples[:count]
        with serve_fake_teacher(delay_s) as (url, server_pid):
            meter = CpuMeter(exclude=server_pid)
            teacher = TeacherConfig(
                base_url=url, model="fake", structured_outputs=True, temperature=1.0, max_tokens=192, cache=False
            )
            bodies = tb.formatted_requests(examples, teacher)
            contenders = []
            if "async-client" in wanted:
                contenders.append(("async-client", partial(run_async_client, bodies, url), False))
            if "collect" in wanted:
                contenders.append(("collect", partial(run_collect, examples, teacher), True))
            if "pipeline" in wanted:
                for a in (int(a) for a in args.actors.split(",")):
                    run = partial(run_pipeline_once, input_csv, teacher, count=count, actors=a)
                    contenders.append((f"pipeline-{a}", run, True))
            rounds: dict[str, list[dict]] = {}
            for round_ in range(1, args.rounds + 1):
                for name, run, writes in contenders:
                    out = str(work / f"{delay_s}-{name}-{round_}")
                    row = measure(name, partial(run, out=out), meter, delay_s, out if writes else None)
                    rounds.setdefault(name, []).append(row)
                    print(f"delay {delay_s}s round {round_} {json.dumps(row)}", flush=True)
            meter.stop()
        collect_rate = collect_active = None
        for name, rows in rounds.items():
            row = sorted(rows, key=lambda r: r["rollouts_per_s"])[len(rows) // 2]
            if name == "collect":
                collect_rate, collect_active = row["rollouts_per_s"], row.get("active_rollouts_per_s")
            results.append({"delay_s": delay_s, **row, "rounds": [r["rollouts_per_s"] for r in rows]})
        for row in results:
            if row["delay_s"] == delay_s and collect_rate:
                row["ratio_to_collect"] = round(row["rollouts_per_s"] / collect_rate, 3)
                if collect_active and "active_rollouts_per_s" in row:
                    row["active_ratio_to_collect"] = round(row["active_rollouts_per_s"] / collect_active, 3)
    print(
        "\n| teacher | contender | rollouts/s (rounds) | / collect | active rollouts/s | / collect | start s "
        "| CPU-ms per rollout | in flight / capacity | drain s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['delay_s'] * 1000:g} ms | {r['name']} | {r['rollouts_per_s']} ({', '.join(map(str, r['rounds']))}) | "
            f"{r.get('ratio_to_collect', '')} | {r.get('active_rollouts_per_s', '')} | "
            f"{r.get('active_ratio_to_collect', '')} | {r.get('start_s', '')} | {r['cpu_ms_per_rollout']} | "
            f"{r.get('in_flight_share', '')} | {r.get('drain_s', '')} |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "command": "benchmarks/ceiling.py " + " ".join(sys.argv[1:]),
                "cpus": os.cpu_count(),
                "rows": results,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
