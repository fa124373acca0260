"""The pipeline against the teacher's limit and against its peers, side by side in one run.

Every contender sends the same banking77 prompts (the exact messages and JSON schema the program
sends, formatted once by a dry run) to the same vLLM teacher on Ray Serve, with DSPy's cache off:

    limit        an async OpenAI-compatible client at 64 and 128 requests in flight (the best is "the limit")
    pipeline     raydspy's Ray Data pipeline in its default layout (2 Collect actors x 32 threads, a wave of
                 32 rollouts per call, files of 32 examples) running the full program (parse, rewards, commit to Parquet); also
                 its active window (first request sent to last rollout done), which leaves out
                 Ray Data's start-up: the rate a long run approaches
    parallel-8   dspy.Parallel, 8 threads (the seed's way)
    parallel-64  dspy.Parallel, 64 threads
    ray-data-llm ray.data.llm's HttpRequestProcessorConfig sending the formatted requests (no DSPy)
    actors-k     the pipeline with k = 1, 2, 4, 8 Collect actors (8 threads each)

Results are generated tokens/s and requests/s, and each one's ratio to the limit measured in the
same run. limit-64 and the pipeline alternate for --rounds rounds (the machine's speed drifts): each
round's ratio is printed, and each contender's median round is its row. Ray and the teacher are started here (minutes on first start; the teacher file lock is
taken, so no test session's teacher runs beside it).

    .venv/bin/python benchmarks/teacher_bench.py [--requests 192] [--out benchmarks/results/teacher.json]

Use several times the best concurrency (64) in requests: with a single wave every contender's time is
that of its slowest completion, which measures sampling luck more than throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
import httpx  # noqa: E402
import psutil  # noqa: E402
from common import init_local_ray  # noqa: E402 - benchmarks/ is on sys.path when run as a script

from raydspy.core.adapters import response_format_for  # noqa: E402
from raydspy.core.identity import rollout_seed  # noqa: E402
from raydspy.core.runner import RolloutRunner  # noqa: E402
from raydspy.pipeline import PipelineConfig, run_pipeline  # noqa: E402
from raydspy.programs import banking77  # noqa: E402
from raydspy.teacher.client import TeacherConfig  # noqa: E402

PROGRAM = "raydspy.programs.banking77:program"
REWARDS = "raydspy.programs.banking77:rewards"


# The teacher's processes: vLLM's engine core and its model worker ("VLLM::..."), the Serve
# replicas that tokenize and route for them, Serve's HTTP proxy and controller. Every other busy
# CPU-second on the machine is the clients' (their processes, and Ray's daemons working for them).
TEACHER_PROCESSES = ("VLLM::", "ServeReplica", "SERVE_REPLICA", "ProxyActor", "ServeController")


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """``{pid: (command line, user + system CPU seconds)}`` of every process we may read."""
    found = {}
    for process in psutil.process_iter(["cmdline"]):
        try:
            times = process.cpu_times()
            found[process.pid] = (
                " ".join(process.info["cmdline"] or [])[:60] or process.name(),
                times.user + times.system,
            )
        except psutil.Error:
            pass
    return found


class CpuSplit:
    """Busy CPU-seconds of the whole machine during a block, split into the teacher's processes
    (`TEACHER_PROCESSES`: they live through every contender) and the rest, which is what the
    contender cost, processes that came and went during the block included."""

    def __enter__(self) -> CpuSplit:
        self._machine, self._procs = psutil.cpu_times(), cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        after, machine = cpu_seconds(), psutil.cpu_times()
        teacher = [pid for pid, (name, _) in after.items() if any(t in name for t in TEACHER_PROCESSES)]
        self.teacher_cpu_s = sum(after[pid][1] - self._procs.get(pid, ("", 0.0))[1] for pid in teacher)
        # user / nice (user time of processes at nice > 0: Ray's workers) / system, machine-wide
        self.machine_s = {
            k: round(getattr(machine, k) - getattr(self._machine, k), 1) for k in ("user", "nice", "system")
        }
        self.client_cpu_s = self._busy(machine) - self._busy(self._machine) - self.teacher_cpu_s

    @staticmethod
    def _busy(t) -> float:
        return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


@dataclass
class Measure:
    name: str
    requests: int
    seconds: float
    completion_tokens: int
    active_s: float | None = None  # pipelines: first request sent -> last rollout done (no start-up)
    teacher_cpu_s: float | None = None  # CPU-seconds of the teacher's processes during the run
    client_cpu_s: float | None = None  # every other busy CPU-second of the machine during the run
    machine_cpu_s: dict | None = None  # the machine's user / nice / system CPU-seconds during the run

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    def row(self, limit: Measure | None) -> dict:
        row = {
            **asdict(self),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "requests_per_s": round(self.requests_per_s, 3),
            "ratio_to_limit": round(self.tokens_per_s / limit.tokens_per_s, 3) if limit else None,
        }
        if self.active_s:
            active_rate = self.completion_tokens / self.active_s
            row.update(
                startup_s=round(self.seconds - self.active_s, 1),
                active_tokens_per_s=round(active_rate, 1),
                active_ratio_to_limit=round(active_rate / limit.tokens_per_s, 3) if limit else None,
            )
        return row


def _median(measures: list[Measure]) -> Measure:
    """The measure with the median rate (the upper one of an even count)."""
    return sorted(measures, key=lambda m: m.tokens_per_s)[len(measures) // 2]


def rollout_seeds(examples: list[dict], teacher: TeacherConfig) -> list[int | None]:
    """The seed each example's rollout 0 sends in the pipeline (None for all when unseeded): the
    pipeline's own planner names the rollouts, `rollout_seed` turns the names into seeds."""
    if teacher.seed is None:
        return [None] * len(examples)
    runner = RolloutRunner(banking77.program(), lm=teacher.lm(), adapter=teacher.adapter(), sampling=teacher.sampling)
    return [rollout_seed(job.rollout_id) for job in runner.plan(examples, 1)]


