#!/usr/bin/env bash
# One short GPU check (<= 8 minutes): the gpu profile's architectures (tiny seeded ColQwen2.5 + PEFT adapter and
# Qwen2.5-VL checkpoints, built offline) measured on a CUDA GPU; results in benchmarks/results/gpu/.
#
#   bash benchmarks/gpu_check.sh [args of python -m benchmarks.gpu_check]
#
# On a machine with an NVIDIA GPU: uses the active venv / .venv if its torch sees CUDA, else .venv-gpu, installing
# the project with its .[gpu,dev] extras there if that venv is missing (needs the package index). Without a GPU it
# runs the CPU fallback at toy sizes (what CI tests): nothing it prints measures a GPU.
# Knobs: GPU_CHECK_PYTHON (the interpreter to use, skipping the search), PYTHON (interpreter for a new venv),
#        GPU_CHECK_TIMEOUT_S (default 480).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { printf '\033[1;34m[gpu_check]\033[0m %s\n' "$*" >&2; }
timeout_s="${GPU_CHECK_TIMEOUT_S:-480}"

has_cuda() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }

py=""
for cand in "${GPU_CHECK_PYTHON:-}" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" .venv/bin/python .venv-gpu/bin/python; do
  [ -n "$cand" ] && [ -x "$cand" ] || continue
  [ -z "$py" ] && py="$cand"                      # first usable interpreter, for the CPU fallback
  if has_cuda "$cand"; then py="$cand"; gpu=1; break; fi
done

if [ -z "${gpu:-}" ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  log "a GPU is present but no venv's torch sees CUDA: installing .[gpu,dev] into .venv-gpu"
  "${PYTHON:-python3.11}" -m venv .venv-gpu 2>/dev/null || "${PYTHON:-python3}" -m venv .venv-gpu
  .venv-gpu/bin/pip install -q --upgrade pip
  .venv-gpu/bin/pip install -q -e ".[gpu,dev]"
  py=.venv-gpu/bin/python
  if has_cuda "$py"; then gpu=1; else log "torch in .venv-gpu does not see CUDA either: check the driver"; exit 2; fi
fi
if [ -z "$py" ]; then
  log "no venv found: run 'bash deploy/setup.sh install' first (or on a GPU machine this script installs .venv-gpu)"
  exit 2
fi

if [ -n "${gpu:-}" ]; then
  log "GPU run with $py"
  exec timeout "$timeout_s" "$py" -m benchmarks.gpu_check --device cuda "$@"
fi
log "no CUDA GPU here: CPU fallback (toy sizes) with $py"
exec timeout "$timeout_s" "$py" -m benchmarks.gpu_check --device cpu "$@"
