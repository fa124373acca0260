"""The CPU teacher's limit (async client, 64 in flight) when it serves in DTYPE, overriding
teacher-cpu.yaml's cpu-native, and any other vLLM engine argument given as KEY=VALUE (YAML
values): a warm-up of 128 requests, then two counted rounds of 192. With --seed, each round is
followed by a round of the same requests carrying per-rollout seeds (as `--seed` sends them).

It measures what cpu-native decides (raydspy.teacher.app.cpu_native_dtype): an AVX2-only machine
emulated bf16 5x slower than float32; CPUs with AVX-512 BF16 or AMX ran bf16 faster.
Run it once per variant, one after the other:

    .venv/bin/python benchmarks/teacher_dtype.py bfloat16 && .venv/bin/python benchmarks/teacher_dtype.py float32
    .venv/bin/python benchmarks/teacher_dtype.py bfloat16 enable_chunked_prefill=false --seed
"""

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import ray
import teacher_bench as tb
import yaml
from ray import serve

from raydspy.programs import banking77
from raydspy.teacher.client import TeacherConfig
from raydspy.teacher.deploy import SERVE_CONFIGS, deploy_serve_config, wait_for_teacher

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("dtype")
parser.add_argument("engine_kwargs", nargs="*", metavar="KEY=VALUE")
parser.add_argument("--seed", action="store_true", help="also rounds with per-rollout seeds")
args = parser.parse_args()
overrides = {"dtype": args.dtype, **{k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.engine_kwargs)}}
name = " ".join(f"{k}={v}" for k, v in overrides.items())
work = Path(tempfile.mkdtemp())
config = yaml.safe_load((SERVE_CONFIGS / "teacher-cpu.yaml").read_text())
for llm in config["applications"][0]["args"]["llm_configs"]:
    llm["engine_kwargs"].update(overrides)
path = work / "t.yaml"
path.write_text(yaml.safe_dump(config))
teacher = TeacherConfig(structured_outputs=True, temperature=1.0, max_tokens=192, cache=False)
examples = list(csv.DictReader(open(banking77.write_sample(work / "in.csv", size=192, seed=7))))
ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
t0 = time.time()
deploy_serve_config(path)
wait_for_teacher(teacher)
print(f"{name}: ready in {time.time() - t0:.0f} s", flush=True)
bodies = tb.formatted_requests(examples, teacher)
seeded = tb.formatted_requests(examples, teacher.model_copy(update={"seed": 0})) if args.seed else None
warm = tb.limit(bodies[:128], teacher, 64)
print(f"{name}: warm-up {warm.tokens_per_s:.1f} tok/s", flush=True)
for r in range(2):
    for label, requests in [("", bodies), (" seeded", seeded)] if seeded else [("", bodies)]:
        m = tb.limit(requests, teacher, 64)
        print(
            f"{name}: round {r}{label} {m.seconds:.1f} s {m.tokens_per_s:.1f} tok/s {m.requests_per_s:.2f} req/s",
            flush=True,
        )
serve.shutdown()
