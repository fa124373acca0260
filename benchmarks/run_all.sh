#!/usr/bin/env bash
# Every benchmark, one after the other: they need the machine to themselves (about 50 min on 2 cores).
# Results go to benchmarks/results/; BENCHMARKS.md quotes them with their commands.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
py=.venv/bin/python
mkdir -p benchmarks/results
$py benchmarks/collect_overhead.py --examples 2000 --rounds 7 --threads 8 | tee benchmarks/results/overhead-8-threads.txt
$py benchmarks/collect_overhead.py --examples 2000 --rounds 7 --threads 1 | tee benchmarks/results/overhead-1-thread.txt
$py benchmarks/dry_run_bench.py --sizes 1000 100000
$py benchmarks/teacher_bench.py --requests 192 --rounds 3
$py benchmarks/teacher_bench.py --requests 192 --rounds 2 --pairs-only --reserve-client-core \
    --out benchmarks/results/teacher-reserved-core.json
$py benchmarks/client_cpu.py --requests 192 --scale 3
$py benchmarks/in_flight.py --requests 192 --rounds 2 | tee benchmarks/results/in-flight.txt
$py benchmarks/chart.py
