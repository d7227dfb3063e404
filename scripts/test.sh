#!/usr/bin/env bash
# Lint and run the test suite. Does its own set-up. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check t2v_unlearn tests benchmarks
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
