#!/usr/bin/env bash
# Creates (once) the Python venv that provides libtorch for tch, and links it as ./.venv.
#
# The venv lives in a per-user cache keyed by the torch version so that clean clones, CI and
# several checkouts share one 4-5 GB install:
#   ${FIDSHARD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fidshard/torch-$TORCH_VERSION}
# Idempotent: a venv whose torch imports with the right version is reused as is.
set -euo pipefail
TORCH_VERSION=2.11.0
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${FIDSHARD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fidshard/torch-$TORCH_VERSION}
python=${PYTHON:-python3}

have_torch() {
  [[ -x "$venv/bin/python" ]] &&
    [[ "$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)" == "$TORCH_VERSION" ]]
}

if ! have_torch; then
  echo "fidshard: installing torch==$TORCH_VERSION into $venv (one time, about 2 minutes)" >&2
  mkdir -p "$(dirname "$venv")"
  [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" numpy
  have_torch || { echo "fidshard: torch $TORCH_VERSION did not import from $venv" >&2; exit 1; }
fi
# numpy is used by tests that read the npz back the way the ADM evaluator does.
"$venv/bin/python" -c 'import numpy' 2>/dev/null || "$venv/bin/python" -m pip install -q numpy

if [[ "$(readlink -f "$root/.venv" 2>/dev/null)" != "$(readlink -f "$venv")" ]]; then
  if [[ -e "$root/.venv" && ! -L "$root/.venv" ]]; then
    echo "fidshard: $root/.venv exists and is not a link to $venv; using it as is" >&2
  else
    ln -sfn "$venv" "$root/.venv"
  fi
fi
