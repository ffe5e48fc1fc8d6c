"""What the sparse-model probes add to a forward pass (target: <= 10%).

SmolLM2-135M on 8 x 128 tokens of BBC news: the plain forward beside the same forward with the
activation-sparsity probe (3 thresholds), the core-neuron probe (top 20% per token), both, on all
30 MLPs, and beside the usual way of getting the same figures with TransformerLens (cache every
`mlp.hook_post`, then measure). The routing probe on the project's tiny MoE (64 x 128 tokens),
beside its plain forward. Conditions are interleaved within each repeat; medians of `REPEATS`.

    .venv/bin/python benchmarks/probes_overhead.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench import probes  # noqa: E402
from workbench.corpora import document_texts, load_corpus  # noqa: E402
from workbench.models import load_model  # noqa: E402
from workbench.moe import MoEConfig, build_moe  # noqa: E402

REPEATS = 7
THRESHOLDS = [0.01, 0.05, 0.1]


def tokens(tokenizer, batch: int, length: int) -> torch.Tensor:
    texts = document_texts(load_corpus("bbc"))
    rows = [ids[:length] for ids in (tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts)
            if len(ids) >= length]
    return torch.tensor(rows[:batch])


def cached_then_measured(model, batch: torch.Tensor, layers: list[int]) -> None:
    """The usual TransformerLens way: cache the activations, compute the same figures afterwards."""
    names = {probes.mlp_hook(layer) for layer in layers}
    _, cache = model.run_with_cache(batch, names_filter=lambda name: name in names)
    profile = probes.SparsityProfile(THRESHOLDS)
    cores = probes.CoreCounts(0.2, 1, batch.shape[1] // 2)
    for layer in layers:
        acts = cache[probes.mlp_hook(layer)]
        profile.add(layer, acts[:, 1:])
        cores.add(layer, acts)


def probed(model, batch: torch.Tensor, *probe_contexts: Callable[[], AbstractContextManager]) -> Callable[[], None]:
    """A forward of `batch` inside the given probes."""
    def forward() -> None:
        with ExitStack() as stack:
            for context in probe_contexts:
                stack.enter_context(context())
            model(batch, return_type=None)
    return forward


def timed(forward: Callable[[], None]) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        forward()
    return time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(2)
    loaded = load_model("smollm2-135m-instruct")
    model = loaded.model
    layers = list(range(loaded.n_layers))
    batch = tokens(loaded.tokenizer, 8, 128)
    split = batch.shape[1] // 2

    sparsity = partial(probes.activation_sparsity, model, layers, THRESHOLDS)
    core = partial(probes.core_neurons, model, layers, 0.2, split)
    conditions = {"plain forward": probed(model, batch), "sparsity probe": probed(model, batch, sparsity),
                  "core-neuron probe": probed(model, batch, core), "both probes": probed(model, batch, sparsity, core),
                  "cache + measure (TransformerLens)": lambda: cached_then_measured(model, batch, layers)}
    with tempfile.TemporaryDirectory() as tmp:
        moe_model, tok = build_moe(MoEConfig(experts=8, top_k=2), 0.01)
        moe_model.save_pretrained(Path(tmp) / "moe")
        tok.save_pretrained(Path(tmp) / "moe")
        moe = load_model(str(Path(tmp) / "moe")).model
    moe_batch = torch.randint(4, 1000, (64, 128), generator=torch.Generator().manual_seed(0))
    conditions["tiny MoE forward"] = probed(moe, moe_batch)
    conditions["tiny MoE + routing probe"] = probed(moe, moe_batch, partial(probes.expert_routing, moe))
    for forward in conditions.values():   # warm-up
        timed(forward)
    times: dict[str, list[float]] = {name: [] for name in conditions}
    for _ in range(REPEATS):
        for name, forward in conditions.items():
            times[name].append(timed(forward))
    medians = {name: statistics.median(t) for name, t in times.items()}
    base, moe_base = medians["plain forward"], medians["tiny MoE forward"]
    print(f"{'condition':36s} {'median s':>9s} {'vs plain':>9s}")
    for name, median in medians.items():
        reference = moe_base if "MoE" in name else base
        print(f"{name:36s} {median:9.3f} {median / reference:9.3f}")
    ratio = {name: medians[name] / base for name in ("sparsity probe", "core-neuron probe", "both probes",
                                                     "cache + measure (TransformerLens)")}
    print(f"RESULT both_overhead={ratio['both probes'] - 1:.3f} sparsity_overhead={ratio['sparsity probe'] - 1:.3f} "
          f"core_overhead={ratio['core-neuron probe'] - 1:.3f} "
          f"routing_overhead={medians['tiny MoE + routing probe'] / moe_base - 1:.3f} "
          f"cache_measure_overhead={ratio['cache + measure (TransformerLens)'] - 1:.3f} plain_s={base:.3f}")


if __name__ == "__main__":
    main()
