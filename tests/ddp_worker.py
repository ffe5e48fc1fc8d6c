"""Run by `torchrun` from test_distributed.py: train a TopK SAE on seeded synthetic batches (a
sparse code through a random dictionary, plus noise); rank 0 saves the weights to argv[1]."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch
from safetensors.torch import save_file

from saes import distributed
from saes.topk import TopKConfig, TopKSAE
from saes.training import TrainConfig, Trainer

D_IN, D_SAE, ROWS = 32, 128, 64


def batches(steps: int, seed: int = 0) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(256, D_IN, generator=gen)
    for _ in range(steps):
        code = torch.rand(ROWS, 256, generator=gen) * (torch.rand(ROWS, 256, generator=gen) < 0.03)
        yield code @ directions + 0.01 * torch.randn(ROWS, D_IN, generator=gen)


def train(steps: int) -> TopKSAE:
    """The same run in one process or in each rank of a process group; dead latents (after 640
    tokens) make AuxK depend on the firing counts the ranks share."""
    sae = TopKSAE(TopKConfig(d_in=D_IN, d_sae=D_SAE, k=8, seed=0))
    Trainer(sae, TrainConfig(total_steps=steps, lr=3e-3, seed=0, progress_bar=False, dead_after_tokens=640)).fit(
        batches(steps))
    return sae


if __name__ == "__main__":
    distributed.init_from_env()
    trained = train(int(sys.argv[2]))
    if distributed.is_main():
        save_file({name: w.contiguous() for name, w in trained.state_dict().items()}, sys.argv[1])
