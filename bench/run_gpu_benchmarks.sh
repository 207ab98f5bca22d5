#!/usr/bin/env bash
# The GPU numbers in the README, in one go, on a machine with one NVIDIA GPU:
#   bash bench/run_gpu_benchmarks.sh [OUTDIR]
# (On a GPU machine without Ray: ../shared/offline-gpu/pack-ray.sh here, then
#  `source .ray-bundle/activate.sh && bash bench/run_gpu_benchmarks.sh` there.)
set -euo pipefail
out=${1:-${OUT:-/tmp}}
export PYTHONUNBUFFERED=1 MTGAN_CACHE=${MTGAN_CACHE:-/tmp/mtgan-cache}
py=$(command -v python3)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
"$py" -c 'import torch, ray; print("torch", torch.__version__, "ray", ray.__version__)' | tee -a "$out/gpu.txt"
"$py" bench/bench_core.py --device all --steps 300 --arms 1,4,16 2>&1 | tee "$out/bench_core.txt"
"$py" bench/bench_core.py --device cuda --skip-tasks --steps 300 --arms 16,64,256 2>&1 | tee -a "$out/bench_core.txt"
"$py" bench/bench_gpu_packing.py --per-gpu 1,8,16 --grouped 64,256 --steps 1500 --reference \
  > "$out/bench_packing.log" 2>&1 || { tail -n 40 "$out/bench_packing.log"; exit 1; }
tail -n 8 "$out/bench_packing.log" | tee "$out/bench_packing.txt"
