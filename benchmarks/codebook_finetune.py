"""Finetuning with codebooks vs the plain finetune (issue #17): throughput and held-out loss, one process.

    .venv/bin/python benchmarks/codebook_finetune.py [--steps 150] [--throughput-steps 5] [--loss-arms plain,codebooks]

Both arms start from the same parent, see the same packed BBC train blocks in the same order (those
after the blocks that start the codebooks, as in `workbench codebooks`) and update the whole model
with AdamW at the same learning rate (the `workbench codebooks` defaults: group codebooks of 1,000
codes, k = 8, on the heads of layers 4 and 10). Throughput is timed on `--throughput-steps` steps of
each arm, alternated three times (median tokens/s). The held-out loss on the BBC eval split is
measured after `--steps` steps of each arm in `--loss-arms`: the codebook arm is the same computation
as `workbench codebooks` with its defaults, so once that variant exists `--loss-arms plain` spares
the repeat. Target: the bottleneck costs at most 1.5x.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import statistics

from pipelines.codebooks import CodebooksConfig, build_codebooks, finetune_codebooks, held_out, initialise
from workbench.finetune import corpus_blocks, finetune, held_out_loss
from workbench.models import load_model

ARMS = ("plain", "codebooks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--throughput-steps", type=int, default=5)
    parser.add_argument("--loss-arms", default=",".join(ARMS), help="arms whose held-out loss is measured")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    loss_arms = args.loss_arms.split(",") if args.loss_arms else []
    if set(loss_arms) - set(ARMS):
        parser.error(f"--loss-arms takes {', '.join(ARMS)}, got {args.loss_arms!r}")
    cfg = CodebooksConfig(name="benchmark", model=args.model, progress=False)
    parent = load_model(cfg.model)
    train = corpus_blocks(cfg.corpus, "train", parent.tokenizer, cfg.context)
    init = list(itertools.islice(train, cfg.init_blocks))
    blocks = list(itertools.islice(train, max(args.steps, args.throughput_steps) * cfg.batch))
    eval_blocks = list(itertools.islice(corpus_blocks(cfg.corpus, "eval", parent.tokenizer, cfg.context),
                                        cfg.eval_blocks))

    def plain_arm(steps: int):
        hf = copy.deepcopy(parent.hf)
        result = finetune(hf, list(hf.parameters()), iter(blocks), steps, cfg.batch, cfg.lr, progress=False)
        return hf, result.tokens_per_second

    def codebook_arm(steps: int):
        hf = copy.deepcopy(parent.hf)
        cbs = build_codebooks(cfg, parent)
        initialise(cbs, hf, init, cfg.seed)
        tokens_per_second = finetune_codebooks(dataclasses.replace(cfg, steps=steps), hf, cbs, iter(blocks),
                                               progress=False)
        return hf, cbs, tokens_per_second

    speeds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for round_ in range(3):
        speeds["plain"].append(plain_arm(args.throughput_steps)[1])
        speeds["codebooks"].append(codebook_arm(args.throughput_steps)[2])
        print(f"throughput round {round_ + 1}: plain {speeds['plain'][-1]:.0f}, codebooks "
              f"{speeds['codebooks'][-1]:.0f} tokens/s", flush=True)
    plain, codebook = statistics.median(speeds["plain"]), statistics.median(speeds["codebooks"])

    losses = {"parent": held_out_loss(parent.hf, eval_blocks)}
    used: dict[str, float] = {}
    if "plain" in loss_arms:
        losses["plain"] = held_out_loss(plain_arm(args.steps)[0], eval_blocks)
        print(f"plain finetune: held-out loss {losses['plain']:.3f}", flush=True)
    if "codebooks" in loss_arms:
        cb_hf, cbs, _ = codebook_arm(args.steps)
        losses["codebooks"], used = held_out(cb_hf, cbs, eval_blocks)
    tokens = args.steps * cfg.batch * cfg.context
    print(f"\n| arm | tokens/s (median of 3 x {args.throughput_steps} steps) | held-out loss after {args.steps} steps "
          f"({tokens:,} tokens) |")
    print("|---|---|---|")
    print(f"| parent (no finetune) | - | {losses['parent']:.3f} |")
    print(f"| plain finetune | {plain:.0f} | {losses.get('plain', float('nan')):.3f} |")
    print(f"| codebook finetune ({', '.join(cfg.hook_points)}; {cfg.codes} codes, k={cfg.k}) | {codebook:.0f} | "
          f"{losses.get('codebooks', float('nan')):.3f} |")
    if used:
        print("codes used on held-out text: " + ", ".join(f"{hp} {share:.0%}" for hp, share in used.items()))
    print(f"RESULT slowdown={plain / codebook:.3f} plain_tokens_per_s={plain:.0f} codebook_tokens_per_s={codebook:.0f} "
          + " ".join(f"loss_{arm}={value:.3f}" for arm, value in losses.items()))


if __name__ == "__main__":
    main()
