#!/usr/bin/env bash
# Create (or update) the project's virtual environment with everything installed.
# torch: the CPU build on machines without an NVIDIA GPU, PyPI's CUDA build with one.
# Re-running is cheap: nothing is reinstalled unless pyproject.toml or this script changed.
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

stamp="$VENV/.installed-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet --progress-bar off)

if [ "$REFERENCE" = 1 ]; then
  # Pairs whose PyPI wheels import together on a CPU-only machine.
  case "$(uname -m)" in
    x86_64) pair=("torch==2.14.1" "torchvision==0.29.1") ;;
    aarch64) pair=("torch==2.9.1" "torchvision==0.24.1") ;;
    *) echo "error: no known torch/torchvision pair for $(uname -m)" >&2; exit 1 ;;
  esac
  echo "setup: the reference environment $VENV with PyPI's ${pair[*]}"
  "${pip[@]}" "${pair[@]}"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found, installing the CUDA build of torch $TORCH_VERSION (and torchvision)"
  # torchvision gives the reference RAFT and LPIPS backbone (tests/test_metrics.py compares them).
  "${pip[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
else
  echo "setup: no NVIDIA GPU, installing the CPU build of torch $TORCH_VERSION"
  # A local wheel (pip --find-links) is used when present; otherwise PyTorch's CPU index.
  "${pip[@]}" "torch==$TORCH_VERSION+cpu" 2>/dev/null \
    || "${pip[@]}" "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
  # torchvision only from PyTorch's CPU index: PyPI's build links CUDA torch and fails to import
  # beside the CPU build (transformers would then fail too). Without it the metrics' comparisons
  # with torchvision's RAFT and LPIPS backbone (tests/test_metrics.py) are skipped.
  "${pip[@]}" --no-deps --timeout 20 "torchvision==$TORCHVISION_VERSION+cpu" \
    --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
    || echo "setup: torchvision's CPU build is not reachable; going on without it"
fi
"${pip[@]}" -e ".[dev]"
rm -f "$VENV"/.installed-*
touch "$stamp"
echo "setup: done ($VENV)"
