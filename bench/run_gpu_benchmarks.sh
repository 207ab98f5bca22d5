#!/usr/bin/env bash
# The GPU numbers in the README, on a machine with one NVIDIA GPU, one part after another:
#   bash bench/run_gpu_benchmarks.sh [PART ...]     (default: reference decisive conv quality)
# Parts (each bounded by a timeout, its output in $OUT/<part>.txt, or /tmp without $OUT):
#   reference  issue 8: wall time of the 64-seed x 16-arm reference sweep, grouped (Tune)
#   decisive   issue 9: the default problem until every task is decided or 128 seeds (Tune)
#   conv       issue 12: 32-px DCGAN task-steps/s, batched vs loop, arms x precision x cuDNN setting
#   quality    issue 12: the 32-px conv quality bar, fp32 and bf16 side by side (+ sample grids)
#   core       bench/bench_core.py: tasks batched vs loop, arms grouped, eval share
#   packing    bench/bench_gpu_packing.py: one arm per trial packed 1/8/16 per GPU vs grouped
# On a GPU machine without Ray: ../shared/offline-gpu/pack-ray.sh here, then
#   source .ray-bundle/activate.sh && bash bench/run_gpu_benchmarks.sh
set -uo pipefail
out=${OUT:-/tmp}
export PYTHONUNBUFFERED=1 MTGAN_CACHE=${MTGAN_CACHE:-/tmp/mtgan-cache}
py=$(command -v python3)
parts=("$@"); [ ${#parts[@]} -eq 0 ] && parts=(reference decisive conv quality)
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c 'import torch, ray; print("torch", torch.__version__, "cuda", torch.version.cuda, "ray", ray.__version__)'
  nproc; date -u; } > "$out/gpu.txt" 2>&1
part() {  # part NAME SECONDS COMMAND...: run it under a timeout, keep its output, say how it ended
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  echo "part $name: exit $? after $((SECONDS - t0)) s (limit $limit s)" | tee -a "$out/gpu.txt"
}
for p in "${parts[@]}"; do
  case $p in
    reference) part reference 200 "$py" bench/bench_gpu_packing.py --per-gpu '' --grouped '' --reference ;;
    decisive) part decisive 215 "$py" bench/until_decisive.py --first 64 --max-seeds 128 \
                --gpus-per-trial 0.5 --arms-per-trial 320 ;;
    conv) part conv 150 "$py" bench/bench_conv.py --device cuda --seconds 1 --arms 4,16,64 --precision fp32,tf32,bf16 ;;
    quality)  # two runs at once (~40 s): fp32 and bf16, DCGAN's 64 channels, lr 2e-4, batch 64
      for precision in fp32 bf16; do
        timeout 65 "$py" -m trainables --data shapes:tasks=4,size=32 --arch conv --channels 64 --lr 2e-4 \
          --steps 2000 --every 500 --precision $precision --device cuda --out "$out/conv32-$precision.png" \
          > "$out/quality-$precision.txt" 2>&1 &
      done
      wait; echo "part quality: done" | tee -a "$out/gpu.txt" ;;
    core) part core 300 bash -c "'$py' bench/bench_core.py --device all --steps 300 --arms 1,4,16 &&
            '$py' bench/bench_core.py --device cuda --skip-tasks --steps 300 --arms 16,64,256" ;;
    packing) part packing 400 "$py" bench/bench_gpu_packing.py --per-gpu 1,8,16 --grouped 64,256 --steps 1500 ;;
    *) echo "unknown part $p" | tee -a "$out/gpu.txt"; exit 2 ;;
  esac
done
