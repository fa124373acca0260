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
import csv
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import psutil  # noqa: E402
from common import init_local_ray  # noqa: E402 - benchmarks/ is on sys.path when run as a script

ANSWER = json.dumps({"reasoning": "The customer asks where the new card is.", "label": "card_arrival"})


def _serve(port_box, delay_s: float) -> None:
    """The fake teacher: answers every chat completion after ``delay_s`` seconds."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(json.dumps({"data": [{"id": "fake", "object": "model", "max_model_len": 4096}]}).encode())

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(delay_s)
            self._send(
                json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "fake",
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 1170, "completion_tokens": 20, "total_tokens": 1190},
                    }
                ).encode()
            )

    class Server(ThreadingHTTPServer):
        request_queue_size = 512
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    port_box.put(server.server_address[1])
    server.serve_forever()


class CpuMeter:
    """CPU seconds (user + system) of this process and every process it started (Ray's daemons
    and workers are its descendants), the fake teacher left out. A thread samples the tree every
    0.2 s, so a process that ends between two readings still counts up to its last sample; other
    programs on the machine do not count (a test run beside it does not skew the figure)."""

    def __init__(self, exclude: int):
        import threading

        self.exclude, self.seen, self.lock = exclude, {}, threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        me = psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            if process.pid == self.exclude:
                continue
            try:
                times = process.cpu_times()
                key = (process.pid, process.create_time())
            except psutil.Error:
                continue
            with self.lock:
                self.seen[key] = times.user + times.system

    def _run(self) -> None:
        while not self.stopping.wait(0.2):
            self._sample()

    def total(self) -> float:
        self._sample()
        with self.lock:
            return sum(self.seen.values())

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


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

    box = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(box, args.delay), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{box.get(timeout=30)}/v1"
    meter = CpuMeter(exclude=server.pid)
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
    server.terminate()
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
