"""Benchmark the fused top-k SAE encoder against torch baselines and the plain GEMM it contains.

Table 1 (encoder, N=4096, d_in=576, d_sae in {16384, 32768, 65536}, k in {32, 64}):
  literal    topk(relu((x - b_dec) @ W_enc + b_enc), k)
  addmm+topk addmm into one [N, d_sae] buffer, relu_ in place, topk
  ours       kernels.topk_encode_raw (C++ kernel on CPU, Triton on CUDA); on a CPU with
             AVX512-BF16 this is the bf16-screened kernel
  ours fp32  (CPU) the C++ kernel without the bf16 screen (WORKBENCH_TOPK_SCREEN=0)
  gemm       (x - b_dec) @ W_enc into a preallocated, pre-touched output: the float32 GEMM
             the encoder contains, the issue's speed ceiling
  gemm bf16  (CPU) the same GEMM on bf16 copies: the ceiling of the screened kernel
Table 2 (training step, d_sae=32768, k=64): forward + MSE + backward, dense autograd through
the [N, d_sae] pre-activations vs kernels' sparse backward with sparse_decode.

Method. Time: median of a few calls after one warm-up. Extra memory on CPU: every variant
runs in a fresh child process of this script, which reports its peak RSS (ru_maxrss) minus
its RSS just before the first call (inputs are built in place, so no earlier transient
hides the variant's peak). On CUDA: in-process CUDA-event timing, and the growth of
torch.cuda.max_memory_allocated over the memory allocated before the call; ours uses the
best of a small Triton block-size sweep, whose winner is printed.

With --sae DIR --activations SHARD, instead: a trained dictionary (saved by `workbench train`)
on N real activation rows from a cache shard (`acts` tensor), in-process timing of literal,
ours fp32 and ours at k in {sae.k, 2 sae.k}; the bf16 screen's work depends on how the scores
are distributed, which random weights only approximate.

Usage: python benchmarks/topk_encoder.py [--device cuda] [--reps N] [--sae DIR --activations SHARD]
Last line: RESULT key=value ... (ratios first; worst case over the shapes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kernels.cpu import SCREEN_ENV  # noqa: E402
from kernels.dispatch import encode_topk_autograd, topk_encode_raw  # noqa: E402
from kernels.sparse import sparse_decode  # noqa: E402

N, D_IN = 4096, 576
SHAPES = [(m, k) for m in (16384, 32768, 65536) for k in (32, 64)]
TRAIN_SHAPE = (32768, 64)
HEADLINE = (32768, 64)
ENCODERS = ("literal", "addmm+topk", "ours", "ours fp32", "gemm", "gemm bf16")
CPU_ONLY = ("ours fp32", "gemm bf16")
STEPS = ("dense step", "sparse step")
TRITON_CONFIGS = [  # (block_m, block_n, num_warps) of the Triton filter
    (8, 256, 4), (4, 256, 4), (4, 512, 4), (16, 256, 4), (8, 128, 4), (2, 512, 4),
]


def make_inputs(m: int, device: str, dtype: torch.dtype, grad: bool = False) -> dict[str, torch.Tensor]:
    """Weights built in place (no transient copies that would raise the RSS baseline)."""
    g = torch.Generator(device=device).manual_seed(0)
    t = {
        "x": torch.randn(N, D_IN, generator=g, device=device, dtype=dtype),
        "W_enc": torch.randn(D_IN, m, generator=g, device=device, dtype=dtype).mul_(D_IN**-0.5),
        "b_enc": torch.randn(m, generator=g, device=device, dtype=dtype).mul_(0.1),
        "b_dec": torch.randn(D_IN, generator=g, device=device, dtype=dtype).mul_(0.1),
    }
    if grad:
        t["W_dec"] = torch.randn(m, D_IN, generator=g, device=device, dtype=dtype).mul_(m**-0.5)
        for v in t.values():
            v.requires_grad_(v is not t["x"])
    return t


def encoder_fn(name: str, t: dict[str, torch.Tensor], k: int, triton_cfg: tuple | None) -> Callable[[], object]:
    x, W, b_enc, b_dec = t["x"], t["W_enc"], t["b_enc"], t["b_dec"]
    if name == "literal":
        return lambda: torch.topk(torch.relu((x - b_dec) @ W + b_enc), k)
    if name == "addmm+topk":
        return lambda: torch.topk(torch.addmm(b_enc, x - b_dec, W).relu_(), k)
    if name == "ours" and triton_cfg is not None:
        from kernels.triton_topk import topk_encode_triton

        bm, bn, warps = triton_cfg
        return lambda: topk_encode_triton(x - b_dec, W, b_enc, k, block_m=bm, block_n=bn, num_warps=warps)
    if name == "ours":
        return lambda: topk_encode_raw(x, W, b_enc, b_dec, k)
    if name == "ours fp32":
        os.environ[SCREEN_ENV] = "0"  # this variant runs in its own child process
        return lambda: topk_encode_raw(x, W, b_enc, b_dec, k)
    dtype = torch.bfloat16 if name == "gemm bf16" else x.dtype
    xc, W = (x - b_dec).to(dtype), W.to(dtype)
    out = torch.zeros(N, W.shape[1], device=x.device, dtype=dtype)  # pre-touched output
    return lambda: torch.mm(xc, W, out=out)


def train_step_fn(name: str, t: dict[str, torch.Tensor], k: int) -> Callable[[], object]:
    x, W_enc, b_enc, W_dec, b_dec = t["x"], t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"]
    params = [W_enc, b_enc, W_dec, b_dec]

    def dense() -> None:
        values, indices = torch.topk(torch.relu(torch.addmm(b_enc, x - b_dec, W_enc)), k)
        latents = torch.zeros(N, W_enc.shape[1], device=x.device, dtype=x.dtype).scatter(1, indices, values)
        F.mse_loss(latents @ W_dec + b_dec, x).backward()

    def sparse() -> None:
        values, indices = encode_topk_autograd(x, W_enc, b_enc, b_dec, k)
        F.mse_loss(sparse_decode(values, indices, W_dec, b_dec), x).backward()

    step = dense if name == "dense step" else sparse

    def run() -> None:
        for p in params:
            p.grad = None
        step()

    return run


def time_calls(fn: Callable[[], object], reps: int, cuda: bool) -> float:
    """Median seconds per call after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(variant: str, m: int, k: int, reps: int) -> None:
    """CPU child process: print {"s": median seconds, "mb": peak RSS growth} as JSON."""
    train = variant in STEPS
    t = make_inputs(m, "cpu", torch.float32, grad=train)
    fn = train_step_fn(variant, t, k) if train else encoder_fn(variant, t, k, None)
    base = current_rss()
    seconds = time_calls(fn, reps, cuda=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"s": seconds, "mb": max(0, peak - base) / 2**20}))


