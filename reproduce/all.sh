#!/usr/bin/env bash
# Regenerate every table and figure of the paper, plus the Theorem 1 demo.
#   bash reproduce/all.sh                 # quick scale on CPU (default without CUDA), paper scale with CUDA
#   bash reproduce/all.sh --scale quick   # force a scale: quick | paper
# Sets up .venv/ first if needed (reproduce/setup.sh). Each step writes one JSON per run under reproduce/results/
# (finished runs are skipped, so an interrupted run resumes) and renders figures/ from those files.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash reproduce/setup.sh
PY="$ROOT/.venv/bin/python"
export MPLBACKEND=Agg
SCALE_ARGS=("$@")

step() {  # step NAME CMD...
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name: $* ===" >&2
  "$@"
  echo "=== $name done in $((SECONDS - t0)) s ===" >&2
}

# Table 1 first (its runs feed Figures 1-2, which only render); Tables 2 and 3 are independent grids of small
# single-threaded runs, so they go side by side on the two cores.
step theorem1 "$PY" reproduce/theorem1.py
step table1   "$PY" reproduce/table1.py ${SCALE_ARGS[@]+"${SCALE_ARGS[@]}"}
step figure1  "$PY" reproduce/figure1.py ${SCALE_ARGS[@]+"${SCALE_ARGS[@]}"}
step figure2  "$PY" reproduce/figure2.py ${SCALE_ARGS[@]+"${SCALE_ARGS[@]}"}
both_tables() {
  "$PY" reproduce/table2.py --threads 1 ${SCALE_ARGS[@]+"${SCALE_ARGS[@]}"} & local p2=$!
  "$PY" reproduce/table3.py --threads 1 ${SCALE_ARGS[@]+"${SCALE_ARGS[@]}"} & local p3=$!
  wait "$p2" && wait "$p3"
}
step "table2+table3" both_tables
echo "all done: tables and figures in figures/, run records in reproduce/results/" >&2
