"""The default explainer: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) behind llama-cpp-python's server.

The GGUF is fetched and checksummed by `workbench.fetch.qwen_gguf` (the model is also a registered
model, `workbench.models`, for comparing layers with SmolLM2).

llama-cpp-python itself has no prebuilt wheel here and builds from source in 5-11 minutes on two
cores: it is installed by the main job (`pip install 'llama-cpp-python[server]==0.3.36'`), never
by tests.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from workbench.fetch import qwen_gguf
from workbench.models import QWEN_CODER

QWEN_ALIAS = QWEN_CODER
LLAMA_CPP_REQUIREMENT = "llama-cpp-python[server]==0.3.36"


class LlamaCppError(RuntimeError):
    """llama.cpp or its model is not available."""


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def gguf_for_server() -> Path:
    """The Qwen GGUF for the local server (`server.py --gguf`); LlamaCppError when llama.cpp is missing."""
    if not llama_cpp_installed():
        raise LlamaCppError(f"llama-cpp-python is not installed: pip install '{LLAMA_CPP_REQUIREMENT}' "
                            "(builds from source, 5-11 min), or use the transformers backend or an endpoint URL")
    return qwen_gguf()