def measure_cpu(variant: str, m: int, k: int, reps: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", variant, str(m), str(k), str(reps)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_cuda(fn: Callable[[], object], reps: int) -> dict[str, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    seconds = time_calls(fn, reps, cuda=True)
    return {"s": seconds, "mb": (torch.cuda.max_memory_allocated() - base) / 2**20}


def best_triton_config(t: dict[str, torch.Tensor], k: int) -> tuple:
    """The fastest of TRITON_CONFIGS at this shape (each compiles once, then is timed)."""
    timed = []
    for cfg in TRITON_CONFIGS:
        try:
            timed.append((time_calls(encoder_fn("ours", t, k, cfg), 5, cuda=True), cfg))
        except Exception as err:  # a config can exceed shared memory or registers: skip it
            print(f"# triton config {cfg} failed: {type(err).__name__}: {str(err)[:120]}", file=sys.stderr)
            continue
        print(f"# sweep d_sae={t['W_enc'].shape[1]} k={k} {cfg}: {1e3 * timed[-1][0]:.3f} ms", file=sys.stderr)
    print(f"# chunked addmm alone d_sae={t['W_enc'].shape[1]}: {1e3 * chunked_gemm_seconds(t):.3f} ms", file=sys.stderr)
    best = min(timed)[1]
    if (t["W_enc"].shape[1], k) == HEADLINE:
        print_cuda_profile(encoder_fn("ours", t, k, best))
    return best


def print_cuda_profile(fn: Callable[[], object]) -> None:
    """Per-kernel CUDA time of one call (where the time goes), to stderr."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="device_time_total", row_limit=12), file=sys.stderr)


def chunked_gemm_seconds(t: dict[str, torch.Tensor]) -> float:
    """The GEMM part of ours on CUDA: addmm of each 64 MiB column chunk into one buffer."""
    from kernels.triton_topk import _chunk_width

    x, W, b_enc, b_dec = t["x"], t["W_enc"], t["b_enc"], t["b_dec"]
    m = W.shape[1]
    width = _chunk_width(N, m, 64, x.element_size())
    buf = torch.empty(N * width, device=x.device, dtype=x.dtype)

    def run() -> None:
        xc = x - b_dec
        for c0 in range(0, m, width):
            cw = min(width, m - c0)
            torch.addmm(b_enc[c0 : c0 + cw], xc, W[:, c0 : c0 + cw], out=buf[: N * cw].view(N, cw))

    return time_calls(run, 5, cuda=True)


def encoder_rows(device: str, reps: int) -> list[dict]:
    rows = []
    for m, k in SHAPES:
        if device == "cuda":
            t = make_inputs(m, device, torch.bfloat16)
            cfg = best_triton_config(t, k)
            variants = [v for v in ENCODERS if v not in CPU_ONLY]
            res = {v: measure_cuda(encoder_fn(v, t, k, cfg if v == "ours" else None), reps) for v in variants}
            res["ours"]["cfg"] = cfg
            del t
        else:
            r = max(2, reps - (m > 32768))
            res = {v: measure_cpu(v, m, k, r) for v in ENCODERS}
        rows.append({"m": m, "k": k, **res})
        print(f"# done m={m} k={k}", file=sys.stderr)
    return rows


def train_rows(device: str, reps: int) -> dict:
    m, k = TRAIN_SHAPE
    if device == "cpu":
        return {v: measure_cpu(v, m, k, 2) for v in STEPS}
    t = make_inputs(m, device, torch.float32, grad=True)
    return {v: measure_cuda(train_step_fn(v, t, k), reps) for v in STEPS}


def describe(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 inputs (steps: fp32)"
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return f"{model}, {torch.get_num_threads()} threads, torch {torch.__version__}, fp32"


def print_encoder_table(rows: list[dict]) -> dict[str, float]:
    """Print table 1; return the worst-case ratios over all shapes."""
    print("| d_sae | k | variant | time ms | extra MB | GFLOP/s | speed vs literal | mem vs literal | % of GEMM rate |")
    print("|---|---|---|---|---|---|---|---|---|")
    worst = {"speedup_vs_literal_min": float("inf"), "mem_frac_of_literal_max": 0.0, "gemm_rate_pct_min": float("inf")}
    for row in rows:
        m, k, lit, gemm = row["m"], row["k"], row["literal"], row["gemm"]
        for v in (v for v in ENCODERS if v in row):
            r = row[v]
            name = f"ours {r['cfg']}" if "cfg" in r else v
            print(f"| {m} | {k} | {name} | {1e3 * r['s']:.1f} | {r['mb']:.0f} | {2 * N * D_IN * m / r['s'] / 1e9:.0f} "
                  f"| {lit['s'] / r['s']:.2f}x | {r['mb'] / max(lit['mb'], 1e-9):.3f} "
                  f"| {100 * gemm['s'] / r['s']:.0f}% |")
        ours = row["ours"]
        worst["speedup_vs_literal_min"] = min(worst["speedup_vs_literal_min"], lit["s"] / ours["s"])
        worst["mem_frac_of_literal_max"] = max(worst["mem_frac_of_literal_max"], ours["mb"] / max(lit["mb"], 1e-9))
        worst["gemm_rate_pct_min"] = min(worst["gemm_rate_pct_min"], 100 * gemm["s"] / ours["s"])
    return worst


def print_train_table(steps: dict) -> float:
    m, k = TRAIN_SHAPE
    dense = steps["dense step"]["s"]
    print(f"\n| training step (N={N}, d_sae={m}, k={k}) | time ms | extra MB | speedup |")
    print("|---|---|---|---|")
    for v in STEPS:
        r = steps[v]
        print(f"| {v} | {1e3 * r['s']:.1f} | {r['mb']:.0f} | {dense / r['s']:.2f}x |")
    return dense / steps["sparse step"]["s"]


def wait_for_quiet_machine(max_load: float, max_wait_s: float) -> None:
    """Other engineers run tests here: don't benchmark while the 1-minute load is high."""
    waited = 0.0
    while os.getloadavg()[0] > max_load and waited < max_wait_s:
        print(f"# load {os.getloadavg()[0]:.2f} > {max_load}: waiting", file=sys.stderr)
        time.sleep(15)
        waited += 15
    print(f"# load at start: {os.getloadavg()[0]:.2f}", file=sys.stderr)


def result_line(worst: dict[str, float], train_speedup: float, rows: list[dict]) -> str:
    head = next(r for r in rows if (r["m"], r["k"]) == HEADLINE)
    figures = {**worst, "train_step_speedup": train_speedup}
    if "cfg" in head["ours"]:
        figures["ours_over_gemm_time_max"] = max(r["ours"]["s"] / r["gemm"]["s"] for r in rows)
    if "ours fp32" in head:
        figures["screen_speedup_vs_fp32_min"] = min(r["ours fp32"]["s"] / r["ours"]["s"] for r in rows)
    for v in (v for v in ENCODERS if v in head):
        key = v.replace("+", "_").replace(" ", "_")
        figures[f"{key}_ms"] = 1e3 * head[v]["s"]
        figures[f"{key}_mb"] = head[v]["mb"]
    figures["gemm_gflops"] = 2 * N * D_IN * HEADLINE[0] / head["gemm"]["s"] / 1e9
    return "RESULT " + " ".join(f"{key}={val:.3g}" for key, val in figures.items())


def trained_sae_table(sae_dir: str, shard: str, reps: int) -> str:
    """Print literal / ours fp32 / ours on a trained dictionary and real activations."""
    from safetensors.torch import load_file

    from saes.storage import load_dictionary

    sae = load_dictionary(sae_dir)
    x = load_file(shard)["acts"][:N].float()  # [N, d_in]
    W, b_enc, b_dec = (p.detach().float() for p in (sae.W_enc, sae.b_enc, sae.b_dec))
    print(f"trained dictionary {sae_dir} (d_sae={W.shape[1]}, k={sae.k}) on {x.shape[0]} rows of {shard}\n")
    print("| k | literal ms | ours fp32 ms | ours ms | ours vs literal | screen vs fp32 |")
    print("|---|---|---|---|---|---|")
    worst = {"trained_speedup_vs_literal_min": float("inf"), "trained_screen_vs_fp32_min": float("inf")}
    for k in (sae.k, 2 * sae.k):
        times = {}
        for name in ("literal", "ours fp32", "ours"):
            os.environ[SCREEN_ENV] = ""  # automatic choice; "ours fp32" sets it to 0 for itself
            fn = encoder_fn(name, {"x": x, "W_enc": W, "b_enc": b_enc, "b_dec": b_dec}, k, None)
            times[name] = time_calls(fn, reps, cuda=False)
        lit, fp32, ours = times["literal"], times["ours fp32"], times["ours"]
        print(f"| {k} | {1e3 * lit:.1f} | {1e3 * fp32:.1f} | {1e3 * ours:.1f} | {lit / ours:.2f}x "
              f"| {fp32 / ours:.2f}x |")
        worst["trained_speedup_vs_literal_min"] = min(worst["trained_speedup_vs_literal_min"], lit / ours)
        worst["trained_screen_vs_fp32_min"] = min(worst["trained_screen_vs_fp32_min"], fp32 / ours)
    return "RESULT " + " ".join(f"{key}={val:.3g}" for key, val in worst.items())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--reps", type=int, default=None, help="timed calls per variant (default 3 CPU, 20 CUDA)")
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--sae", help="a trained dictionary's folder (with --activations)")
    parser.add_argument("--activations", help="an activation cache shard (safetensors with an `acts` tensor)")
    args = parser.parse_args()
    if bool(args.sae) != bool(args.activations):
        parser.error("--sae and --activations go together")
    reps = args.reps or (20 if args.device == "cuda" else 3)
    if args.device == "cpu":
        from kernels.cpu import load_extension

        load_extension()  # compile (once) before anything is timed
        wait_for_quiet_machine(args.max_load, max_wait_s=600)
    if args.sae:
        print(trained_sae_table(args.sae, args.activations, reps))
        return
    print(f"top-k encoder, N={N}, d_in={D_IN}; {describe(args.device)}; median of {reps} after 1 warm-up\n")
    rows = encoder_rows(args.device, reps)
    worst = print_encoder_table(rows)
    train_speedup = print_train_table(train_rows(args.device, reps))
    print(result_line(worst, train_speedup, rows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
