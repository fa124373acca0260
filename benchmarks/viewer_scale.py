"""The rollout viewer's queries on a large output: time of each and the process's peak memory.

Writes ``--rows`` rollout rows (default 1,000,000) in part files of ``--per-file`` rows, each
file a copy of an orders-like template table (two LM calls per rollout, tests/viewer_outputs.py)
with its own rollout ids, rewards and errors, as ``pq.write_table`` writes a committed part.
Then, in a fresh process, times what the viewer's pages ask (`raydspy.viewer.output.OutputView`):
the summary (cold, then warm), the first and a deep page with no filter, with an error-type filter
(cold counts, then cached) and with a reward range, and opening a rollout from its part and by a
scan of every part. The peak RSS is compared with the output's size on disk and with the size of
the table read whole (what the viewer never does).

    .venv/bin/python benchmarks/viewer_scale.py [--rows 1000000] [--per-file 4096] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_output(folder: Path, rows: int, per_file: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(REPO / "tests"))
    from viewer_outputs import record

    from raydspy.core.rollouts import records_to_table

    template = records_to_table([record(i) for i in range(per_file)])
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for first in range(0, rows, per_file):
        count = min(per_file, rows - first)
        table = template.slice(0, count)
        ids = pa.array([f"{first + i:032x}" for i in range(count)])
        examples = pa.array([f"ex-{(first + i) // 4}" for i in range(count)])
        rewards = pa.array(rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=count))
        table = table.set_column(0, "rollout_id", ids).set_column(1, "example_id", examples)
        table = table.set_column(table.schema.get_field_index("reward"), "reward", rewards)
        pq.write_table(table, folder / f"part-{first:012d}.parquet")


def measure(folder: Path) -> dict:
    from raydspy.viewer.filters import RolloutFilter
    from raydspy.viewer.output import OutputView

    view = OutputView(str(folder))
    results = {}

    def timed(name, call):
        started = time.perf_counter()
        value = call()
        results[name] = round(time.perf_counter() - started, 3)
        return value

    totals = timed("summary_cold_s", lambda: view.overview()[0])
    timed("summary_warm_s", view.overview)
    timed("page_first_s", lambda: view.page(RolloutFilter(), 0, 50))
    deep = timed("page_deep_s", lambda: view.page(RolloutFilter(), totals.stats.rows - 100, 50))
    parse = RolloutFilter(error="AdapterParseError")
    timed("page_error_filter_cold_s", lambda: view.page(parse, 0, 50))
    timed("page_error_filter_deep_cached_s", lambda: view.page(parse, 10_000, 50))
    timed("page_reward_range_s", lambda: view.page(RolloutFilter(min_reward=0.5, max_reward=0.75), 0, 50))
    row = deep.rows[0]
    timed("open_rollout_with_part_s", lambda: view.rollout(row["rollout_id"], row["part"]))
    timed("open_rollout_by_scan_s", lambda: view.rollout(row["rollout_id"]))
    results["rows"] = totals.stats.rows
    results["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--per-file", type=int, default=4096)
    parser.add_argument("--folder", default=None, help="reuse or write the output here (default: a temporary folder)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only:
        print(json.dumps(measure(Path(args.folder))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder or Path(tmp) / "run")
        if not any(folder.glob("*.parquet")):
            write_output(folder, args.rows, args.per_file)
        # A fresh process: its peak memory is the viewer's, not the writer's.
        out = subprocess.run(
            [sys.executable, __file__, "--measure-only", "--folder", str(folder)],
            capture_output=True,
            text=True,
            check=True,
        )
        results = json.loads(out.stdout)
        results["on_disk_mib"] = round(sum(p.stat().st_size for p in folder.glob("*.parquet")) / 2**20, 1)
        import pyarrow.parquet as pq

        first = next(iter(sorted(folder.glob("*.parquet"))))
        per_file = pq.read_table(first).nbytes
        results["arrow_whole_mib_estimate"] = round(per_file * len(list(folder.glob("*.parquet"))) / 2**20, 1)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
