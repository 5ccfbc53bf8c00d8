#!/usr/bin/env bash
# The GPU rehearsal on a lent device machine (the `device` tool runs this in a copy of the working tree):
#   bash tests/gpu/run_on_device.sh            # install (~3 min), then tests/gpu/gpu_rehearsal.py (~4 min)
# Writes $OUT/gpu_rehearsal.json (the `device` tool fetches $OUT). Never part of CI: no GPU there.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
python3.11 -m venv /tmp/gpu-venv 2>/dev/null || python3 -m venv /tmp/gpu-venv
PY=/tmp/gpu-venv/bin/python
# PyPI's torch 2.13.0 wheel for Linux x86_64 is the CUDA build; the rest are the project's pins.
$PY -m pip install -q --upgrade pip
grep -v '^torch==' requirements/constraints.txt > /tmp/gpu-constraints.txt
$PY -m pip install -q "torch==2.13.0" -c /tmp/gpu-constraints.txt -e .
echo "install took $(( $(date +%s) - start )) s"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
OUT="${OUT:-/tmp}" timeout 420 $PY tests/gpu/gpu_rehearsal.py "$@"
echo "GPU rehearsal finished in $(( $(date +%s) - start )) s"
