"""Dry runs at scale: prompts formatted per second, and peak memory for 1,000 and 100,000 examples.

The banking77 program's prompts are formatted by the Ray Data pipeline with no LM (``--dry-run``)
and committed to Parquet. Memory is sampled every 0.2 s as the resident set of the driver plus all
Ray worker processes of this session (the actors, the readers); streaming keeps it flat, where a
run that held every row would grow with the input.

    .venv/bin/python benchmarks/dry_run_bench.py [--sizes 1000 100000] [--out benchmarks/results/dry_run.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import psutil  # noqa: E402
from common import init_local_ray  # noqa: E402 - benchmarks/ is on sys.path when run as a script

from raydspy.pipeline import PipelineConfig, run_pipeline  # noqa: E402
from raydspy.programs import banking77  # noqa: E402
from raydspy.teacher.client import TeacherConfig  # noqa: E402


class PeakMemory:
    """Samples the RSS of this process and every Ray worker (``ray::`` processes) in a thread."""

    def __init__(self, period_s: float = 0.2):
        self.period_s, self.peak, self._stop = period_s, 0, threading.Event()

    def _sample(self) -> int:
        total = psutil.Process().memory_info().rss
        for p in psutil.process_iter(["cmdline", "memory_info"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if cmd.startswith("ray::") and p.info["memory_info"]:
                total += p.info["memory_info"].rss
        return total

    def __enter__(self) -> PeakMemory:
        def loop():
            while not self._stop.wait(self.period_s):
                self.peak = max(self.peak, self._sample())

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def synthetic_examples(path: Path, size: int) -> Path:
    """``size`` banking77 queries (cycled, each made unique by its row number)."""
    texts = [r["text"] for r in csv.DictReader(open(banking77.write_sample(path.with_suffix(".src.csv"), size=500)))]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text"])
        for i in range(size):
            writer.writerow([f"{texts[i % len(texts)]} (#{i})"])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100000])
    parser.add_argument("--out", default="benchmarks/results/dry_run.json")
    args = parser.parse_args()

    init_local_ray()
    teacher = TeacherConfig(structured_outputs=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            source = synthetic_examples(Path(tmp) / f"in-{size}.csv", size)
            config = PipelineConfig(
                input_uri=str(source),
                output_uri=f"{tmp}/out-{size}",
                n=1,
                batch_size=64,
                num_actors=2,
                threads_per_actor=4,
                dry_run=True,
            )
            with PeakMemory() as memory:
                started = time.perf_counter()
                summary = run_pipeline("raydspy.programs.banking77:program", teacher, config)
                seconds = time.perf_counter() - started
            row = {
                "examples": size,
                "rows": summary.rows,
                "seconds": round(seconds, 1),
                "prompts_per_s": round(summary.rows / seconds, 1),
                "peak_rss_mib": round(memory.peak / 2**20),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
