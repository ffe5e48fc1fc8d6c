"""Activation-stream overhead: bare transformers forward to layer L vs our stream to layer L.

Same token batches (real text, 8 x 128), one process, alternating repetitions; medians.
"Bare" is the HF model's decoder run only through layer L (a truncated layer list), returning the
hidden state; "stream" is `workbench.activations.raw_activations` (hook capture, early stop,
padding bookkeeping, flatten to rows); "TransformerLens" is `run_with_hooks(stop_at_layer=L+1)`.

    .venv/bin/python benchmarks/activations.py [--layer 12] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from workbench.activations import StreamConfig, raw_activations
from workbench.models import load_model
from workbench.sources import ActivationSource, token_sequences


def bare_forward(hf, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    layers = hf.model.layers
    hf.model.layers = layers[: layer + 1]
    try:
        return hf.model(input_ids=tokens, use_cache=False).last_hidden_state  # note: includes final norm
    finally:
        hf.model.layers = layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batches", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    loaded = load_model("smollm2-135m-instruct")
    seqs = token_sequences(loaded, ActivationSource(corpus="wiki", context=128), "eval")()
    batches = [torch.stack([next(seqs) for _ in range(8)]) for _ in range(args.batches)]
    hook = f"blocks.{args.layer}.hook_resid_post"
    n_tokens = sum(b.numel() for b in batches)

    def bare() -> None:
        with torch.inference_mode():
            for b in batches:
                bare_forward(loaded.hf, b, args.layer)

    def stream(backend: str) -> None:
        cfg = StreamConfig(hook_point=hook, batch_size=8, drop_first=False, backend=backend)
        for _ in raw_activations(loaded, (s for b in batches for s in b), cfg, progress=False):
            pass

    variants = {"bare transformers": bare, "ours (stream)": lambda: stream("auto"),
                "TransformerLens": lambda: stream("tl")}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(args.reps):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["bare transformers"])
    print(f"SmolLM2-135M to layer {args.layer}, batch 8 x 128, {args.reps} reps (median), 2 threads")
    print(f"{'path':<20}{'tokens/s':>10}{'vs bare':>10}")
    for name, ts in times.items():
        print(f"{name:<20}{n_tokens / statistics.median(ts):>10,.0f}{statistics.median(ts) / base:>10.3f}")
    overhead = statistics.median(times["ours (stream)"]) / base - 1
    tl = statistics.median(times["TransformerLens"]) / base - 1
    print(f"RESULT stream_overhead={overhead:.3f} tl_overhead={tl:.3f} "
          f"bare_tok_s={n_tokens / base:.0f} stream_tok_s={n_tokens / statistics.median(times['ours (stream)']):.0f}")


if __name__ == "__main__":
    main()
