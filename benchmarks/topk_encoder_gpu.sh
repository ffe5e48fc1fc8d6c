#!/usr/bin/env bash
# Device check for the fused top-k encoder (issue 4), run once on the lent GPU machine:
# CUDA exactness tests (Triton vs reference, sparse backward vs dense), then the GPU table.
# Everything is also written under $OUT. Usage: bash benchmarks/topk_encoder_gpu.sh
set -uo pipefail
OUT=${OUT:-/tmp/topk_gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/env.txt"
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" 2>&1 | tee -a "$OUT/env.txt"
# -p no:cacheprovider: the tree is a throwaway copy; -o addopts= drops the CPU default marker filter.
timeout 200 $PY -m pytest -q -p no:cacheprovider -o addopts= -m gpu tests/kernels 2>&1 | tee "$OUT/tests_gpu.txt"
timeout 300 $PY benchmarks/topk_encoder.py --device cuda 2>&1 | tee "$OUT/bench_gpu.txt"
