#!/usr/bin/env bash
# Create .venv (once) and install t2v_unlearn with its test tools and the optional NudeNet detector (the "nsfw"
# extra, AGPL-3.0), so that its tests run. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import t2v_unlearn, torch, diffusers, pytest, nudenet" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch 2.13.0 first: on our machines it is a CPU wheel already on disk (a bare `torch` pulls several GB)
  .venv/bin/python -m pip install -q "torch==2.13.0" -e ".[test,nsfw]"
  touch .venv/.installed
fi
