"""The driver's peak memory against the size of the input: `raydspy collect` run as its own
process on 10,000 to 1,000,000 examples, its resident set sampled every 0.2 s.

The program is the orders workload (`raydspy.programs.orders`, one short message per example);
the examples are generated (``message`` unique per row) into one Parquet file per size. Two modes:

    dry      --dry-run: prompts formatted, no LM (the cheapest rollout: the pipeline's own cost)
    instant  against a fake teacher in its own process answering at once (`common.serve_fake_teacher`)

Each size runs a fresh `raydspy collect` (and so a fresh local Ray). Reported per run: the
driver's peak RSS, the peak of the Ray workers it started (all together), the wall time, and the
driver's peak against that of the smallest size (the figure that must stay flat). A second pass
(``--resume``) deletes half the part files of the largest dry run and runs it again, so the
resume join is measured too.

    .venv/bin/python benchmarks/driver_memory.py [--sizes 10000 100000 1000000] [--instant-sizes 10000 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from common import REPO, serve_fake_teacher

CITIES = ["Lyon", "Porto", "Oslo", "Quito", "Hanoi", "Perth", "Cusco", "Turku"]
ITEMS = ["lamps", "chairs", "kettles", "rugs", "mugs", "clocks", "desks", "fans"]
#: The fake teacher's answer to both of the program's calls (JSON: each call parses its own fields).
ORDER_ANSWER = json.dumps({"city": "Lyon", "quantity": 3, "item": "lamps", "reply": "Sending 3 lamps to Lyon."})


def write_examples(path: Path, size: int) -> Path:
    """``size`` distinct order messages as one Parquet file (written in chunks)."""
    writer = None
    for start in range(0, size, 100_000):
        rows = range(start, min(size, start + 100_000))
        messages = [
            f"Hi, order #{i}: please send {i % 97 + 1} {ITEMS[i % 8]} to our shop in {CITIES[(i // 8) % 8]}."
            for i in rows
        ]
        table = pa.table({"message": messages})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()
    return path


def peak_memory(process: subprocess.Popen, period_s: float = 0.2) -> tuple[int, int]:
    """Sample the driver's RSS, and the sum of its descendants' RSS, until it exits; the peaks."""
    driver, workers = 0, 0
    parent = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            driver = max(driver, parent.memory_info().rss)
            total = 0
            for child in parent.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            workers = max(workers, total)
        except psutil.Error:
            pass
        time.sleep(period_s)
    return driver, workers


def collect(input_path: Path, output: Path, extra: list[str]) -> dict:
    summary = output.with_suffix(".summary.json")
    command = [
        str(REPO / ".venv" / "bin" / "raydspy"),
        "collect",
        "--program",
        "raydspy.programs.orders:program",
        "--input",
        str(input_path),
        "--output",
        str(output),
        "--summary-json",
        str(summary),
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    reader.start()
    driver, workers = peak_memory(process)
    seconds = time.perf_counter() - started
    reader.join(5)
    if process.returncode != 0:
        raise SystemExit(f"raydspy collect failed ({process.returncode}):\n{''.join(stderr[-40:])}")
    result = json.loads(summary.read_text())
    return {
        "rows": result["rows"],
        "new_rows": result["new_rows"],
        "resumed": result["resumed"],
        "seconds": round(seconds, 1),
        "driver_peak_mib": round(driver / 2**20),
        "workers_peak_mib": round(workers / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--instant-sizes", type=int, nargs="*", default=[10_000, 50_000])
    parser.add_argument(
        "--batch-size", type=int, help="examples per committed file (default: the run's own, bounded files)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="also resume the largest dry run with half its parts gone"
    )
    parser.add_argument("--out", default="benchmarks/results/driver-memory.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp())
    rows = []
    common = ["--max-error-rate", "1.0", *(["--batch-size", str(args.batch_size)] if args.batch_size else [])]

    def report(row: dict) -> None:
        base = next((r for r in rows if r["mode"] == row["mode"]), row)
        row["driver_vs_smallest"] = round(row["driver_peak_mib"] / base["driver_peak_mib"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)

    for size in args.sizes:
        data = write_examples(work / f"in-{size}.parquet", size)
        report({"mode": "dry", "examples": size, **collect(data, work / f"dry-{size}", [*common, "--dry-run"])})
    if args.resume and args.sizes:
        size = max(args.sizes)
        out = work / f"dry-{size}"
        parts = sorted(out.glob("part-*.parquet"))
        for part in parts[::2]:
            part.unlink()
        data = work / f"in-{size}.parquet"
        report({"mode": "dry-resume", "examples": size, **collect(data, out, [*common, "--dry-run"])})
    if args.instant_sizes:
        with serve_fake_teacher(0.0, ORDER_ANSWER) as (url, _):
            teacher = ["--teacher-url", url, "--teacher-model", "fake", "--no-cache", "--structured-outputs"]
            for size in args.instant_sizes:
                data = work / f"in-{size}.parquet"
                if not data.exists():
                    write_examples(data, size)
                report(
                    {
                        "mode": "instant",
                        "examples": size,
                        **collect(data, work / f"instant-{size}", [*common, *teacher]),
                    }
                )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "command": "benchmarks/driver_memory.py " + " ".join(sys.argv[1:]),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
