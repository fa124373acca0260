#!/usr/bin/env bash
# Every benchmark, one after the other: they need the machine to themselves (about 2 hours on 2 cores).
# Results go to benchmarks/results/; BENCHMARKS.md quotes them with their commands.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
py=.venv/bin/python
mkdir -p benchmarks/results
$py benchmarks/collect_overhead.py --examples 2000 --rounds 7 --threads 8 | tee benchmarks/results/overhead-8-threads.txt
$py benchmarks/collect_overhead.py --examples 2000 --rounds 7 --threads 1 | tee benchmarks/results/overhead-1-thread.txt
$py benchmarks/dry_run_bench.py --sizes 1000 100000
$py benchmarks/teacher_bench.py --requests 576 --rounds 2 --skip-scaling --out benchmarks/results/teacher-576.json \
    | grep -v '^{"asctime' | tee benchmarks/results/teacher-576.txt
$py benchmarks/teacher_bench.py --requests 576 --rounds 1 --pairs-only --control-burn 0.055@0,0.055@15 \
    --out benchmarks/results/teacher-control-burn.json | grep -v '^{"asctime' | tee benchmarks/results/teacher-control-burn.txt
$py benchmarks/in_flight.py --requests 576 --rounds 1 | grep -v '^{"asctime' | tee benchmarks/results/in-flight-576.txt
$py benchmarks/teacher_dtype.py bfloat16 && $py benchmarks/teacher_dtype.py float32
# chunked prefill on (unseeded: seeded, vLLM 0.32's CPU engine dies), then the configs' whole-prompt prefill, seeded too
$py benchmarks/teacher_dtype.py bfloat16 enable_chunked_prefill=true && $py benchmarks/teacher_dtype.py bfloat16 --seed
$py benchmarks/teacher_bench.py --requests 192 --rounds 3
$py benchmarks/teacher_bench.py --requests 192 --rounds 2 --pairs-only --reserve-client-core \
    --out benchmarks/results/teacher-reserved-core.json
$py benchmarks/client_cpu.py --requests 192 --scale 3
$py benchmarks/resume_bench.py --examples 3000 --rounds 2 --out benchmarks/results/resume-3000.json
$py benchmarks/confined_fs.py --parts 400 --rows 64 --rounds 5 --out benchmarks/results/confined-fs-400.json
$py benchmarks/chart.py
