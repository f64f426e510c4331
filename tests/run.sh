#!/usr/bin/env bash
# Set up .venv (if needed), lint with ruff, and run every test: unit tests, proofs, the notebooks (nbval), then every
# reproduce script end to end at the smoke scale (bash reproduce/all.sh --scale smoke: outputs only under the git-ignored
# reproduce/results/smoke/ and figures/smoke/; checked to leave every tracked file untouched).
# Usage: bash tests/run.sh [extra pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash reproduce/setup.sh
export MPLBACKEND=Agg
PY="${CHG_PYTHON:-$ROOT/.venv/bin/python}"
"$PY" -m ruff check chg tests proofs benchmarks reproduce examples  # lint (pyproject.toml [tool.ruff])
"$PY" -m pytest tests proofs --nbval notebooks --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider "$@"

tracked_state() { git status --porcelain --untracked-files=no 2>/dev/null || true; git diff 2>/dev/null | sha256sum; }
before="$(tracked_state)"
CHG_PYTHON="$PY" bash reproduce/all.sh --scale smoke
if [ "$(tracked_state)" != "$before" ]; then
  echo "tests/run.sh: the smoke scale changed tracked files:" >&2
  git status --porcelain --untracked-files=no >&2
  exit 1
fi
echo "tests/run.sh: smoke scale passed; tracked files untouched" >&2
