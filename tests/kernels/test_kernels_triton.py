"""Triton encoder: CPU interpreter (subprocess, so TRITON_INTERPRET precedes the triton import) and CUDA."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

CASES_SCRIPT = Path(__file__).with_name("triton_cases.py")
REPO = Path(__file__).resolve().parents[2]


def _run(code_or_script: list[str], interpret: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, *code_or_script], env=env, capture_output=True, text=True, timeout=120)


def test_interpreter_matches_reference() -> None:
    proc = _run([str(CASES_SCRIPT), "--device", "cpu"], interpret=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_imports_without_gpu() -> None:
    proc = _run(["-c", "import kernels.triton_topk, kernels.dispatch as d; print(d.topk_encode_triton is not None)"],
                interpret=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_reference() -> None:
    proc = _run([str(CASES_SCRIPT), "--device", "cuda"], interpret=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
