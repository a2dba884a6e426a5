#!/usr/bin/env bash
# Benchmarks writing samples.npz from PNGs: fidshard's streaming assembly (orchestrator/src/npz.rs,
# the ignored test `npz_bench`) against PIL + np.stack + np.savez (scripts/bench_assemble.py),
# on the same 256x256 PNGs, and checks that both files hold the same arrays.
#
#   scripts/bench-assemble.sh [DIR]      (default DIR: ${TMPDIR:-/tmp}/fidshard-bench-assemble)
#
# Environment: FIDSHARD_BENCH_N (5000 images), FIDSHARD_BENCH_THREADS (decoder threads, default
# the cores up to 8), KEEP=1 keeps the two npz files (the PNGs are always kept for reruns).
# Both sides read the PNGs from the page cache (the generation step or a previous run warmed it);
# nothing here drops caches.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export LIBTORCH_USE_PYTORCH=1 PATH="$ROOT/.venv/bin:$PATH"
export FIDSHARD_BENCH_DIR="${1:-${TMPDIR:-/tmp}/fidshard-bench-assemble}"
export FIDSHARD_BENCH_N="${FIDSHARD_BENCH_N:-5000}"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || { echo "bench-assemble: $PY is missing; run 'make env' first" >&2; exit 2; }
"$PY" -c 'import PIL' 2>/dev/null || "$PY" -m pip install --quiet pillow
mkdir -p "$FIDSHARD_BENCH_DIR"
rm -f "$FIDSHARD_BENCH_DIR/rust.npz" "$FIDSHARD_BENCH_DIR/python.npz"

cargo_test() {
    cargo test --release -p fidshard --bin fidshard "$1" -- --ignored --nocapture --test-threads 1
}

echo "== generating $FIDSHARD_BENCH_N PNGs of 256x256 in $FIDSHARD_BENCH_DIR/samples (kept if present)"
cargo_test bench_generate_pngs 2>&1 | grep -E '^test |panicked' || true
du -sh "$FIDSHARD_BENCH_DIR/samples"

echo "== fidshard assembly"
cargo_test npz_bench 2>&1 | grep -E 'rust assemble|panicked|FAILED'

echo "== python baseline"
"$PY" scripts/bench_assemble.py savez "$FIDSHARD_BENCH_DIR/samples" "$FIDSHARD_BENCH_N" \
    "$FIDSHARD_BENCH_DIR/python.npz"

echo "== same arrays?"
"$PY" scripts/bench_assemble.py compare "$FIDSHARD_BENCH_DIR/rust.npz" "$FIDSHARD_BENCH_DIR/python.npz"
[ "${KEEP:-0}" = 1 ] || rm -f "$FIDSHARD_BENCH_DIR/rust.npz" "$FIDSHARD_BENCH_DIR/python.npz"
