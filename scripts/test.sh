#!/usr/bin/env bash
# The test command: set up (idempotent), lint and type-check, then the default pytest suite (slow
# tests excluded), in two worker processes (pytest-xdist): most tests use one core, so a second
# worker uses the second core of this project's machines. Ruff and mypy read their settings from
# pyproject.toml. The 25 slowest tests are listed, to watch the 15-minute budget. Extra arguments go
# to pytest (`-n 0` runs in one process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
mkdir -p test-artifacts
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --durations=25 "$@"
