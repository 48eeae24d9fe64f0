#!/usr/bin/env bash
# The GPU benchmark, as run on a lent machine that has torch + CUDA but no network (see benchmarks/README.md).
# diffusers (and importlib_metadata) travel as wheels in .whl/; results go to $OUT (default benchmarks/results).
# Usage: bash benchmarks/gpu/bench.sh            (≈ 8 min on an H100: eager rows first, compiled rows last)
set -uo pipefail
OUT=${OUT:-benchmarks/results}
export PYTHONUNBUFFERED=1
nvidia-smi -L
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import torch, diffusers, undiffuse; print('torch', torch.__version__, 'diffusers', diffusers.__version__, torch.cuda.get_device_name())"
# the GPU code paths, checked before they are timed: CUDA-graph sampling = eager, a short bf16 training run + sampling
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_speed.py -k "cuda" 2>&1 | tail -3
timeout 120 python3 -m undiffuse.cli.main train --data digits --preset digits-tiny --out /tmp/gpu_smoke --steps 200 \
  --no-progress --device cuda 2>&1 | tail -2
timeout 60 python3 -m undiffuse.cli.main sample /tmp/gpu_smoke --n 64 --sampler dpmpp_2m --steps 10 --device cuda \
  --out "$OUT/gpu_smoke_samples.png" 2>&1 | tail -1
# the side-by-side benchmark (the JSON in $OUT is rewritten after every measurement)
[ -f .gpuA/inception.part1 ] && cp .gpuA/inception.part1 /tmp/   # half of the FID weights, for fid.sh
timeout "${BENCH_SECONDS:-450}" python3 -m undiffuse.cli.main bench --device cuda --out "$OUT" --no-oracle
echo "bench exit $?"
