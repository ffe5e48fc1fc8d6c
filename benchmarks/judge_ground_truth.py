"""Does the detection judge separate text that has a property from text that does not? (#13, item 3)

Features known by construction, on held-out wiki and BBC text: windows of ~30 words that contain
a four-digit year vs windows with no digit; windows in parentheses-bearing text vs none; BBC sport
vs BBC business articles. For each, the judge (the default local explainer model on the embedded
llama.cpp server) sees positive and negative windows with the correct description and with an
unrelated one, asked two ways:
- ours: the detection scorer's prompt (`prompts.DETECTION_USER`, one example per call);
- direct: "Text: ... Does this text mention {description}? Answer Yes or No."
The score is the AUROC of P(yes) (positives vs negatives). A judge worth using gives the correct
description AUROC near 1 and the unrelated one near 0.5.

    .venv/bin/python benchmarks/judge_ground_truth.py [--windows 20]

The last line is `RESULT key=value ...`.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
from collections.abc import Callable

from pipelines.autointerp import prompts
from pipelines.autointerp.scorers.base import separation
from pipelines.autointerp.scorers.classifier import TOP_LOGPROBS, yes_probability
from pipelines.autointerp.serve import LocalServer, ServeConfig
from workbench import corpora
from workbench.llm import LLMClient, LLMConfig

YEAR = re.compile(r"\b(1[5-9]\d\d|20\d\d)\b")


def windows(texts: list[str], words: int = 30) -> list[str]:
    out = []
    for text in texts:
        tokens = text.split()
        out += [" ".join(tokens[i:i + words]) for i in range(0, len(tokens) - words + 1, words)]
    return out


def suite(n: int, seed: int) -> dict[str, tuple[list[str], list[str], str, str]]:
    """feature -> (positive windows, negative windows, correct description, unrelated description)."""
    rng = random.Random(seed)
    wiki = windows(corpora.load_corpus("wiki", "eval")["text"].tolist())
    bbc = corpora.load_corpus("bbc", "eval")

    def pick(pool: list[str], keep: Callable[[str], bool]) -> list[str]:
        chosen = [w for w in pool if keep(w)]
        rng.shuffle(chosen)
        return chosen[:n]

    sport = windows(bbc[bbc["label"] == "sports"]["text"].tolist())
    business = windows(bbc[bbc["label"] == "business"]["text"].tolist())
    return {
        "year": (pick(wiki, lambda w: bool(YEAR.search(w))), pick(wiki, lambda w: not re.search(r"\d", w)),
                 "four-digit years", "cooking recipes"),
        "parentheses": (pick(wiki, lambda w: "(" in w and ")" in w), pick(wiki, lambda w: "(" not in w),
                        "text in parentheses", "football matches"),
        "sport": (pick(sport, lambda w: True), pick(business, lambda w: True),
                  "sport: matches, players and teams", "computer hardware"),
    }


def ask(client: LLMClient, messages: list[dict[str, str]]) -> float:
    p = yes_probability(client.chat_sync(messages, max_tokens=1, temperature=0.0, top_logprobs=TOP_LOGPROBS))
    return 0.5 if p is None else p


def ours(description: str, text: str) -> list[dict[str, str]]:
    return prompts.classifier_messages(prompts.DETECTION_USER, description, text)


def direct(description: str, text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Text: {text}\n\nDoes this text mention {description}? Answer Yes or No."}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=20, help="positive and negative windows per feature")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cases = suite(args.windows, args.seed)
    rows = []
    with LocalServer(ServeConfig(backend="llama-cpp", port=0)) as server:
        client = LLMClient(LLMConfig(base_url=server.url, model=server.model, cache_path=""))
        for feature, (pos, neg, correct, unrelated) in cases.items():
            for kind, description in (("correct", correct), ("unrelated", unrelated)):
                for prompt_name, build in (("ours", ours), ("direct", direct)):
                    probs = [ask(client, build(description, t)) for t in pos + neg]
                    labels = [True] * len(pos) + [False] * len(neg)
                    rows.append((feature, kind, prompt_name, separation(probs, labels),
                                 statistics.mean(probs[:len(pos)]), statistics.mean(probs[len(pos):])))
                    print(f"{feature:<12}{kind:<10}{prompt_name:<8} AUROC {rows[-1][3]:.3f}  "
                          f"P(yes) pos {rows[-1][4]:.3f} neg {rows[-1][5]:.3f}", flush=True)
    print(f"\n{args.windows} positive + {args.windows} negative windows per feature; judge {server.model}")
    print("| feature | description | prompt | AUROC | mean P(yes) positives | negatives |\n|---|---|---|---|---|---|")
    for feature, kind, prompt_name, auc, p_pos, p_neg in rows:
        print(f"| {feature} | {kind} | {prompt_name} | {auc:.3f} | {p_pos:.3f} | {p_neg:.3f} |")

    def mean_auc(kind: str, prompt_name: str) -> float:
        return statistics.mean(r[3] for r in rows if r[1] == kind and r[2] == prompt_name)

    print(f"RESULT direct_correct_auroc={mean_auc('correct', 'direct'):.3f} "
          f"ours_correct_auroc={mean_auc('correct', 'ours'):.3f} "
          f"direct_unrelated_auroc={mean_auc('unrelated', 'direct'):.3f} "
          f"ours_unrelated_auroc={mean_auc('unrelated', 'ours'):.3f} features={len(cases)} windows={args.windows}")


if __name__ == "__main__":
    main()
