#!/usr/bin/env bash
# The GPU measurements of the GPU issue, as one prepared script for a lent GPU machine (about
# 6 minutes on an H100). Build the shippable binaries here with `make dist` (dist/fidshard and
# dist/fidshard-worker, stripped, about 15 MiB: a GPU machine takes at most 64 MiB of carried
# files) and carry dist/ with the checkout (the device tool: carry ["dist"]); the GPU machine
# uses its own torch 2.11.0 from its python3, found through LD_LIBRARY_PATH below, not the venv:
#   scripts/gpu-check.sh            # writes $OUT (default /tmp/fidshard-gpu) and prints a summary
# 1. `fidshard doctor`;
# 2. the demo job through `run` on GPU 0 (`devices: [0]`), scored by the digit classifier;
# 3. `bench` of DiT-XL/2 at 256 px with random weights, CFG 1.5, 50 steps, batch auto, in tf32
#    and bf16: images/s, GPU memory, MFU against the H100 SXM dense peak;
# 4. the same work in PyTorch eager (../shared/bench/ref_dit_torch.py) for the ratio;
# 5. bf16 and fp16 against fp32 on the demo model: max and mean absolute uint8 difference per
#    image over 64 images;
# 6. Inception features on the GPU: `fidshard eval` of 2048 random 256 px images (random
#    Inception weights, IS only): images/s, hence the cost of `evaluate:` as a fraction of
#    DiT-XL/2 sampling (step 3's images/s); and the demo with `evaluate:` through `run` on GPU 0
#    (features computed inside the worker: its log's `features_seconds`).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${FIDSHARD_BIN:-$root/dist/fidshard}
out=${OUT:-/tmp/fidshard-gpu}
py=${PYTHON:-python3}
ref=${REF:-$root/../shared/bench/ref_dit_torch.py}
mkdir -p "$out"
cd "$root"
[[ -x "$bin" && -x "$(dirname "$bin")/fidshard-worker" ]] ||
  { echo "gpu-check: $bin or its fidshard-worker is missing; run \`make dist\` and carry dist/" >&2; exit 2; }
# The torch of this machine's python (the wheel the binaries were built against, 2.11.0).
export LD_LIBRARY_PATH=$($py -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib:${LD_LIBRARY_PATH:-}

echo "== 1. doctor"
"$bin" doctor --json > "$out/doctor.json"; "$bin" doctor

echo "== 2. demo on GPU 0 through run"
rm -rf "$out/demo"
"$bin" run configs/demo.yaml --set devices='[0]' --set out_dir="$out/demo" --log-format json 2> "$out/demo.log"
echo "exit $?"
"$bin" status configs/demo.yaml --set out_dir="$out/demo"
$py - "$out/demo/samples.npz" tests/fixtures/demo-digits/classifier.json <<'PY'
import json, sys, numpy as np
z = np.load(sys.argv[1]); x, y = z["arr_0"], z["arr_1"]
c = json.load(open(sys.argv[2])); W, b = np.array(c["weights"]), np.array(c["bias"])
g = x.astype(np.float64).mean(axis=3) / 255.0
g = g.reshape(len(g), 8, 2, 8, 2).mean(axis=(2, 4)) * 16
print("demo on GPU: digit accuracy", ((g.reshape(len(g), 64) @ W.T + b).argmax(1) == y).mean())
PY

for p in tf32 bf16; do
  peak=$([ "$p" = tf32 ] && echo 494.7 || echo 989.4)
  echo "== 3. fidshard bench DiT-XL/2 256 px, cfg 1.5, 50 steps, batch auto, $p"
  "$bin" bench --random-model DiT-XL/2 --image-size 256 --steps 50 --cfg-scale 1.5 \
    --batch-size auto --images 256 --precision "$p" --device cuda:0 --peak-tflops "$peak" \
    | tee "$out/bench-$p.txt"
  echo "== 4. PyTorch eager, same settings, $p"
  $py "$ref" --device cuda --model DiT-XL/2 --image-size 256 --steps 50 --cfg 1.5 \
    --batch 64 --n 256 --precision "$p" --json | tee "$out/ref-$p.json"
done

echo "== 5. bf16 / fp16 against fp32, 64 demo images on GPU 0"
for p in fp32 bf16 fp16; do
  "$bin" sample configs/demo.yaml --out "$out/prec-$p" --range 0..64 --device cuda:0 --set precision=$p 2>> "$out/prec.log"
done
$py - "$out" <<'PY'
import sys, numpy as np
from pathlib import Path
from PIL import Image
o = Path(sys.argv[1])
load = lambda p, i: np.asarray(Image.open(o / f"prec-{p}" / f"{i:06}.png"), dtype=np.int16)
for p in ("bf16", "fp16"):
    d = [np.abs(load(p, i) - load("fp32", i)) for i in range(64)]
    print(f"{p} vs fp32 over 64 images: per-image max |diff| max {max(x.max() for x in d)}, "
          f"mean of per-image max {np.mean([x.max() for x in d]):.2f}, mean |diff| {np.mean([x.mean() for x in d]):.4f}")
PY
echo "== 6. Inception features on GPU 0"
"$root/dist/fidshard-worker" random-inception --spec tests/fixtures/inception/weights.json \
  --out "$out/inception.safetensors"
$py -c "import numpy as np; r = np.random.default_rng(0); np.savez('$out/rand256.npz', r.integers(0, 256, (2048, 256, 256, 3), dtype=np.uint8), np.zeros(2048, np.int64))"
rm -rf "$out/eval256"; t0=$(date +%s.%N)
"$bin" eval "$out/rand256.npz" --reference tests/fixtures/eval/reference.npz \
  --inception "$out/inception.safetensors" --devices 0 --metrics is --out "$out/eval256" 2> "$out/eval256.log"
t1=$(date +%s.%N)
echo "features of 2048 images at 256 px on GPU 0 (with start-up): $($py -c "print(round($t1 - $t0, 1))") s"
grep -o 'range=[^ ]* seconds="[^"]*"' "$out/eval256.log" | head -3
rm -rf "$out/demo-eval"
"$bin" run configs/demo.yaml --set devices='[0]' --set out_dir="$out/demo-eval" \
  --set evaluate.reference="$root/tests/fixtures/eval/reference.npz" \
  --set evaluate.inception="$out/inception.safetensors" --set 'evaluate.metrics=[fid, is]' 2> "$out/demo-eval.log"
echo "exit $?"; tail -1 "$out/demo-eval.log"
grep -ho 'shard sampled.*' "$out"/demo-eval/logs/worker-*.log | head -3
echo "== done: results in $out"
