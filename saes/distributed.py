"""Data-parallel SAE training on `torch.distributed` (launched by `torchrun`: gloo on the CPU, NCCL
on GPUs).

Every rank reads the same global batches (the same activation stream and mixing-buffer seed) and
trains on its own rows of each: rank r takes rows r, r + W, r + 2W, ... of a batch of W equal
shares. Gradients are averaged across ranks after each backward, and the latent firing counts are
summed, so every rank steps the same optimizer on the gradient of the whole batch and keeps the
same dead-latent mask: the ranks stay identical, and equal to one process up to the order of
floating-point sums. Outside `torchrun` (no process group) every function is the one-process case.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor


def active() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """The rank that writes files and the store (rank 0; the only one outside torchrun)."""
    return rank() == 0


def init_from_env() -> bool:
    """Join the process group `torchrun` describes (WORLD_SIZE, RANK, MASTER_ADDR, ... in the
    environment); True when there is more than one process. NCCL when CUDA is available, else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():   # long timeout: rank 0 may fill the activation cache while the others wait
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=timedelta(hours=6))
    return active()


def local_rows(batch: Tensor) -> Tensor:
    """This rank's rows of a global batch; ValueError unless the batch splits into equal shares
    (a mean over unequal shares would weight rows differently from one process)."""
    size = world_size()
    if batch.shape[0] % size:
        raise ValueError(f"a batch of {batch.shape[0]} rows does not split evenly over {size} processes")
    return batch[rank()::size]


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over ranks (one all-reduce of the flattened gradients)."""
    if not active():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def summed(tensor: Tensor) -> Tensor:
    """`tensor` summed over ranks (a copy; the tensor itself outside a process group)."""
    if not active():
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total


def barrier() -> None:
    if active():
        dist.barrier()
