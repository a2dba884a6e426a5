#!/usr/bin/env bash
# Checks the shippable binaries that `make dist` wrote into dist/ (CI runs it through
# `make dist-check`):
# - the completion scripts and the manual pages are in dist/share/ (as `make install` installs
#   them);
# - both are there and together stay under DIST_LIMIT_MIB (default 32 MiB; a GPU node takes at
#   most 64 MiB of carried files, a wheel or a tarball should stay small);
# - neither carries debug info (no .debug_* section) nor the failpoints of the test build;
# - `fidshard` links no libtorch (it must run on a login node without torch) and answers
#   `--version`;
# - `fidshard-worker` starts with the venv's torch (or $TORCH_LIB) on LD_LIBRARY_PATH, the way a
#   GPU node runs it with its own torch 2.11.
# Usage: scripts/dist-check.sh [DIST_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dist=${1:-$root/dist}
limit_mib=${DIST_LIMIT_MIB:-32}
py=${PYTHON:-$root/.venv/bin/python}
fail() {
  echo "dist-check: $*" >&2
  exit 1
}

for b in fidshard fidshard-worker; do
  [[ -x "$dist/$b" ]] || fail "$dist/$b: missing or not executable; run \`make dist\`"
done

for f in share/bash-completion/completions/fidshard share/zsh/site-functions/_fidshard \
  share/fish/vendor_completions.d/fidshard.fish share/man/man1/fidshard.1 share/man/man1/fidshard-run.1; do
  [[ -s "$dist/$f" ]] || fail "$dist/$f: missing or empty; run \`make dist\`"
done

total=$(du -cb "$dist"/* | tail -1 | cut -f1)
((total <= limit_mib * 1024 * 1024)) ||
  fail "$dist holds $((total / 1024 / 1024)) MiB, over the limit of $limit_mib MiB (DIST_LIMIT_MIB)"

for b in fidshard fidshard-worker; do
  # .debug_gdb_scripts (rustc's pretty-printer hook, loaded with the program) is not debug info.
  if readelf -S --wide "$dist/$b" | grep -Eq '\.z?debug_(info|line|abbrev|str|ranges|rnglists|loc|loclists|aranges)'; then
    fail "$dist/$b carries debug info (.debug_info/.debug_line sections); \`make dist\` strips it"
  fi
  # The environment variable the fail crate reads: only a failpoints build links that crate.
  if grep -qa 'FAILPOINTS' "$dist/$b"; then
    fail "$dist/$b was built with the failpoints feature; \`make dist\` builds without it"
  fi
done

if readelf -d "$dist/fidshard" | grep -Eq 'NEEDED.*(torch|c10)'; then
  fail "$dist/fidshard links libtorch ($(readelf -d "$dist/fidshard" | grep -Eo 'lib(torch|c10)[^]]*' | tr '\n' ' ')); it must run without torch"
fi
version=$("$dist/fidshard" --version) || fail "$dist/fidshard --version failed"

torch_lib=${TORCH_LIB:-$("$py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')} ||
  fail "no torch in $py to start the worker with; set PYTHON or TORCH_LIB"
worker_version=$(LD_LIBRARY_PATH="$torch_lib" "$dist/fidshard-worker" --version) ||
  fail "$dist/fidshard-worker did not start with LD_LIBRARY_PATH=$torch_lib"
# The libtorch it loads is the one on LD_LIBRARY_PATH, not the build machine's RUNPATH.
loaded=$(LD_LIBRARY_PATH="$torch_lib" ldd "$dist/fidshard-worker" | awk '/libtorch_cpu.so/ {print $3}')
[[ "$(readlink -f "$loaded")" == "$(readlink -f "$torch_lib/libtorch_cpu.so")" ]] ||
  fail "$dist/fidshard-worker loads libtorch_cpu.so from '$loaded', not from LD_LIBRARY_PATH=$torch_lib"

echo "dist-check: $version and $worker_version in $dist, $((total / 1024 / 1024)) MiB, no debug info, no failpoints"
