"""Fused top-k SAE encoder kernels, sparse decode and sparse backward.

`topk_encode(x, sae)` is the entry point; see kernels/dispatch.py for backend choice and
the WORKBENCH_DISABLE_KERNELS=1 kill switch. Nothing here imports saes/, pipelines/ or app/.
"""

from kernels.dispatch import (
    KILL_SWITCH,
    encode_topk_autograd,
    kernels_disabled,
    select_kernel,
    topk_encode,
    topk_encode_raw,
)
from kernels.reference import TopKOutput, activate, topk_encode_reference
from kernels.sparse import sparse_decode

__all__ = [
    "KILL_SWITCH",
    "TopKOutput",
    "activate",
    "encode_topk_autograd",
    "kernels_disabled",
    "select_kernel",
    "sparse_decode",
    "topk_encode",
    "topk_encode_raw",
    "topk_encode_reference",
]
