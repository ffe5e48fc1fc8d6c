"""Data-parallel SAE training (#21): `workbench train` in one process against the same command under
`torchrun` with 2 processes (gloo, one thread each) on this 2-core machine. Same config, same
activation stream (the shared shard cache, filled first so neither run pays for the model's
forward), separate dictionary ids and a scratch store. Prints the training wall time and tokens/s
of each, their held-out metrics, and how far the two-process dictionary is from the one-process one
beside two controls: one process with 1 thread, and one process fed every batch with its rows in
another order (the same loss in exact arithmetic, summed in another order: the noise floor a
comparison of trained weights has to be read against; in-process, on the same cached rows).

    .venv/bin/python benchmarks/ddp_train.py [--tokens 262144]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from safetensors.torch import load_file  # noqa: E402

import saes  # noqa: E402
from saes.training import TrainConfig, Trainer  # noqa: E402
from workbench.store import Store  # noqa: E402

COMMON = ["train", "--architecture", "topk", "--hook-point", "blocks.12.hook_resid_post", "--corpus", "wiki",
          "--sae.k", "32", "--batch-tokens", "1024", "--eval-tokens", "8192", "--ce-sequences", "8"]


def scratch_data() -> Path:
    """A data folder whose cache links to the real one (models, corpora, activation shards)."""
    folder = Path(tempfile.mkdtemp(prefix="ddp-bench-"))
    (folder / "cache").mkdir()
    for entry in (REPO / "data" / "cache").iterdir():
        (folder / "cache" / entry.name).symlink_to(entry)
    return folder


def train(command: list[str], data: Path, dict_id: str, tokens: int, threads: int) -> None:
    env = {**os.environ, "WORKBENCH_DATA": str(data), "OMP_NUM_THREADS": str(threads)}
    args = [*command, *COMMON, "--tokens", str(tokens), "--dict-id", dict_id]
    with (data / f"{dict_id}.log").open("w") as log:
        subprocess.run(args, cwd=REPO, env=env, check=True, stdout=log, stderr=subprocess.STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=262_144)
    tokens = parser.parse_args().tokens
    data = scratch_data()
    workbench = str(REPO / ".venv" / "bin" / "workbench")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python"]
    train([workbench], data, "ddp-warm", tokens, 2)   # fills the activation cache (and warms the page cache)
    runs = {"ddp-one": ([workbench], 2, "1 process, 2 threads"), "ddp-thread": ([workbench], 1, "1 process, 1 thread"),
            "ddp-two": ([*torchrun, workbench], 1, "torchrun 2 processes x 1")}
    for dict_id, (command, threads, _) in runs.items():
        train(command, data, dict_id, tokens, threads)
    rows = Store(data / "workbench.duckdb").query("SELECT dict_id, path, metrics FROM dictionaries")
    metrics = {r.dict_id: json.loads(r.metrics) for r in rows.itertuples()}
    weights = {r.dict_id: saes.load(r.path).state_dict() for r in rows.itertuples()}
    print(f"{'run':26s} {'train min':>9s} {'tokens/s':>9s} {'fvu':>7s} {'ce_rec':>7s} {'max |dW| vs 1x2':>16s} "
          f"{'min W_dec row cos':>18s}")
    gaps = {}
    for dict_id, (_, _, label) in runs.items():
        m = metrics[dict_id]
        gaps[dict_id], cosine = weight_gap(weights["ddp-one"], weights[dict_id])
        print(f"{label:26s} {m['train_minutes']:9.2f} {tokens / (60 * m['train_minutes']):9.0f} {m['fvu']:7.4f} "
              f"{m['ce_loss_recovered']:7.4f} {gaps[dict_id]:16.2e} {cosine:18.5f}")
    permuted_gap, permuted_cosine = permutation_floor(data, tokens)
    print(f"{'1 process, rows permuted':26s} {'':9s} {'':9s} {'':7s} {'':7s} {permuted_gap:16.2e} "
          f"{permuted_cosine:18.5f}   (in-process, {tokens // 1024} steps)")
    speed = metrics["ddp-one"]["train_minutes"] / metrics["ddp-two"]["train_minutes"]
    fvu_gap = abs(metrics["ddp-one"]["fvu"] - metrics["ddp-two"]["fvu"])
    print(f"RESULT two_vs_one_speed={speed:.3f} two_process_gap={gaps['ddp-two']:.2e} "
          f"one_thread_gap={gaps['ddp-thread']:.2e} permuted_rows_gap={permuted_gap:.2e} fvu_gap={fvu_gap:.2e} "
          f"tokens={tokens}")


def permutation_floor(data: Path, tokens: int) -> tuple[float, float]:
    """Train the same TopK SAE twice in this process on the cached rows `workbench train` used, in
    1,024-row batches, the second time with each batch's rows shuffled; their weight gap."""
    manifests = [m for m in (data / "cache" / "activations").glob("*/manifest.json")
                 if '"blocks.12.hook_resid_post"' in m.read_text() and '"wiki"' in m.read_text()]
    folder = max(manifests, key=lambda m: json.loads(m.read_text())["rows"]).parent
    rows = torch.cat([load_file(f)["acts"] for f in sorted(folder.glob("shard_*.safetensors"))])[:tokens]
    weights = []
    for permute in (False, True):
        gen = torch.Generator().manual_seed(1)
        batches = [b[torch.randperm(len(b), generator=gen)] if permute else b for b in rows.split(1024)]
        sae = saes.create("topk", d_in=rows.shape[1], d_sae=8 * rows.shape[1], k=32, seed=0)
        Trainer(sae, TrainConfig(total_steps=len(batches), lr=3e-3, warmup_steps=50, seed=0,
                                 progress_bar=False)).fit(batches)
        weights.append(sae.state_dict())
    return weight_gap(*weights)


def weight_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Largest absolute difference over all weights, and the smallest cosine between matching decoder rows."""
    gap = max(float((a[name] - b[name]).abs().max()) for name in a)
    return gap, float(torch.nn.functional.cosine_similarity(a["W_dec"], b["W_dec"], dim=1).min())


if __name__ == "__main__":
    main()
