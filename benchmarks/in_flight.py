"""Where a pipeline run's time goes: requests in flight over time, and CPU seconds per process.

Deploys the CPU teacher, then for each round runs the direct client (limit-64) and the pipeline
(default layout) on the same prompts, as teacher_bench.py does, and prints:

    - CPU seconds each process used during each contender (psutil; the vLLM worker, the Collect
      actors, the driver, Ray's own processes), i.e. what the clients take from the engine;
    - for the pipeline, the requests in flight every 2 s, rebuilt from the rollout rows (a call
      starts ``latency_s`` before the row's ``created_at``), and when each part file was committed.

    .venv/bin/python benchmarks/in_flight.py [--requests 192] [--rounds 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import threading
import time
from pathlib import Path

import teacher_bench as tb
from common import init_local_ray
from teacher_bench import cpu_seconds


def cpu_used(before: dict, after: dict, top: int = 8) -> list[tuple[float, str]]:
    """The ``top`` processes by CPU seconds used between two `cpu_seconds` snapshots."""
    used = sorted(
        ((t - before.get(pid, (name, 0.0))[1], name.strip()) for pid, (name, t) in after.items()), reverse=True
    )
    return [(round(seconds, 1), name) for seconds, name in used[:top]]


class CpuSampler(threading.Thread):
    """`cpu_seconds` every ``every_s`` seconds while running, so that processes which exit before
    the end (a pipeline's actors) still count, and CPU can be split at any moment (start-up / active)."""

    def __init__(self, every_s: float = 0.5):
        super().__init__(daemon=True)
        self.every_s, self.samples, self._done = every_s, [(time.time(), cpu_seconds())], threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every_s):
            self.samples.append((time.time(), cpu_seconds()))

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.samples.append((time.time(), cpu_seconds()))

    def used(self, start: float = 0.0, end: float = float("inf"), top: int = 12) -> list[tuple[float, str]]:
        """The ``top`` processes by CPU seconds used from ``start`` to ``end`` (epoch seconds; the
        nearest samples), a process first seen later counting from zero."""
        window = [snap for t, snap in self.samples if start - self.every_s <= t <= end + self.every_s]
        first, last = {}, {}
        for snap in window:
            for pid, (name, cpu) in snap.items():
                first.setdefault(pid, (name, cpu if snap is window[0] else 0.0))
                last[pid] = (name, cpu)
        used = sorted(((cpu - first[pid][1], name.strip()) for pid, (name, cpu) in last.items()), reverse=True)
        return [(round(seconds, 1), name) for seconds, name in used[:top] if seconds >= 0.05]


def in_flight(rollouts: str, every_s: float = 2.0) -> tuple[list[int], list[float]]:
    """Requests in flight every ``every_s`` seconds from the first request, and the part files'
    commit times (seconds after the first request)."""
    calls = tb.call_windows(rollouts)
    first, last = min(s for s, _ in calls), max(e for _, e in calls)
    profile = [
        sum(1 for s, e in calls if s <= first + i * every_s < e) for i in range(int((last - first) / every_s) + 1)
    ]
    commits = sorted(round(p.stat().st_mtime - first, 1) for p in Path(rollouts).glob("*.parquet"))
    return profile, commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from ray import serve

    from raydspy.pipeline import PipelineConfig, run_pipeline
    from raydspy.programs import banking77
    from raydspy.teacher.deploy import SERVE_CONFIGS, deploy_serve_config, wait_for_teacher

    teacher = tb.TeacherConfig(structured_outputs=True, temperature=1.0, max_tokens=192, cache=False)
    work = Path(tempfile.mkdtemp())
    input_csv = str(banking77.write_sample(work / "in.csv", size=args.requests, seed=7))
    examples = list(csv.DictReader(open(input_csv)))
    init_local_ray()
    deploy_serve_config(SERVE_CONFIGS / "teacher-cpu.yaml")
    wait_for_teacher(teacher)
    bodies = tb.formatted_requests(examples, teacher)
    tb.limit(bodies, teacher, 64)  # warm-up: a whole pass (teacher_bench.py says why)
    for round_ in range(1, args.rounds + 1):
        before = cpu_seconds()
        measure = tb.limit(bodies, teacher, 64)
        print(f"round {round_} limit-64: {measure.seconds:.1f} s, {measure.tokens_per_s:.1f} tok/s")
        print("  CPU s:", cpu_used(before, cpu_seconds()))
        out = str(work / f"rollouts-{round_}")
        config = PipelineConfig(input_uri=input_csv, output_uri=out, n=1, max_error_rate=1.0)
        sampler, started = CpuSampler(), time.perf_counter()
        sampler.start()
        summary = run_pipeline(tb.PROGRAM, teacher, config, rewards=tb.REWARDS)
        seconds = time.perf_counter() - started
        sampler.stop()
        first_request = min(s for s, _ in tb.call_windows(out))
        print(
            f"round {round_} pipeline: {seconds:.1f} s, {summary.completion_tokens / seconds:.1f} tok/s, "
            f"first request {first_request - sampler.samples[0][0]:.1f} s after the start"
        )
        print("  CPU s, start-up:", sampler.used(end=first_request))
        print("  CPU s, from the first request:", sampler.used(start=first_request))
        profile, commits = in_flight(out)
        print("  in flight every 2 s:", " ".join(map(str, profile)))
        print("  part files committed at (s after the first request):", commits, flush=True)
    serve.shutdown()


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    main()
