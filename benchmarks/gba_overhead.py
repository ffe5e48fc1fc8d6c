"""What GBA's bias-adaptation callback costs per training step, against a TopK step (#15 target:
at most 10%).

    .venv/bin/python benchmarks/gba_overhead.py [--steps 40]

At SmolLM2's width (d_in 576, 4,608 latents, 1,024 rows a step): the median time of a TopK
`Trainer.step`, of a ReLU step (GBA's base), and of the callback's `on_step` on that ReLU step's
code (firing counts and peaks every step, the bias update every `update_every` steps), all in one
process, interleaved step by step so drift hits them alike. Two states of the ReLU dictionary:
at the start (zero biases: half the latents fire, the code is dense, for the first few dozen
steps) and at GBA's fixed point (each bias set so its latent fires at its group's target
frequency on a calibration batch, as in the rest of a run).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import saes
from saes.bias_adaptation import GBAConfig, GroupBiasAdaptation
from saes.training import TrainConfig, Trainer


def at_targets(sae: saes.SAE, cfg: GBAConfig, calibration: torch.Tensor) -> None:
    """Set each encoder bias so its latent fires at its group's target frequency on `calibration`."""
    with torch.no_grad():
        pre = sae.pre_acts(calibration)
        target = cfg.target_frequencies(sae.d_sae)
        threshold = torch.stack([pre[:, j].quantile(1 - float(target[j])) for j in range(sae.d_sae)])
        sae.b_enc -= threshold


def time_steps(state: str, steps: int, batches: list[torch.Tensor]) -> dict[str, float]:
    """Median ms of a TopK step, a ReLU step and the GBA callback, the ReLU dictionary in `state`."""
    run = TrainConfig(total_steps=10 ** 6, progress_bar=False)
    topk = Trainer(saes.create("topk", d_in=576, d_sae=4608, k=32), run)
    relu_sae = saes.create("relu", d_in=576, d_sae=4608, l1_coefficient=0.0)
    cfg = GBAConfig()
    gba = GroupBiasAdaptation(cfg, relu_sae)
    if state == "at targets":
        at_targets(relu_sae, cfg, batches[0])
    relu = Trainer(relu_sae, run)
    times: dict[str, list[float]] = {"topk step": [], "relu step": [], "gba callback": [], "relu L0": []}
    for step in range(1, steps + 1):
        x = batches[step % len(batches)]
        started = time.perf_counter()
        topk.step(x)
        times["topk step"].append(time.perf_counter() - started)
        started = time.perf_counter()
        out = relu.step(x)
        times["relu step"].append(time.perf_counter() - started)
        started = time.perf_counter()
        gba.on_step(step, relu_sae, x, out.code)
        times["gba callback"].append(time.perf_counter() - started)
        times["relu L0"].append(float((out.code.values > 0).sum(-1).float().mean()) / 1000)
    return {name: statistics.median(t) * 1000 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(1024, 576, generator=gen) for _ in range(8)]
    print("| ReLU dictionary | ReLU L0 | TopK step ms | ReLU step ms | GBA callback ms | callback / TopK step |")
    print("|---|---|---|---|---|---|")
    ratios = {}
    for state in ("at targets", "start"):
        m = time_steps(state, args.steps, batches)
        ratios[state] = m["gba callback"] / m["topk step"]
        print(f"| {state} | {m['relu L0']:.0f} | {m['topk step']:.1f} | {m['relu step']:.1f} | "
              f"{m['gba callback']:.2f} | {ratios[state]:.1%} |")
    print(f"RESULT callback_vs_topk_step={ratios['at targets']:.4f} "
          f"callback_vs_topk_step_at_start={ratios['start']:.4f} steps={args.steps}")


if __name__ == "__main__":
    main()
