#!/usr/bin/env bash
# The test command: set up (idempotent), lint and type-check, then the default pytest suite (slow
# tests excluded). Ruff and mypy read their settings from pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
mkdir -p test-artifacts
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
