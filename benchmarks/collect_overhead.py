"""Collect's own overhead per rollout against plain `dspy.Parallel`, with an LM that answers at once.

Both run the banking77 ChainOfThought program on the same examples with the same thread count and
the same in-process LM (DSPy's DummyLM), so the difference is what Collect adds: a private LM copy
per rollout, the trace, ids, and writing the Parquet file. Collect runs twice: with no reward
function (its own overhead, the figure the README reports) and with banking77's rewards (format
and exact match: the user's reward code, which `dspy.Parallel` does not run). Rounds alternate
between the three so machine noise hits all alike; the figures are ratios of medians.

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
                dspy.Parallel(num_threads=args.threads, disable_progress_bar=True)(
                    [(program, ex.inputs()) for ex in examples]
                )
                return time.perf_counter() - started

        plain = Collect(program, f"{tmp}/plain", num_threads=args.threads)
        rewarded = Collect(program, f"{tmp}/rewarded", reward_fn=banking77.rewards(), num_threads=args.threads)

        def timed_collect(collect: Collect):
            def run() -> float:
                collect.lm = lm()
                started = time.perf_counter()
                collect.collect(rows, n=1)
                return time.perf_counter() - started

            return run

        runs = {
            "dspy.Parallel": run_parallel,
            "raydspy.Collect": timed_collect(plain),
            "raydspy.Collect + rewards": timed_collect(rewarded),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for run in runs.values():
            run()  # warm-up: imports, caches
        for _ in range(args.rounds):
            for name, run in runs.items():
                times[name].append(run())

    n = len(rows)
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["dspy.Parallel"]
    print(f"examples={n} threads={args.threads} rounds={args.rounds}")
    for name, m in medians.items():
        print(f"{name:26s}: {1e6 * m / n:6.0f} µs/rollout   ratio to dspy.Parallel {m / base:.2f}")


if __name__ == "__main__":
    main()