def formatted_requests(examples: list[dict], teacher: TeacherConfig) -> list[dict]:
    """The chat-completions bodies the program sends for ``examples`` (a dry run formats them),
    each with the seed its rollout sends in the pipeline when the teacher is seeded."""
    program = banking77.program()
    runner = RolloutRunner(program, adapter=teacher.adapter(), dry_run=True)
    signature = program.predictors()[0].signature  # ChainOfThought's: reasoning, then the label
    bodies = []
    for result, seed in zip(runner.run_many(examples, 1, num_threads=2), rollout_seeds(examples, teacher)):
        body = {
            "model": teacher.model,
            "messages": result.record.trace[0].messages,
            "response_format": response_format_for(signature),
            **teacher.sampling,
        }
        if seed is not None:
            body["seed"] = seed
        bodies.append(body)
    return bodies


async def _limit(bodies: list[dict], url: str, concurrency: int) -> Measure:
    semaphore = asyncio.Semaphore(concurrency)
    tokens = 0
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def one(body: dict) -> None:
            nonlocal tokens
            async with semaphore:
                response = await client.post(f"{url}/chat/completions", json=body)
                response.raise_for_status()
                tokens += response.json()["usage"]["completion_tokens"]

        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return Measure(f"limit-{concurrency}", len(bodies), time.perf_counter() - started, tokens)


def limit(bodies: list[dict], teacher: TeacherConfig, concurrency: int) -> Measure:
    return asyncio.run(_limit(bodies, teacher.base_url, concurrency))


def _burn(cores: float, nice: int, stop) -> None:
    """Keep ``cores`` of one core busy at niceness ``nice`` until ``stop`` is set: 5 ms of work,
    then the sleep that makes the duty cycle, like a client's short bursts between waits."""
    os.nice(nice)
    burst = 0.005
    while not stop.is_set():
        end = time.thread_time() + burst
        while time.thread_time() < end:
            pass
        time.sleep(burst * (1 - cores) / cores)


