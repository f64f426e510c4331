#!/usr/bin/env bash
# Regenerate every table and figure of the paper, plus the Theorem 1 demo, the label-error detection table and the
# language-model documents table (reproduce/lm_documents.py: smoke and quick scales only).
#   bash reproduce/all.sh                 # quick scale on CPU (default without CUDA), paper scale with CUDA
#   bash reproduce/all.sh --scale smoke   # every script end to end in ~2 minutes (what CI runs); also quick | medium |
#                                         # medium-cnn (Tables 2-3 with a BatchNorm CNN) | paper
#   bash reproduce/all.sh --render-only   # any other option goes to every script (e.g. --render-only, --replace)
# Sets up .venv/ first if needed (reproduce/setup.sh; CHG_PYTHON=/path/to/python uses that interpreter instead).
# Each step writes one JSON per run under reproduce/results/<scale>/ (finished runs are skipped, so an interrupted
# run resumes) and renders figures/ (figures/<scale>/ for scales other than quick) from those files only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -n "${CHG_PYTHON:-}" ]; then
  PY="$CHG_PYTHON"
else
  bash reproduce/setup.sh
  PY="$ROOT/.venv/bin/python"
fi
export MPLBACKEND=Agg
ARGS=("$@")
T_ALL=$SECONDS

step() {  # step NAME CMD...
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name: $* ===" >&2
  "$@"
  echo "=== $name done in $((SECONDS - t0)) s ===" >&2
}

sharded() {  # sharded SCRIPT: its grid as two shards side by side (one per core), then one render
  case " ${ARGS[*]-} " in
    *" --render-only "*) "$PY" "$1" ${ARGS[@]+"${ARGS[@]}"}; return ;;
  esac
  "$PY" "$1" --threads 1 --no-render --shard 0/2 ${ARGS[@]+"${ARGS[@]}"} & local p0=$!
  "$PY" "$1" --threads 1 --no-render --shard 1/2 ${ARGS[@]+"${ARGS[@]}"} & local p1=$!
  local rc=0
  wait "$p0" || rc=1
  wait "$p1" || rc=1
  [ "$rc" = 0 ] || return 1
  case " ${ARGS[*]-} " in *" --no-render "*) return 0 ;; esac
  "$PY" "$1" --render-only ${ARGS[@]+"${ARGS[@]}"}
}

# Table 1 first (its runs feed Figures 1-2, which then only render); Tables 2 and 3 are independent grids of small
# single-threaded runs, so they go side by side on the two cores; Table 1's and the detection table's grids run as two
# shards side by side.

# --scale medium-cnn (Tables 2-3 and the detection table with a BatchNorm CNN) has no Theorem 1 / Table 1 / Figure
# step (those do not train the selection model).
case " ${ARGS[*]-} " in *" --scale medium-cnn "*|*" --scale=medium-cnn "*) CNN_ONLY=1 ;; *) CNN_ONLY=0 ;; esac
if [ "$CNN_ONLY" = 0 ]; then
  step theorem1 "$PY" reproduce/theorem1.py ${ARGS[@]+"${ARGS[@]}"}
  step table1   sharded reproduce/table1.py
  step figure1  "$PY" reproduce/figure1.py ${ARGS[@]+"${ARGS[@]}"}
  step figure2  "$PY" reproduce/figure2.py ${ARGS[@]+"${ARGS[@]}"}
fi
both_tables() {
  "$PY" reproduce/table2.py --threads 1 ${ARGS[@]+"${ARGS[@]}"} & local p2=$!
  "$PY" reproduce/table3.py --threads 1 ${ARGS[@]+"${ARGS[@]}"} & local p3=$!
  local rc=0
  wait "$p2" || rc=1
  wait "$p3" || rc=1
  return $rc
}
step "table2+table3" both_tables
step detection sharded reproduce/detection.py
# The language-model documents experiment has a smoke and a quick preset only (no medium/paper data or model).
case " ${ARGS[*]-} " in
  *" --scale smoke "*|*" --scale=smoke "*|*" --scale quick "*|*" --scale=quick "*) LM=1 ;;
  *" --scale"*) LM=0 ;;
  *) LM=1 ;;
esac
if [ "$LM" = 1 ]; then
  step lm_documents "$PY" reproduce/lm_documents.py ${ARGS[@]+"${ARGS[@]}"}
fi
echo "all done in $((SECONDS - T_ALL)) s: tables and figures in figures/, run records in reproduce/results/" >&2
