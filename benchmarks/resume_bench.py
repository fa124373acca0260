"""What a resumed run pays to leave out what its output holds: the planner's filter (a set of the
committed rollout ids in the planner actor, up to `raydspy.pipeline.planning.FILTER_COMMITTED_MAX`)
against Ray Data's hash join (above it), side by side on one output.

A first run commits every rollout of ``--examples`` banking77 queries (n=1; against an instant
fake teacher, or as a dry run with ``--dry-run``); then the same job runs again, which finds
nothing left to do, alternately through the filter and through the join (the bound set to 0),
for ``--rounds`` rounds. Each row is the median of its rounds, in seconds for the whole call
(input check, plan, actors, summary).

    .venv/bin/python benchmarks/resume_bench.py [--examples 3000] [--rounds 2] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from ceiling import PROGRAM, REWARDS, _write_input  # noqa: E402 - benchmarks/ is on sys.path
from common import init_local_ray, serve_fake_teacher  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dry-run", action="store_true", help="commit dry-run rollouts (no teacher)")
    parser.add_argument("--out", default=None, help="write the results here as JSON")
    args = parser.parse_args()

    from raydspy.pipeline import PipelineConfig, planning, run_pipeline
    from raydspy.teacher.client import TeacherConfig

    work = Path(tempfile.mkdtemp())
    input_csv = _write_input(work / "in.csv", args.examples)
    init_local_ray(2)
    with serve_fake_teacher(0.002) as (url, _):
        teacher = TeacherConfig(base_url=url, model="fake", structured_outputs=True, cache=False)
        config = PipelineConfig(
            input_uri=input_csv, output_uri=str(work / "out"), n=1, max_error_rate=1.0, dry_run=args.dry_run
        )
        started = time.perf_counter()
        first = run_pipeline(PROGRAM, teacher, config, rewards=REWARDS)
        print(f"first run: {first.new_rows} rollouts in {time.perf_counter() - started:.1f} s", flush=True)
        seconds: dict[str, list[float]] = {"filter": [], "join": []}
        for _ in range(args.rounds):
            for name, bound in (("filter", planning.FILTER_COMMITTED_MAX), ("join", 0)):
                default, planning.FILTER_COMMITTED_MAX = planning.FILTER_COMMITTED_MAX, bound
                try:
                    started = time.perf_counter()
                    again = run_pipeline(PROGRAM, teacher, config, rewards=REWARDS)
                    seconds[name].append(round(time.perf_counter() - started, 2))
                finally:
                    planning.FILTER_COMMITTED_MAX = default
                assert (again.resumed, again.new_rows) == (first.new_rows, 0), again
                print(f"resume through the {name}: {seconds[name][-1]} s", flush=True)
    result = {
        "examples": args.examples,
        "dry_run": args.dry_run,
        **{f"{name}_s": statistics.median(values) for name, values in seconds.items()},
        "rounds": seconds,
    }
    result["join_over_filter"] = round(result["join_s"] / result["filter_s"], 2)
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
