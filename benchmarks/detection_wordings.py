"""Detection wordings on the known suite, with and without the judge's prior taken out (#13, session 30).

Asks every wording below about every window and explanation of `workbench judge-check`'s known
features (20 + 20 windows, the default judge on the embedded server), and each wording about an
empty text for the prior; prints mean AUROC per explanation kind and balanced accuracy at the
calibrated threshold (in-sample, and fitted on the other features), raw and with the prior taken
out (logit P(yes) - logit prior, as `classifier.shifted`), for each wording and each pair (mean
logit). One process, so a window's saved prompt state serves all its questions.

    .venv/bin/python benchmarks/detection_wordings.py [--wordings mention,contain,anywhere,fit] [--words 24]

Two wordings ask the judge to extract instead (session 32): `find` and `quote` ask for the words,
or None, and read 1 - P(the first token begins "None") as the probability that the text has them.

The last line is `RESULT key=value ...` (held-out balanced accuracy per wording, raw and shifted).
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict
from typing import NamedTuple

from pipelines.autointerp import ground_truth, prompts
from pipelines.autointerp.examples import FeatureData
from pipelines.autointerp.judge_check import JudgeCheckConfig, best_threshold
from pipelines.autointerp.scorers.base import auroc, balanced_accuracy
from pipelines.autointerp.scorers.classifier import logit, yes_probability
from pipelines.autointerp.serve import endpoint
from workbench.llm import LLMClient, LLMConfig, Response, run_sync


def found_probability(reply: Response) -> float | None:
    """1 - P(the reply starts to say "None"): the first token's probability summed over tokens that
    begin the word ("N", "No", "None"; "No" is also how the judge says there is none). When none
    is among the top log-probabilities, half the smallest listed probability stands in for it."""
    if not reply.top_logprobs:
        return None
    top = [(token.strip().lower(), math.exp(lp)) for token, lp in reply.top_logprobs[0].items()]
    none = sum(p for token, p in top if token and "none".startswith(token))
    return 1 - (none or min(p for _, p in top) / 2)


class Wording(NamedTuple):
    template: str
    system: str = prompts.CLASSIFIER_SYSTEM
    read: Callable[[Response], float | None] = yes_probability
    """P(the text has what the explanation describes) from the reply."""


FINDER = "You find things in texts. Reply with the words you find, copied exactly, or with None."
WORDINGS = {
    "mention": Wording(prompts.DETECTION_USER),
    "contain": Wording("Text: {example}\n\nDoes this text contain {explanation}? Answer Yes or No."),
    "anywhere": Wording("Text: {example}\n\nIs there {explanation} anywhere in this text? Answer Yes or No."),
    "fit": Wording("Text: {example}\n\nDescription: {explanation}\nDoes any part of this text fit the "
                   "description? Answer Yes or No."),
    "find": Wording("Text: {example}\n\nFind {explanation} in this text. Reply with the words, or None if there "
                    "are none.", FINDER, found_probability),
    "quote": Wording("Text: {example}\n\nQuote {explanation} from this text, or reply None if it has none.",
                     "You find things in texts. Reply with an exact quote from the text, or with None.",
                     found_probability),
}
PRIOR = -1
"""Window index under which the answer about the empty text is kept."""

Answers = dict[tuple[str, str, str, int], float]


async def ask_all(client: LLMClient, suite: dict[str, tuple[ground_truth.KnownFeature, FeatureData]],
                  wordings: list[str]) -> Answers:
    """(feature, wording, explanation kind, window index or PRIOR) -> P(yes), one window at a time."""
    async def ask(wording: Wording, explanation: str, text: str) -> float:
        system, user = prompts.classifier_messages(wording.template, explanation, text)
        reply = await client.chat([{**system, "content": wording.system}, user], max_tokens=1,
                                  temperature=0.0, top_logprobs=10)
        p = wording.read(reply)
        if p is None:
            raise RuntimeError(f"the judge's reply gives no probability: {reply.text!r}")
        return p

    out: Answers = {}
    for name, (feature, data) in suite.items():
        texts = [(i, e.text) for i, e in enumerate(data.test_active + data.test_inactive)] + [(PRIOR, "")]
        for (i, text), wording, (kind, explanation) in itertools.product(texts, wordings, feature.explanations.items()):
            out[(name, wording, kind, i)] = await ask(WORDINGS[wording], explanation, text)
        print(name, flush=True)
    return out


def report(answers: Answers, suite: dict[str, tuple[ground_truth.KnownFeature, FeatureData]],
           wordings: tuple[str, ...], shift: bool) -> float:
    """Print one line of figures; returns the held-out balanced accuracy."""
    labels = {name: [True] * len(d.test_active) + [False] * len(d.test_inactive) for name, (_, d) in suite.items()}

    def score(name: str, kind: str, i: int) -> float:
        return statistics.mean(logit(answers[(name, w, kind, i)])
                               - (logit(answers[(name, w, kind, PRIOR)]) if shift else 0.0) for w in wordings)

    scores = {(n, kind): [score(n, kind, i) for i in range(len(labels[n]))]
              for n in suite for kind in ground_truth.KINDS}

    def pooled(names: list[str]) -> float:
        return best_threshold([x for n in names for x in scores[(n, "correct")]],
                              [y for n in names for y in labels[n]])[0]

    aurocs = {kind: statistics.mean(auroc([x for x, y in zip(scores[(n, kind)], labels[n]) if y],
                                          [x for x, y in zip(scores[(n, kind)], labels[n]) if not y]) for n in suite)
              for kind in ground_truth.KINDS}
    names = list(suite)
    cut = pooled(names)
    in_sample = balanced_accuracy([y for n in names for y in labels[n]],
                                  [x > cut for n in names for x in scores[(n, "correct")]])
    held = statistics.mean(balanced_accuracy(labels[n], [x > pooled([m for m in names if m != n])
                                                         for x in scores[(n, "correct")]]) for n in names)
    print(f"{'+'.join(wordings):<20} {'shifted' if shift else 'raw':<8} "
          + " ".join(f"{kind} {value:.3f}" for kind, value in aurocs.items())
          + f"  bacc in-sample {in_sample:.3f} held out {held:.3f}")
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordings", default=",".join(WORDINGS), help=f"among {', '.join(WORDINGS)}")
    parser.add_argument("--words", type=int, default=24, help="words per window (the judge check's 24)")
    args = parser.parse_args()
    wordings = args.wordings.split(",")
    unknown = sorted(set(wordings) - set(WORDINGS))
    if unknown:
        raise SystemExit(f"unknown wordings {unknown}; choose from {', '.join(WORDINGS)}")
    suite = ground_truth.suite(20, 0, n_words=args.words)
    cfg = JudgeCheckConfig(progress=False)
    with endpoint(cfg) as (url, model):
        answers = run_sync(ask_all(LLMClient(LLMConfig(**{**asdict(cfg.llm), "base_url": url, "model": model})),
                                   suite, wordings))
    figures = []
    for combo in [c for r in (1, 2) for c in itertools.combinations(wordings, r)]:
        for shift in (False, True):
            held = report(answers, suite, combo, shift)
            if len(combo) == 1:
                figures.append(f"{combo[0]}_{'shifted' if shift else 'raw'}_bacc_held_out={held:.3f}")
    print("RESULT " + " ".join(figures))


if __name__ == "__main__":
    main()
