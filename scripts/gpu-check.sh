#!/usr/bin/env bash
# The GPU checks of the engine issue, as one short script for a lent GPU machine:
#   1. the demo job sampled on cuda:0 (must finish, 64 images);
#   2. a DiT-XL/2-shaped model with random weights at 256 px, batch 32, 10 DDPM steps, CFG 4,
#      in tf32 and in bf16: images/s and peak GPU memory (nvidia-smi, polled every 100 ms).
# Usage (binary built here, carried there): scripts/gpu-check.sh [path/to/fidshard]
# On the GPU machine point LD_LIBRARY_PATH at the torch lib folder of its python3 first:
#   export LD_LIBRARY_PATH=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib
set -euo pipefail
bin=${1:-target/release/fidshard}
out=${OUT:-/tmp/fidshard-gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

peak_mem() { # runs "$@" while polling the GPU's used memory; prints the peak in MiB
  local log; log=$(mktemp)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$log" &
  local smi=$!
  "$@"
  kill $smi 2>/dev/null || true
  echo "peak GPU memory: $(sort -n "$log" | tail -1) MiB"
  rm -f "$log"
}

echo "== demo config on cuda:0"
peak_mem "$bin" sample configs/demo.yaml --out "$out/demo" --device cuda:0
ls "$out/demo" | grep -c png

for p in tf32 bf16; do
  echo "== DiT-XL/2 random weights, 256 px, batch 32, 10 steps, CFG 4, $p"
  peak_mem "$bin" bench --random-model DiT-XL/2 --image-size 256 --steps 10 --cfg-scale 4 \
    --batch-size 32 --images 64 --precision "$p" --device cuda:0
done
