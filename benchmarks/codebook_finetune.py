"""Finetuning with codebooks vs the plain finetune (issue #17): throughput and held-out loss, one process.

    .venv/bin/python benchmarks/codebook_finetune.py [--steps 150] [--throughput-steps 10]

Both arms start from the same parent, see the same packed BBC train blocks in the same order and
update the whole model with AdamW at the same learning rate (the `workbench codebooks` defaults:
group codebooks of 1,000 codes, k = 8, on the heads of layers 4 and 10). Throughput is timed on
`--throughput-steps` steps of each arm, alternated three times (median tokens/s); the held-out loss
is measured after `--steps` steps on the BBC eval split. Target: the bottleneck costs at most 1.5x.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics

from pipelines.codebooks import CodebooksConfig, build_codebooks, finetune_with_codebooks, held_out, initialise
from workbench.finetune import corpus_blocks, finetune, held_out_loss
from workbench.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--throughput-steps", type=int, default=10)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    cfg = CodebooksConfig(name="benchmark", model=args.model, steps=args.throughput_steps, progress=False)
    parent = load_model(cfg.model)
    blocks = list(itertools.islice(corpus_blocks(cfg.corpus, "train", parent.tokenizer, cfg.context),
                                   cfg.steps * cfg.batch + cfg.init_blocks))
    eval_blocks = list(itertools.islice(corpus_blocks(cfg.corpus, "eval", parent.tokenizer, cfg.context),
                                        cfg.eval_blocks))

    def plain_arm(steps: int):
        hf = copy.deepcopy(parent.hf)
        result = finetune(hf, list(hf.parameters()), iter(blocks), steps, cfg.batch, cfg.lr, progress=False)
        return hf, result.tokens_per_second

    def codebook_arm(steps: int):
        hf = copy.deepcopy(parent.hf)
        cbs = build_codebooks(cfg, parent)
        initialise(cbs, hf, blocks[: cfg.init_blocks], cfg.seed)
        tokens_per_second = finetune_with_codebooks(CodebooksConfig(**{**vars(cfg), "steps": steps}), hf, cbs,
                                                    iter(blocks), progress=False)
        return hf, cbs, tokens_per_second

    speeds: dict[str, list[float]] = {"plain": [], "codebooks": []}
    for _ in range(3):
        speeds["plain"].append(plain_arm(args.throughput_steps)[1])
        speeds["codebooks"].append(codebook_arm(args.throughput_steps)[2])
    plain, codebook = statistics.median(speeds["plain"]), statistics.median(speeds["codebooks"])

    before = held_out_loss(parent.hf, eval_blocks)
    plain_hf, _ = plain_arm(args.steps)
    plain_after = held_out_loss(plain_hf, eval_blocks)
    del plain_hf
    cb_hf, cbs, _ = codebook_arm(args.steps)
    cb_after, used = held_out(cb_hf, cbs, eval_blocks)
    tokens = args.steps * cfg.batch * cfg.context
    print(f"| arm | tokens/s (median of 3 x {args.throughput_steps} steps) | held-out loss after {args.steps} steps "
          f"({tokens:,} tokens) |")
    print("|---|---|---|")
    print(f"| parent (no finetune) | - | {before:.3f} |")
    print(f"| plain finetune | {plain:.0f} | {plain_after:.3f} |")
    print(f"| codebook finetune ({', '.join(cfg.hook_points)}; {cfg.codes} codes, k={cfg.k}) | {codebook:.0f} | "
          f"{cb_after:.3f} |")
    print("codes used on held-out text: " + ", ".join(f"{hp} {share:.0%}" for hp, share in used.items()))
    print(f"RESULT slowdown={plain / codebook:.3f} plain_tokens_per_s={plain:.0f} codebook_tokens_per_s={codebook:.0f} "
          f"loss_parent={before:.3f} loss_plain={plain_after:.3f} loss_codebooks={cb_after:.3f}")


if __name__ == "__main__":
    main()