def limit_beside_burners(
    bodies: list[dict], teacher: TeacherConfig, concurrency: int, burners: list[tuple[float, int]]
) -> Measure:
    """The limit with CPU burners beside it: the control for "the pipeline loses what its clients'
    CPU takes from the engine". ``burners``: (cores, niceness) each, e.g. the pipeline's extra CPU
    over the limit's, measured per process by in_flight.py, split by the niceness it ran at."""
    import multiprocessing

    stop = multiprocessing.Event()
    procs = [multiprocessing.Process(target=_burn, args=(cores, nice, stop), daemon=True) for cores, nice in burners]
    for p in procs:
        p.start()
    try:
        measure = limit(bodies, teacher, concurrency)
    finally:
        stop.set()
        for p in procs:
            p.join()
    measure.name = f"limit-{concurrency}+burn"
    return measure


def pipeline(input_csv: str, teacher: TeacherConfig, count: int, name: str = "pipeline", **layout) -> Measure:
    """The pipeline with its default layout (``PipelineConfig``: actors, threads, batch size), or ``layout``."""
    with tempfile.TemporaryDirectory() as out:
        config = PipelineConfig(input_uri=input_csv, output_uri=out, n=1, limit=count, max_error_rate=1.0, **layout)
        started = time.perf_counter()
        summary = run_pipeline(PROGRAM, teacher, config, rewards=REWARDS)
        seconds = time.perf_counter() - started
        return Measure(name, summary.rows, seconds, summary.completion_tokens, active_window_s(out))


def call_windows(rollouts: str) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of each rollout's LM calls: a row ends at ``created_at`` and
    started its calls ``sum(latency_s)`` earlier (one call each here)."""
    import pyarrow.dataset as pads

    from raydspy.core.storage import resolve
    from raydspy.pipeline.commits import committed_files

    files = committed_files(resolve(rollouts))  # the part files: the folder also holds its dataset card
    rows = pads.dataset(files, format="parquet").to_table(columns=["created_at", "trace"]).to_pylist()
    return [
        (r["created_at"].timestamp() - sum(c["latency_s"] or 0.0 for c in r["trace"]), r["created_at"].timestamp())
        for r in rows
    ]


def active_window_s(rollouts: str) -> float:
    """Seconds from the first LM request any rollout sent to the last rollout's end: the time the
    pipeline drove the teacher, without Ray Data's start-up (actors starting, imports) and tear-down."""
    windows = call_windows(rollouts)
    return max(end for _, end in windows) - min(start for start, _ in windows)


def parallel(examples: list[dict], teacher: TeacherConfig, threads: int) -> Measure:
    lm, batch, lms = teacher.lm(), [], []
    for example, seed in zip(examples, rollout_seeds(examples, teacher)):
        program = banking77.program()  # its own LM, so that each request carries its rollout's seed
        program.set_lm(lm.copy(seed=seed) if seed is not None else lm)
        lms.append(program.predictors()[0].lm)
        batch.append((program, {"text": example["text"]}))
    with dspy.context(adapter=teacher.adapter()):
        started = time.perf_counter()
        dspy.Parallel(num_threads=threads, disable_progress_bar=True, max_errors=len(batch))(batch)
        seconds = time.perf_counter() - started
    history = [h for m in {id(m): m for m in lms}.values() for h in m.history]
    tokens = sum((h.get("usage") or {}).get("completion_tokens", 0) for h in history)
    return Measure(f"parallel-{threads}", len(batch), seconds, tokens)


def ray_data_llm(bodies: list[dict], teacher: TeacherConfig, concurrency: int) -> Measure:
    import ray.data
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    config = HttpRequestProcessorConfig(
        url=f"{teacher.base_url}/chat/completions", concurrency=concurrency, batch_size=8
    )
    processor = build_processor(
        config,
        preprocess=lambda row: {"payload": json.loads(row["body"])},
        postprocess=lambda row: {"tokens": row["http_response"]["usage"]["completion_tokens"]},
    )
    dataset = ray.data.from_items([{"body": json.dumps(b)} for b in bodies])
    started = time.perf_counter()
    rows = processor(dataset).take_all()
    return Measure(
        f"ray-data-llm-{concurrency}", len(rows), time.perf_counter() - started, sum(r["tokens"] for r in rows)
    )


