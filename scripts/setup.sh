#!/usr/bin/env bash
# Create (or update) the project's virtual environment with everything installed.
# torch: the CPU build on machines without an NVIDIA GPU, PyPI's CUDA build with one.
# Re-running is cheap: nothing is reinstalled unless pyproject.toml, this script or uv_options.py changed.
#
# `setup.sh --reference` builds .venv-reference instead: PyPI's torch with the torchvision release
# built for it, on any machine, so that the metrics' comparisons with the reference libraries
# (torchvision's raft_large, torchmetrics' LPIPS; tests/test_metrics.py) run where the CPU build
# of torch has no torchvision (PyPI's torchvision links PyPI's torch, a CUDA build on x86_64 that
# also runs on the CPU; about 5.5 GB there).
set -euo pipefail
cd "$(dirname "$0")/.."

REFERENCE=0
if [ "${1:-}" = "--reference" ]; then REFERENCE=1; fi
if [ "$REFERENCE" = 1 ]; then VENV="${VENV:-.venv-reference}"; else VENV="${VENV:-.venv}"; fi
TORCH_VERSION="2.13.0"
TORCHVISION_VERSION="0.28.0"  # the release built against TORCH_VERSION
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: Python 3.11 is required (bpy wheels exist only for it); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

# Debian's Chromium for the demo page's browser test (tests/test_web.py), where it can be installed.
if [ "$REFERENCE" = 0 ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian's chromium (the browser test of the demo page)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
      || echo "setup: chromium could not be installed; the browser test will be skipped"
  else
    echo "setup: no chromium (install it as root: apt-get install chromium); the browser test will be skipped"
  fi
fi

stamp="$VENV/.installed-$(cat pyproject.toml scripts/setup.sh scripts/uv_options.py | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet --progress-bar off)

# uv installs what pip would in half the time (here 2.5 min -> 1.2 min: it downloads, unpacks
# and compiles in parallel). It compiles the bytecode at install, as pip does: where
# PYTHONDONTWRITEBYTECODE is set (as on this project's CI) nothing is compiled later, so every
# process would compile its imports anew (make check 4.7 min against 3.1). It reads none of pip's
# configuration, so it is given pip's indexes, find-links, constraints, certificate and timeout
# (scripts/uv_options.py). Where uv cannot be set up, or fails, pip installs instead, and says so.
uv=() uv_env=()
if "${pip[@]}" "uv>=0.5" >/dev/null 2>&1 && "$VENV/bin/python" scripts/uv_options.py > "$VENV/.uv-options" \
    && "$VENV/bin/python" scripts/uv_options.py --env > "$VENV/.uv-env"; then
  mapfile -d '' uv < "$VENV/.uv-options"
  mapfile -t uv_env < "$VENV/.uv-env"
  uv=("$VENV/bin/uv" pip install --quiet --compile-bytecode --python "$VENV/bin/python" "${uv[@]}")
else
  echo "setup: uv could not be set up; installing with pip (slower)"
fi
rm -f "$VENV/.uv-options" "$VENV/.uv-env"
# install [--timeout S] ARGS...: pip's arguments (those uv shares with it; --timeout S first).
install() {
  local timeout=()
  if [ "$1" = "--timeout" ]; then timeout=("$1" "$2"); shift 2; fi
  if [ ${#uv[@]} -gt 0 ]; then
    env "${uv_env[@]}" ${timeout[1]:+UV_HTTP_TIMEOUT=${timeout[1]}} "${uv[@]}" "$@" && return 0
    echo "setup: uv failed to install $*; trying pip" >&2
  fi
  "${pip[@]}" "${timeout[@]}" "$@"
}

if [ "$REFERENCE" = 1 ]; then
  # Pairs whose PyPI wheels import together on a CPU-only machine.
  case "$(uname -m)" in
    x86_64) pair=("torch==2.14.1" "torchvision==0.29.1") ;;
    aarch64) pair=("torch==2.9.1" "torchvision==0.24.1") ;;
    *) echo "error: no known torch/torchvision pair for $(uname -m)" >&2; exit 1 ;;
  esac
  echo "setup: the reference environment $VENV with PyPI's ${pair[*]}"
  install "${pair[@]}"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found, installing the CUDA build of torch $TORCH_VERSION (and torchvision)"
  # torchvision gives the reference RAFT and LPIPS backbone (tests/test_metrics.py compares them).
  install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
else
  echo "setup: no NVIDIA GPU, installing the CPU build of torch $TORCH_VERSION"
  # A local wheel (pip --find-links) is used when present; otherwise PyTorch's CPU index.
  install "torch==$TORCH_VERSION+cpu" 2>/dev/null \
    || install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
  # torchvision only from PyTorch's CPU index: PyPI's build links CUDA torch and fails to import
  # beside the CPU build (transformers would then fail too). Without it the metrics' comparisons
  # with torchvision's RAFT and LPIPS backbone (tests/test_metrics.py) are skipped.
  install --timeout 20 --no-deps "torchvision==$TORCHVISION_VERSION+cpu" \
    --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
    || echo "setup: torchvision's CPU build is not reachable; going on without it"
fi
install -e ".[dev]"
# Compiled packages can install and still not import together (pyarrow 26 against bpy's NumPy < 2
# did: pyarrow does not declare NumPy); say so here, not in the middle of the test suite.
if ! "$VENV/bin/python" -c 'import numpy, pyarrow, torch, scipy, numba, ray, bpy' 2>"$VENV/.import-error"; then
  echo "error: $VENV installed but its packages do not import together:" >&2
  tail -n 3 "$VENV/.import-error" >&2
  exit 1
fi
rm -f "$VENV/.import-error" "$VENV"/.installed-*
touch "$stamp"
echo "setup: done ($VENV)"
