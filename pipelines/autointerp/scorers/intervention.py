"""Intervention scoring (Delphi paper, App. G; code at commit 38c687a `delphi/counterfactuals/`).

For a few activating examples, the prompt is cut just after the first token where the feature
fires; the model continues it greedily twice: clean, and with the feature steered (its decoder
direction added with strength `steer_scale` x the feature's max activation at the last prompt
token and every generated one). The score is the mean over prompts of
    log p(z | steered passage) - log p(z | clean passage)
under the scorer model, with the passage framed as `{passage}\n\nThe above passage contains an
amplified amount of "{z}"`: how much better the explanation predicts steered text than clean text.

Departures from Delphi, stated: greedy continuations instead of T=1 samples, and a fixed strength
instead of tuning it by binary search to a target KL (cheaper on two cores).
"""

from __future__ import annotations

import asyncio

import torch

from pipelines.autointerp import prompts
from pipelines.autointerp.examples import FeatureData
from pipelines.autointerp.lm import continuation_logprobs
from pipelines.autointerp.scorers.base import ScoreContext, ScoreError, Scorer, ScoreResult
from workbench.hooks import steer
from workbench.models import LoadedModel


def _prompt_text(tokens: tuple[str, ...], acts: tuple[float, ...]) -> str:
    first = next(i for i, a in enumerate(acts) if a > 0)
    return "".join(tokens[:first + 1])


@torch.inference_mode()
def _continue(loaded: LoadedModel, text: str, n_new: int) -> str:
    bos = loaded.tokenizer.bos_token_id
    ids = ([bos] if bos is not None else []) + loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    out = loaded.model.generate(torch.tensor([ids]), max_new_tokens=n_new, do_sample=False, stop_at_eos=False,
                                verbose=False, use_past_kv_cache=True)
    return loaded.tokenizer.decode(out[0, len(ids):].tolist())


class InterventionScorer(Scorer):
    """Score = mean log-prob gain of the explanation on steered vs clean continuations (nats)."""

    name = "intervention"
    prompt_version = prompts.INTERVENTION_VERSION

    def __init__(self) -> None:
        self._passages: dict[int, list[tuple[str, str, str]]] = {}  # feature -> (prompt, clean, steered)

    async def score(self, ctx: ScoreContext, explanation: str, data: FeatureData) -> ScoreResult:
        return await asyncio.to_thread(self._score, ctx, explanation, data)

    def passages(self, ctx: ScoreContext, data: FeatureData) -> list[tuple[str, str, str]]:
        """Clean and steered continuations per prompt, computed once per feature (the control reuses them)."""
        if data.feature not in self._passages:
            model, sae = ctx.subject(), ctx.sae()
            n_prompts, n_new = ctx.options.get("intervention_prompts", 6), ctx.options.get("intervention_tokens", 8)
            strength = ctx.options.get("steer_scale", 4.0) * data.max_act
            sources = [e for e in data.test_active + data.train if e.active][:n_prompts]
            out = []
            for example in sources:
                text = _prompt_text(example.tokens, example.acts)
                clean = _continue(model, text, n_new)
                with steer(model.model, sae, {data.feature: strength}, positions=[-1]):
                    steered = _continue(model, text, n_new)
                out.append((text, clean, steered))
            self._passages[data.feature] = out
        return self._passages[data.feature]

    def _score(self, ctx: ScoreContext, explanation: str, data: FeatureData) -> ScoreResult:
        passages = self.passages(ctx, data)
        if not passages:
            raise ScoreError("no activating example to build intervention prompts from")
        z = prompts.clean_explanation(explanation)
        frame = prompts.INTERVENTION_SUFFIX.format(explanation="")[:-1]  # up to the opening quote
        prefixes = [p + g + frame for p, c, s in passages for g in (c, s)]
        lps = continuation_logprobs(ctx.scorer_model(), prefixes, [z + '"'] * len(prefixes))
        gains = [lps[2 * i + 1] - lps[2 * i] for i in range(len(passages))]
        rows = [{"prompt": p, "clean": c, "steered": s, "gain": g} for (p, c, s), g in zip(passages, gains)]
        return ScoreResult(sum(gains) / len(gains), len(gains), {"examples": rows})
