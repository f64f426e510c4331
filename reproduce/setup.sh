#!/usr/bin/env bash
# Create .venv/ in the repository root (if missing or out of date) and install everything from the package registry.
# Sourced by reproduce/all.sh and tests/run.sh; safe to run on its own: `bash reproduce/setup.sh`.
# Re-running skips the install when pyproject.toml, constraints.txt and this file are unchanged.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
STAMP="$VENV/.chg-setup-stamp"
# Fashion-MNIST (the medium scale's data): Debian's dataset-fashion-mnist, installed here when it is missing and apt is
# usable (root + apt-get) — tried when the venv is (re)installed, so not on every run; otherwise a note. Not fatal: the
# quick scale does not need it. CHG_NO_APT=1 never calls apt-get.
fashion_mnist() {  # $1 = try_apt | note
  local sys_dir=/usr/share/datasets/fashion-mnist data_dir="${CHG_DATA:-$ROOT/data}"
  for d in "$data_dir/fashion-mnist" "$data_dir/FashionMNIST/raw" "$sys_dir"; do
    [ -f "$d/train-images-idx3-ubyte.gz" ] && [ -f "$d/t10k-labels-idx1-ubyte.gz" ] && return 0
  done
  if [ "$1" = try_apt ] && [ "${CHG_NO_APT:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] Fashion-MNIST missing: apt-get install dataset-fashion-mnist (for the medium scale)" >&2
    if apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >&2 \
        && [ -f "$sys_dir/train-images-idx3-ubyte.gz" ]; then
      echo "[setup] Fashion-MNIST installed in $sys_dir" >&2
      return 0
    fi
    echo "[setup] apt-get could not install dataset-fashion-mnist (see above)" >&2
  fi
  echo "[setup] NOTE: Fashion-MNIST is not on this machine (needed by --scale medium only; the quick scale runs" \
       "without it). Get it with 'apt-get install dataset-fashion-mnist' (as root), or with torchvision on a machine" \
       "with network: python -c \"import torchvision; torchvision.datasets.FashionMNIST('data', download=True)\"," \
       "then copy data/FashionMNIST/raw/*.gz to $data_dir/fashion-mnist/ here." >&2
  return 0
}
want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" "$ROOT/reproduce/setup.sh" | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  fashion_mnist note
  exit 0
fi
fashion_mnist try_apt
echo "[setup] installing into $VENV (one time; several minutes: torch is large)" >&2
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then  # missing, or a half-made venv from a failed try
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" || { echo "[setup] '$PY -m venv' failed (Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
fi
pip_install() {  # pip, pinned to the tested versions; drops this machine's noisy "Location ... is ignored" lines
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$ROOT/constraints.txt" "$@" 2>&1 \
    | { grep -v -e "is ignored: it is neither a file nor a directory" -e "^opendataval 1.3.0 requires" \
        -e "^ERROR: pip's dependency resolver does not currently take into account" || true; }
}
# torch first, pinned by the constraints (a plain 'torch' could pull a different multi-GB build)
pip_install torch torchvision
# OpenDataVal 1.3.0 pins torch~=2.1, numpy<1.26, pandas<2 in its metadata: install it without its dependencies and
# then the packages it really imports (the 'opendataval' extra). geomloss 0.3 breaks its LAVA import; 0.2.6 works.
pip_install --no-deps opendataval==1.3.0
pip_install -e "$ROOT[test,notebooks,opendataval,docs,huggingface,lightning,timm]"  # (pip's complaints about opendataval's pins are filtered)
"$VENV/bin/python" -c "import chg, opendataval.dataval, sympy, matplotlib, nbval, mkdocs, mkdocstrings_handlers.python, accelerate, lightning, timm" \
  || { echo "[setup] import check failed" >&2; exit 1; }
echo "$want" > "$STAMP"
echo "[setup] done" >&2
