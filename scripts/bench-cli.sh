#!/usr/bin/env bash
# Start-up cost of the coordinator binary (issue: two binaries): `fidshard status` median wall
# time over R runs on a job (default: a 50,000-sample job made by this script), and the peak
# RSS of `fidshard --version`. Usage:
#   scripts/bench-cli.sh [JOB.yaml] [RUNS]
# Without JOB.yaml it samples a 50,000-image job of the golden demo model (1 step, 64 px,
# shard_size 64 -> 782 shard records) into /tmp/fidshard-bench-cli once (about 2 minutes).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${FIDSHARD_BIN:-$root/target/release/fidshard}
job=${1:-}
runs=${2:-30}
if [[ -z "$job" ]]; then
  dir=/tmp/fidshard-bench-cli
  mkdir -p "$dir"
  job=$dir/job.yaml
  sed -e "s#\.\./tests#$root/tests#g" -e 's/^num_samples: .*/num_samples: 50000/' \
      -e 's/^steps: .*/steps: "1"/' -e 's/^batch_size: .*/batch_size: 16/' \
      -e 's/^shard_size: .*/shard_size: 64/' -e "s#^out_dir: .*#out_dir: $dir/out#" \
      "$root/configs/demo.yaml" > "$job"
  "$bin" run "$job" --force --log-format json 2>/dev/null || true
fi
python3 - "$bin" "$job" "$runs" <<'PY'
import resource, statistics, subprocess, sys, time
bin, job, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
times = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run([bin, "status", job], check=True, stdout=subprocess.DEVNULL)
    times.append(time.perf_counter() - t)
print(f"fidshard status {job}: median {statistics.median(times)*1000:.1f} ms, "
      f"min {min(times)*1000:.1f} ms, max {max(times)*1000:.1f} ms over {runs} runs")
before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
subprocess.run([bin, "--version"], check=True, stdout=subprocess.DEVNULL)
after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"fidshard --version: peak RSS {max(before, after)/1024:.1f} MiB "
      f"(the largest child so far; status runs included)")
PY
/usr/bin/time -f "fidshard --version alone: peak RSS %M KiB, %e s" "$bin" --version >/dev/null
