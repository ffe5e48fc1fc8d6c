"""Pure-torch row-block top-k encoder: bounded memory on any device, no compiler needed.

Used when the C++ extension cannot be built, for dtypes the fast kernels do not take,
and on CUDA when Triton is unavailable or k is too large for the register top-k.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.reference import TopKOutput, activate

# Rows per block are chosen so one block's pre-activations stay near this many bytes.
_BLOCK_BYTES = 32 * 2**20


def topk_encode_blocked(
    xc: Tensor,  # [N, d_in], already x - b_dec
    W_enc: Tensor,  # [d_in, d_sae]
    b_enc: Tensor,  # [d_sae]
    k: int,
    threshold: Tensor | None = None,  # [d_sae]
) -> TopKOutput:
    """Literal encoder applied to row blocks of at most ~32 MiB of pre-activations."""
    n, m = xc.shape[0], W_enc.shape[1]
    rows = max(1, _BLOCK_BYTES // (m * xc.element_size()))
    values = xc.new_empty((n, k))
    indices = torch.empty((n, k), dtype=torch.long, device=xc.device)
    for r0 in range(0, n, rows):
        pre = torch.addmm(b_enc, xc[r0 : r0 + rows], W_enc)  # [rows, d_sae]
        torch.topk(
            activate(pre, threshold), k, dim=-1, sorted=True,
            out=(values[r0 : r0 + rows], indices[r0 : r0 + rows]),
        )
    return TopKOutput(values, indices)
