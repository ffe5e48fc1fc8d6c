"""ITDA's build time and quality against a TopK SAE at the same L0, layer and tokens (#16).

    .venv/bin/python benchmarks/itda_build.py [--tokens 500000] [--thresholds 0.1,0.15,0.2]

SmolLM2 layer 12 residual, wiki+bbc packed into 128-token blocks, the token rule on, 4,608 latents,
L0 = k = 32: a TopK SAE trained by `workbench train`'s own fit on `--tokens` tokens, and ITDA
dictionaries built on the same stream (it stops reading once it holds 4,608 atoms) at each
relative-loss threshold. Both read activations from the shared cache, so the times are the fits
alone. Quality is the train pipeline's held-out evaluation (FVU on ordinary tokens, CE-loss
recovered). Run in one process, one after the other; the paper's claim is ITDA in ~1% of an SAE's
time with worse reconstruction (our target: at most 5%).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipelines.train import TrainDictionaryConfig, build_dictionary, evaluate, fit_source
from saes.fitting import FitSource, fit
from workbench.models import load_model


def timed_fit(cfg: TrainDictionaryConfig, loaded) -> dict:
    sae = build_dictionary(cfg, loaded)
    with tempfile.TemporaryDirectory() as tmp:
        source = fit_source(cfg, loaded, Path(tmp), progress=False, callbacks=[])
        served = [0]

        def counted():
            for rows in source.rows():
                served[0] += len(rows)
                yield rows

        started = time.perf_counter()
        fit(sae, FitSource(rows=counted, batches=source.batches, trainer=source.trainer, progress=False,
                           stream=source.stream))
        seconds = time.perf_counter() - started
    metrics = evaluate(sae.eval(), loaded, cfg)
    tokens = served[0] if cfg.architecture == "itda" else cfg.tokens
    return {"seconds": seconds, "tokens": tokens, "d_dict": sae.d_sae, "fvu": metrics["fvu"], "l0": metrics["l0"],
            "ce": metrics["ce_loss_recovered"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=500_000)
    parser.add_argument("--thresholds", default="0.1,0.15,0.2")
    parser.add_argument("--l0", type=int, default=32)
    args = parser.parse_args()
    loaded = load_model("smollm2-135m-instruct")
    common = {"hook_point": "blocks.12.hook_resid_post", "corpus": "wiki+bbc", "tokens": args.tokens}
    rows = {"topk": timed_fit(TrainDictionaryConfig(architecture="topk", sae={"k": args.l0}, **common), loaded)}
    for threshold in [float(t) for t in args.thresholds.split(",")]:
        cfg = TrainDictionaryConfig(architecture="itda", sae={"l0": args.l0, "threshold": threshold}, **common)
        rows[f"itda tau={threshold}"] = timed_fit(cfg, loaded)
    base = rows["topk"]["seconds"]
    print(f"{'dictionary':<16} {'fit s':>7} {'vs topk':>8} {'tokens read':>11} {'atoms':>6} {'FVU':>6} {'L0':>5} "
          f"{'CE rec':>7}")
    for name, r in rows.items():
        print(f"{name:<16} {r['seconds']:>7.1f} {r['seconds'] / base:>8.3f} {r['tokens']:>11,} {r['d_dict']:>6} "
              f"{r['fvu']:>6.3f} {r['l0']:>5.1f} {r['ce']:>7.3f}")
    itda = {name.removeprefix("itda tau="): r for name, r in rows.items() if name != "topk"}
    ratios = " ".join(f"time_ratio_tau{t}={r['seconds'] / base:.3f}" for t, r in itda.items())
    fvus = " ".join(f"fvu_tau{t}={r['fvu']:.3f}" for t, r in itda.items())
    print(f"RESULT {ratios} {fvus} topk_fvu={rows['topk']['fvu']:.3f} topk_ce={rows['topk']['ce']:.3f} "
          f"topk_seconds={base:.1f}")

if __name__ == "__main__":
    main()
