"""Collect's own overhead per rollout against plain `dspy.Parallel`, with an LM that answers at once.

Both run the banking77 ChainOfThought program on the same examples with the same thread count and
the same in-process LM (DSPy's DummyLM), so the difference is what Collect adds: a private LM copy
per rollout, the trace callback, rewards, ids, and writing the Parquet file. Rounds alternate
between the two so machine noise hits both alike; the figure is the ratio of medians.

    .venv/bin/python benchmarks/collect_overhead.py [--examples 400] [--threads 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import dspy
from dspy.utils import DummyLM

from raydspy import Collect
from raydspy.programs import banking77


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=400)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    program = banking77.program()
    label = banking77.top_labels(1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = banking77.write_sample(f"{tmp}/in.csv", size=args.examples)
        import csv

        rows = list(csv.DictReader(open(path)))
        examples = [dspy.Example(**r).with_inputs("text") for r in rows]

        def lm() -> DummyLM:
            return DummyLM([{"reasoning": "it is about fees", "label": label}] * (len(rows) + 10))

        def run_parallel() -> float:
            with dspy.context(lm=lm()):
                started = time.perf_counter()
                dspy.Parallel(num_threads=args.threads, disable_progress_bar=True)([(program, ex.inputs()) for ex in examples])
                return time.perf_counter() - started

        collect = Collect(program, f"{tmp}/out", reward_fn=banking77.rewards(), num_threads=args.threads)

        def run_collect() -> float:
            collect.lm = lm()
            started = time.perf_counter()
            collect.collect(rows, n=1)
            return time.perf_counter() - started

        run_parallel(), run_collect()  # warm-up: imports, caches
        parallel, ours = [], []
        for _ in range(args.rounds):
            parallel.append(run_parallel())
            ours.append(run_collect())

    n = len(rows)
    p, c = statistics.median(parallel), statistics.median(ours)
    print(f"examples={n} threads={args.threads} rounds={args.rounds}")
    print(f"dspy.Parallel   : {1e6 * p / n:8.0f} µs/rollout (median of {args.rounds})")
    print(f"raydspy.Collect : {1e6 * c / n:8.0f} µs/rollout (median of {args.rounds})")
    print(f"ratio Collect / Parallel = {c / p:.2f}")


if __name__ == "__main__":
    main()
