#!/usr/bin/env bash
# Set up .venv (if needed) and run every test: unit tests, proofs, and the notebooks (nbval).
# Usage: bash tests/run.sh [extra pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash reproduce/setup.sh
export MPLBACKEND=Agg
exec .venv/bin/python -m pytest tests proofs --nbval-lax notebooks -p no:cacheprovider "$@"
