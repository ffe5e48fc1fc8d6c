"""Training throughput: our TopK trainer vs SAELens's SAETrainer on the same activations.

Both get the identical list of real activation batches (SmolLM2 layer-12 residual from the collect
cache; held in memory so I/O is excluded), the same TopK config, learning rate and step count,
in one process. Reports tokens/s and final FVU on held-out rows.

    .venv/bin/python benchmarks/train.py [--steps 60] [--d-sae 4608] [--k 32] [--batch 4096]
"""

from __future__ import annotations

import argparse
import time

import torch
from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import SAETrainerConfig

import saes
from saes.training import TrainConfig, Trainer
from workbench import metrics
from workbench.models import load_model
from workbench.sources import ActivationSource, activation_rows


def real_activations(n_rows: int) -> torch.Tensor:
    """The first rows of the cached SmolLM2 layer-12 activations over wiki+bbc (collects if absent)."""
    source = ActivationSource(model="smollm2-135m-instruct", hook_point="blocks.12.hook_resid_post",
                              corpus="wiki+bbc", context=128)
    stream = activation_rows(load_model(source.model), source, "train", n_rows, batch_size=8, progress=False)
    rows = torch.cat([r.acts for r in stream])
    return rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))]


def run_ours(batches: list[torch.Tensor], d_sae: int, k: int, lr: float) -> tuple[float, object]:
    sae = saes.create("topk", d_in=batches[0].shape[1], d_sae=d_sae, k=k)
    trainer = Trainer(sae, TrainConfig(total_steps=len(batches), lr=lr, lr_decay="constant", progress_bar=False))
    start = time.perf_counter()
    trainer.fit(batches)
    return time.perf_counter() - start, lambda x: sae(x)[0]


def run_saelens(batches: list[torch.Tensor], d_sae: int, k: int, lr: float) -> tuple[float, object]:
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=batches[0].shape[1], d_sae=d_sae, k=k, device="cpu"))
    cfg = SAETrainerConfig(total_training_samples=len(batches) * len(batches[0]),
                           train_batch_size_samples=len(batches[0]), lr=lr, lr_end=lr, device="cpu")
    trainer = SAETrainer(cfg, sae, iter(batches))
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start, lambda x: sae.decode(sae.encode(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--d-sae", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = real_activations(args.steps * args.batch + 16_384)
    batches, held_out = list(data[: args.steps * args.batch].split(args.batch)), data[-16_384:]
    results = {}
    for name, fn in (("saelens", run_saelens), ("ours", run_ours)):
        torch.manual_seed(0)
        seconds, reconstruct = fn(batches, args.d_sae, args.k, args.lr)
        with torch.no_grad():
            fvu = float(metrics.fvu(held_out, reconstruct(held_out)))
        results[name] = (args.steps * args.batch / seconds, fvu, seconds)
    print(f"TopK SAE d_in=576 d_sae={args.d_sae} k={args.k}, {args.steps} steps x {args.batch} tokens, "
          f"SmolLM2 layer 12 residual, 2 threads")
    print(f"{'trainer':<10}{'tokens/s':>12}{'seconds':>10}{'held-out FVU':>15}")
    for name, (tps, fvu, sec) in results.items():
        print(f"{name:<10}{tps:>12,.0f}{sec:>10.1f}{fvu:>15.4f}")
    ratio = results["ours"][0] / results["saelens"][0]
    print(f"RESULT speedup={ratio:.2f} ours_tok_s={results['ours'][0]:.0f} saelens_tok_s={results['saelens'][0]:.0f} "
          f"ours_fvu={results['ours'][1]:.4f} saelens_fvu={results['saelens'][1]:.4f}")


if __name__ == "__main__":
    main()
