"""What SAUCE-style clamping adds to generation time (#19 target: at most 10%).

    .venv/bin/python benchmarks/unlearn_overhead.py --dict-id DICT_ID [--reps 7]

SmolLM2-135M-Instruct greedy generation (TransformerLens `generate`, KV cache) of `--new-tokens`
tokens for a batch of `--batch` prompts of 16 tokens, plain and with `hooks.clamp_active` on
`--features` features of the dictionary (its hook encodes every position of every forward call,
prefill and each cached step), timed alternately in one process; medians of `--reps` runs each. The
clamped features are the first of the dictionary (which ones does not change the cost).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from workbench.generation import greedy_continuations
from workbench.hooks import clamp_active
from workbench.registered import load_registered
from workbench.store import Store
from workbench.token_rule import TokenRule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dict-id", required=True)
    parser.add_argument("--store", default=None)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--features", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(2)
    reg = load_registered(Store(args.store) if args.store else Store(), args.dict_id)
    prompts = torch.randint(1000, 30_000, (args.batch, 16), generator=torch.Generator().manual_seed(0))
    prompts[:, 0] = reg.model.tokenizer.bos_token_id
    values = dict.fromkeys(range(args.features), 0.0)
    ratio = TokenRule().max_norm_ratio
    greedy_continuations(reg.model, prompts, 4)                       # warm-up
    times: dict[str, list[float]] = {"plain": [], "clamped": []}
    for _ in range(args.reps):
        for name in times:
            started = time.perf_counter()
            if name == "plain":
                greedy_continuations(reg.model, prompts, args.new_tokens)
            else:
                with clamp_active(reg.model.model, reg.dictionary, values, ratio):
                    greedy_continuations(reg.model, prompts, args.new_tokens)
            times[name].append(time.perf_counter() - started)
    plain, clamped = (statistics.median(times[n]) for n in ("plain", "clamped"))
    print(f"| generation ({args.batch} prompts x {args.new_tokens} new tokens) | median s | vs plain |")
    print("|---|---|---|")
    print(f"| plain | {plain:.2f} | 1.00 |")
    label = f"clamped ({args.features} features, d_sae {reg.dictionary.d_sae})"
    print(f"| {label} | {clamped:.2f} | {clamped / plain:.3f} |")
    print(f"RESULT clamped_vs_plain={clamped / plain:.4f} plain_s={plain:.3f} clamped_s={clamped:.3f} "
          f"reps={args.reps}")


if __name__ == "__main__":
    main()