def summarize(results: list[Measure], requests: int, teacher: TeacherConfig) -> dict:
    """One row per contender (its median round), ratios to the best limit-* median, and each
    round's pipeline / limit-64 pair (the two ran one after the other)."""
    names = list(dict.fromkeys(m.name for m in results))
    medians = {name: _median([m for m in results if m.name == name]) for name in names}
    best = max((m for name, m in medians.items() if name.startswith("limit-")), key=lambda m: m.tokens_per_s)
    pairs = [
        {
            "limit_tokens_per_s": round(a.tokens_per_s, 1),
            "pipeline_tokens_per_s": round(b.tokens_per_s, 1),
            "ratio": round(b.tokens_per_s / a.tokens_per_s, 3),
            "active_ratio": round(b.completion_tokens / b.active_s / a.tokens_per_s, 3),
        }
        for a, b in zip(results, results[1:])
        if a.name == "limit-64" and b.name.startswith("pipeline")
    ]
    for i, pair in enumerate(pairs, 1):
        print(f"round {i}: pipeline / limit-64 = {pair['ratio']:.2f} ({pair['active_ratio']:.2f} active)")
    return {
        "date": time.strftime("%Y-%m-%d"),
        "requests": requests,
        "teacher": teacher.model_dump(mode="json"),
        "limit": best.name,
        "results": [medians[name].row(best) for name in names],
        "pairs": pairs,
        "median_pair_ratio": sorted(p["ratio"] for p in pairs)[len(pairs) // 2] if pairs else None,
        "rounds": [m.row(None) for m in results],
    }


def _serve_config(work: Path, reserve_client_core: bool, path: Path) -> Path:
    """``path`` (teacher-cpu.yaml by default), or a copy whose engine leaves one core to everything else."""
    import yaml

    if not reserve_client_core:
        return path
    config = yaml.safe_load(path.read_text())
    for llm in config["applications"][0]["args"]["llm_configs"]:
        llm["runtime_env"]["env_vars"]["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "1"
    copy = work / "teacher-cpu-reserved-core.yaml"
    copy.write_text(yaml.safe_dump(config))
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=192, help="requests (rollouts) per contender")
    parser.add_argument("--out", default="benchmarks/results/teacher.json")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of limit-64 then pipeline, alternating")
    parser.add_argument(
        "--layout",
        default=None,
        metavar="ACTORSxTHREADS",
        help="the rounds' pipeline layout, e.g. 1x64 (default: PipelineConfig's)",
    )
    parser.add_argument("--pairs-only", action="store_true", help="only the limit-64 / pipeline rounds")
    parser.add_argument(
        "--reserve-client-core",
        action="store_true",
        help="run the engine on all cores but one (vLLM's own default, VLLM_CPU_NUM_OF_RESERVED_CPU=1) "
        "instead of teacher-cpu.yaml's all cores: the clients then have a core of their own",
    )
    parser.add_argument(
        "--seed",
        type=lambda v: None if v == "none" else int(v),
        default=0,
        help="seed the rollouts (TeacherConfig.seed): every contender sends each prompt with the seed "
        "its rollout sends in the pipeline, so all sample the same completions and the token "
        "counts compare (unseeded, the pipeline's 576 completions came to 5 %% fewer tokens than "
        "the limit's); 'none': unseeded (default: %(default)s)",
    )
    parser.add_argument(
        "--control-burn",
        default=None,
        metavar="CORES@NICE,...",
        help="after each round, the limit again beside CPU burners, e.g. 0.055@0,0.055@15: the "
        "control that tests whether the pipeline's gap is the CPU its clients take",
    )
    parser.add_argument("--skip-scaling", action="store_true", help="leave out the 1/2/4/8-actor runs")
    parser.add_argument(
        "--serve-config",
        type=Path,
        default=None,
        help="the teacher's Serve config (default: serve_configs/teacher-cpu.yaml; teacher-gpu.yaml on a GPU)",
    )
    parser.add_argument(
        "--scaling-only", action="store_true", help="only the limit (64 in flight) and the 1/2/4/8-actor runs"
    )
    args = parser.parse_args()
    name, layout = "pipeline", {}
    if args.layout:
        actors, threads = (int(x) for x in args.layout.lower().split("x"))
        name, layout = f"pipeline-{actors}x{threads}", {"num_actors": actors, "threads_per_actor": threads}

    from filelock import FileLock
    from ray import serve

    from raydspy.teacher.deploy import SERVE_CONFIGS, deploy_serve_config, wait_for_teacher

    serve_config = args.serve_config or SERVE_CONFIGS / "teacher-cpu.yaml"
    teacher = TeacherConfig(structured_outputs=True, temperature=1.0, max_tokens=192, cache=False, seed=args.seed)
    work = Path(tempfile.mkdtemp())
    input_csv = str(banking77.write_sample(work / "in.csv", size=args.requests, seed=7))
    import csv

    examples = list(csv.DictReader(open(input_csv)))
    init_local_ray()
    results: list[Measure] = []
    with FileLock(Path(tempfile.gettempdir()) / "raydspy-teacher.lock"):
        deploy_serve_config(_serve_config(work, args.reserve_client_core, serve_config))
        wait_for_teacher(teacher)
        bodies = formatted_requests(examples, teacher)
        # Warm-up: one whole pass at the full width, not counted. vLLM's CPU engine compiles for
        # the batch shapes it meets and fills its prefix cache: a first pass of 192 requests ran
        # 2.4x slower than the next (350 s, then 143 s; measured 2026-12-02), which would favour
        # whichever contender came second.
        warm = limit(bodies, teacher, 64)
        print(f"warm-up          {warm.requests:4d} req  {warm.seconds:7.1f} s  (not counted)", flush=True)
        steps = [lambda: limit(bodies, teacher, 64)]
        if not args.scaling_only:
            # The limit and the pipeline alternate, round after round: this VM's speed drifts by a
            # third within minutes, so each round's pair is compared, and the median pair quoted.
            steps = [] if args.pairs_only else [lambda: limit(bodies, teacher, 128)]
            for _ in range(args.rounds):
                steps += [
                    lambda: limit(bodies, teacher, 64),
                    lambda: pipeline(input_csv, teacher, args.requests, name, **layout),
                ]
                if args.control_burn:
                    burners = [(float(c), int(n)) for c, n in (b.split("@") for b in args.control_burn.split(","))]
                    steps.append(lambda burners=burners: limit_beside_burners(bodies, teacher, 64, burners))
            if not args.pairs_only:
                steps += [
                    lambda: parallel(examples, teacher, 8),
                    lambda: parallel(examples, teacher, 64),
                    lambda: ray_data_llm(bodies, teacher, 8),
                ]
        if not (args.skip_scaling or args.pairs_only):
            steps += [
                lambda k=k: pipeline(
                    input_csv, teacher, args.requests, f"actors-{k}", num_actors=k, threads_per_actor=8
                )
                for k in (1, 2, 4, 8)
            ]
        for step in steps:
            with CpuSplit() as cpu:
                measure = step()
            measure.teacher_cpu_s, measure.client_cpu_s = round(cpu.teacher_cpu_s, 1), round(cpu.client_cpu_s, 1)
            measure.machine_cpu_s = cpu.machine_s
            results.append(measure)
            active = f"  (active {measure.active_s:.1f} s)" if measure.active_s else ""
            print(
                f"{measure.name:16s} {measure.requests:4d} req  {measure.seconds:7.1f} s  "
                f"{measure.tokens_per_s:7.1f} tok/s  {measure.requests_per_s:6.2f} req/s  CPU-s teacher "
                f"{cpu.teacher_cpu_s:6.1f} clients {cpu.client_cpu_s:5.1f}{active}",
                flush=True,
            )
        serve.shutdown()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summarize(results, args.requests, teacher), indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
