"""Data-parallel SAE training (#21): `workbench train` in one process against the same command under
`torchrun` with 2 processes (gloo, one thread each) on this 2-core machine. Same config, same
activation stream (the shared shard cache, filled first so neither run pays for the model's
forward), separate dictionary ids and a scratch store. Prints the training wall time and tokens/s
of each, their held-out metrics, and how far the two-process dictionary is from the one-process one
beside how far one process with 1 thread is from it (floating-point sums in another order: the
noise floor the comparison has to be read against).

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

import saes  # noqa: E402
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
    speed = metrics["ddp-one"]["train_minutes"] / metrics["ddp-two"]["train_minutes"]
    fvu_gap = abs(metrics["ddp-one"]["fvu"] - metrics["ddp-two"]["fvu"])
    print(f"RESULT two_vs_one_speed={speed:.3f} two_process_gap={gaps['ddp-two']:.2e} "
          f"one_thread_gap={gaps['ddp-thread']:.2e} fvu_gap={fvu_gap:.2e} tokens={tokens}")


def weight_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Largest absolute difference over all weights, and the smallest cosine between matching decoder rows."""
    gap = max(float((a[name] - b[name]).abs().max()) for name in a)
    return gap, float(torch.nn.functional.cosine_similarity(a["W_dec"], b["W_dec"], dim=1).min())


if __name__ == "__main__":
    main()
