"""Intervention scoring (Delphi paper, App. G; code at commit 38c687a `delphi/counterfactuals/`).

For a few activating examples, the prompt is cut just after the first token where the feature
fires; the model continues it greedily twice: clean, and with the feature steered (its decoder
direction added at the last prompt token and every generated one). The strength is tuned per
feature as Delphi does (`tune_strength`): a binary search over log10 strength so that the mean
KL(p_clean || p_steered) of the next-token distribution at the prompts' last token hits a target.
The score is the mean over prompts of
    log p(z | steered passage) - log p(z | clean passage)
under the scorer model, with the passage framed as `{passage}\n\nThe above passage contains an
amplified amount of "{z}"`: how much better the explanation predicts steered text than clean text.

Departure from Delphi, stated: greedy continuations instead of T=1 samples.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from pipelines.autointerp import prompts
from pipelines.autointerp.examples import FeatureData
from pipelines.autointerp.lm import continuation_logprobs, prompt_ids
from pipelines.autointerp.scorers.base import ScoreContext, ScoreError, Scorer, ScoreResult
from workbench.hooks import steer
from workbench.models import LoadedModel

if TYPE_CHECKING:
    from saes.base import Dictionary


def _prompt_text(tokens: tuple[str, ...], acts: tuple[float, ...]) -> str:
    first = next(i for i, a in enumerate(acts) if a > 0)
    return "".join(tokens[:first + 1])


KL_TOLERANCE = 0.1
"""The search stops at a mean KL within this fraction of the target (Delphi: 10%)."""
LOG10_BOUNDS = (-3.0, 4.0)
"""Range of log10 strength searched (Delphi)."""
FIRST_LOG10 = 2.0
"""First probe of the search (Delphi)."""
MAX_PROBES = 10
"""Steered forward passes per prompt at most (Delphi: 10 iterations)."""


class Passage(NamedTuple):
    """One intervention prompt, its clean and steered continuations, and the example it was cut from."""

    prompt: str
    clean: str
    steered: str
    source: dict
    """`Example.source()`: document and positions of the example."""


class Tuned(NamedTuple):
    """A steering strength, the mean next-token KL(p_clean || p_steered) it gives, and the KL aimed at."""

    strength: float
    """Added to the feature's activation, in the dictionary's activation units."""
    kl: float
    """Mean over prompts of the KL at each prompt's last token (nats)."""
    target_kl: float
    """The KL the search aimed at."""


@torch.inference_mode()
def _continue(loaded: LoadedModel, text: str, n_new: int) -> str:
    ids = prompt_ids(loaded, text)
    out = loaded.model.generate(torch.tensor([ids]), max_new_tokens=n_new, do_sample=False, stop_at_eos=False,
                                verbose=False, use_past_kv_cache=True)
    assert isinstance(out, Tensor)   # token ids in, token ids out
    return loaded.tokenizer.decode(out[0, len(ids):].tolist())


def _next_token_logprobs(loaded: LoadedModel, texts: Sequence[str]) -> list[Tensor]:
    """Float32 log-probabilities `[vocab]` of the token after each text (one forward per text: lengths differ)."""
    return [torch.log_softmax(loaded.model(torch.tensor([prompt_ids(loaded, t)]))[0, -1].float(), dim=-1)
            for t in texts]


def _mean_kl(clean: Sequence[Tensor], steered: Sequence[Tensor]) -> float:
    return sum(float((c.exp() * (c - s)).sum()) for c, s in zip(clean, steered, strict=True)) / len(clean)


@torch.inference_mode()
def tune_strength(loaded: LoadedModel, sae: Dictionary, feature: int, texts: Sequence[str], target_kl: float) -> Tuned:
    """Delphi's search for the strength whose mean next-token KL(p_clean || p_steered) is `target_kl`.

    Bisection over log10 strength in LOG10_BOUNDS, first probe at FIRST_LOG10, at most MAX_PROBES
    probes; stops within KL_TOLERANCE of the target, else keeps the probe closest to it. Steering is
    `steer(..., positions=[-1])`, as during generation.
    """
    if not texts:
        raise ValueError("tune_strength needs at least one prompt")
    clean = _next_token_logprobs(loaded, texts)

    def probe(log10: float) -> Tuned:
        with steer(loaded.model, sae, {feature: 10.0 ** log10}, positions=[-1]):
            return Tuned(10.0 ** log10, _mean_kl(clean, _next_token_logprobs(loaded, texts)), target_kl)

    lo, hi = LOG10_BOUNDS
    log10 = FIRST_LOG10
    best = tuned = probe(log10)
    for _ in range(MAX_PROBES - 1):
        if abs(tuned.kl - target_kl) <= KL_TOLERANCE * target_kl:
            break
        lo, hi = (log10, hi) if tuned.kl < target_kl else (lo, log10)
        log10 = (lo + hi) / 2
        tuned = probe(log10)
        best = min(best, tuned, key=lambda t: abs(t.kl - target_kl))
    return best


class InterventionScorer(Scorer):
    """Score = mean log-prob gain of the explanation on steered vs clean continuations (nats)."""

    name = "intervention"
    prompt_version = prompts.INTERVENTION_VERSION

    def __init__(self) -> None:
        self._steered: dict[int, tuple[Tuned, list[Passage]]] = {}  # feature -> (tuned, passages)

    async def score(self, ctx: ScoreContext, explanation: str, data: FeatureData) -> ScoreResult:
        return await asyncio.to_thread(self._score, ctx, explanation, data)

    def passages(self, ctx: ScoreContext, data: FeatureData) -> tuple[Tuned, list[Passage]]:
        """The tuned strength and each prompt's clean and steered continuations, computed once per
        feature (the control reuses them)."""
        if data.feature not in self._steered:
            model, sae = ctx.subject(), ctx.sae()
            n_prompts, n_new = ctx.options.get("intervention_prompts", 6), ctx.options.get("intervention_tokens", 8)
            sources = [e for e in data.test_active + data.train if e.active][:n_prompts]
            if not sources:
                raise ScoreError("no activating example to build intervention prompts from")
            texts = [_prompt_text(e.tokens, e.acts) for e in sources]
            tuned = tune_strength(model, sae, data.feature, texts, ctx.options.get("intervention_kl", 0.5))
            out = []
            for text, example in zip(texts, sources):
                clean = _continue(model, text, n_new)
                with steer(model.model, sae, {data.feature: tuned.strength}, positions=[-1]):
                    steered = _continue(model, text, n_new)
                out.append(Passage(text, clean, steered, example.source()))
            self._steered[data.feature] = (tuned, out)
        return self._steered[data.feature]

    def _score(self, ctx: ScoreContext, explanation: str, data: FeatureData) -> ScoreResult:
        tuned, passages = self.passages(ctx, data)
        z = prompts.clean_explanation(explanation)
        frame = prompts.INTERVENTION_SUFFIX.format(explanation="")[:-1]  # up to the opening quote
        prefixes = [p.prompt + g + frame for p in passages for g in (p.clean, p.steered)]
        lps = continuation_logprobs(ctx.scorer_model(), prefixes, [z + '"'] * len(prefixes))
        gains = [lps[2 * i + 1] - lps[2 * i] for i in range(len(passages))]
        rows = [{"prompt": p.prompt, "clean": p.clean, "steered": p.steered, **p.source, "gain": g}
                for p, g in zip(passages, gains, strict=True)]
        return ScoreResult(sum(gains) / len(gains), len(gains), {**tuned._asdict(), "examples": rows})
