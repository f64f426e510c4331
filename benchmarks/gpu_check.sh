#!/usr/bin/env bash
# The prepared GPU check (issue 11, item 6): one command, <= 8 minutes on one recent GPU, JSON into OUTDIR.
#
#   bash benchmarks/gpu_check.sh OUTDIR            # on a machine with CUDA
#   bash benchmarks/gpu_check.sh --dry-run OUTDIR  # every step, tiny, on the CPU (about a minute on an idle 2-core
#                                                  # machine; tests/test_gpu_check.py runs it)
#
# Steps (each timed; a failing step is recorded and the others still run):
#   1. tests: the CUDA tests (pytest -k "cuda or gpu", i.e. every test whose name mentions cuda/gpu) -> tests.json
#   2. bench_core: benchmarks/bench_core.py --device cuda -> core_cuda.json/.md (dry run: --quick on the CPU)
#   3. resnet18_epoch: one ResNet-18 training epoch (chg.experiments.train.train, method full) on the Fashion-MNIST pool padded
#      to 32x32 -> in gpu_check.json
#   4. selection: ResNet-18, 30% label noise, CHG vs Random at a = 0.1 and 0.3, 15 epochs, R = 5 (chg.experiments.train.train)
#      -> in gpu_check.json
# Summary of every step: OUTDIR/gpu_check.json.
#
# Data: Fashion-MNIST's four IDX .gz files in data/fashion-mnist/ (or $CHG_DATA/fashion-mnist/). No network is used.
# Copy them there first, e.g. from Debian's package (apt-get install dataset-fashion-mnist):
#   mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/
# or from torchvision's download on a machine with network:
#   python -c "import torchvision; torchvision.datasets.FashionMNIST('data', download=True)"
#   mkdir -p data/fashion-mnist && cp data/FashionMNIST/raw/*.gz data/fashion-mnist/
# Python: $PYTHON, else .venv/bin/python (a fresh clone: `bash reproduce/setup.sh` first), else python3.
# Needs only torch, torchvision, numpy, scipy, scikit-learn, sympy, matplotlib, pytest and this repository.
# CHG_GPU_CHECK_DEVICE=cpu is the same as --dry-run; CHG_GPU_CHECK_STEPS="tests train" runs only those steps.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
[ "${CHG_GPU_CHECK_DEVICE:-cuda}" = cpu ] && DRY=1
OUT="${1:?usage: bash benchmarks/gpu_check.sh [--dry-run] OUTDIR}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" CHG_DOWNLOAD=0 CHG_SYSTEM_DATASETS="" MPLBACKEND=Agg
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
START=$(date +%s)

step() {  # step NAME TIMEOUT_S CMD...: run, time, record {ok, rc, seconds} in OUT/steps/NAME.json
  local name="$1" limit="$2"; shift 2
  local t0=$(date +%s) rc
  mkdir -p "$OUT/steps"
  echo "[gpu_check] $name ..." >&2
  timeout "$limit" "$@" > "$OUT/steps/$name.log" 2>&1
  rc=$?
  printf '{"step": "%s", "ok": %s, "rc": %d, "seconds": %d, "timed_out": %s}\n' "$name" \
    "$([ $rc = 0 ] && echo true || echo false)" "$rc" "$(( $(date +%s) - t0 ))" \
    "$([ $rc = 124 ] && echo true || echo false)" > "$OUT/steps/$name.json"
  echo "[gpu_check] $name: rc=$rc ($(( $(date +%s) - t0 )) s)" >&2
}

STEPS=" ${CHG_GPU_CHECK_STEPS:-tests bench_core train} "  # a subset, e.g. "tests train" (the pytest of the dry run)
if [ $DRY = 1 ]; then  # the dry run: the tests step on one test file only (collecting them all is the slow part)
  [[ $STEPS == *" tests "* ]] && step tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_train.py \
    -k "cuda or gpu" --junitxml="$OUT/tests.xml"
  [[ $STEPS == *" bench_core "* ]] && step bench_core 300 "$PY" benchmarks/bench_core.py --quick --device cpu \
    --threads 1 --out "$OUT"
  [[ $STEPS == *" train "* ]] && step train 300 "$PY" benchmarks/gpu_check.py --dry-run --out "$OUT"
else  # time limits: 90 + 150 + 220 s = 7 min 40 s at most
  [[ $STEPS == *" tests "* ]] && step tests 90 "$PY" -m pytest -q -p no:cacheprovider tests -k "cuda or gpu" \
    --junitxml="$OUT/tests.xml"
  [[ $STEPS == *" bench_core "* ]] && step bench_core 150 "$PY" benchmarks/bench_core.py --device cuda --out "$OUT"
  [[ $STEPS == *" train "* ]] && step train 220 "$PY" benchmarks/gpu_check.py --out "$OUT"
fi
"$PY" benchmarks/gpu_check.py --summarize --out "$OUT" --dry-run-flag "$DRY" --seconds "$(( $(date +%s) - START ))"
