"""`workbench interpret`: explain features, score the explanations (and shuffled controls), publish per feature.

Two phases so that the control can use other features' explanations: first every pending feature
is explained (requests in flight up to `llm.max_in_flight`, each published as soon as it is done),
then each feature is scored by every scorer on its own explanation and on the explanation of the
next explained feature (a cyclic shift: a derangement, so never its own). Failures are recorded
per feature (`runs.status = 'failed'`, `runs.error`, and a scores row with `details.error`), and
the run goes on; a rerun redoes exactly the unfinished features (see storage.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from functools import cache
from typing import NamedTuple

import pandas as pd
from tqdm.auto import tqdm

from pipelines.autointerp import specificity, storage
from pipelines.autointerp.config import InterpretConfig
from pipelines.autointerp.examples import FeatureData, feature_pass_docs, inactive_examples, split_examples
from pipelines.autointerp.explainer import DelphiExplainer, ExplainError
from pipelines.autointerp.judge_check import calibrated_thresholds
from pipelines.autointerp.scorers import SCORERS, ScoreContext, ScoreError, ScoreResult
from pipelines.autointerp.serve import endpoint
from workbench import queries
from workbench.llm import LLMClient, LLMError, Usage, run_sync
from workbench.models import load_model
from workbench.registered import load_dictionary
from workbench.store import Store

RECOVERABLE = (LLMError, ExplainError, ScoreError)


class Stage(NamedTuple):
    """What one stage (`explaining`, `scoring`) took."""

    seconds: float
    """Wall clock (calls in flight together overlap here, not in `usage.seconds`)."""
    usage: Usage
    """The LLM calls made during the stage."""


def check_inputs(cfg: InterpretConfig, store: Store) -> dict:
    """Raise ValueError for an unknown dictionary, out-of-range features or a missing feature pass."""
    try:
        row = queries.dictionary_row(store, cfg.dict_id)
    except LookupError as err:
        raise ValueError(f"unknown dictionary {cfg.dict_id!r}") from err
    bad = [f for f in cfg.feature_ids if f >= int(row["d_dict"])]
    if bad:
        raise ValueError(f"features {bad[:10]} out of range: {cfg.dict_id} has features 0..{int(row['d_dict']) - 1}")
    n = store.query("SELECT count(*) AS n FROM feature_examples WHERE dict_id = ?", [cfg.dict_id])["n"].iloc[0]
    if n == 0:
        raise ValueError(f"dictionary {cfg.dict_id!r} has no feature pass yet: run `workbench features "
                         f"--dict-id {cfg.dict_id}` first")
    return row


class Job:
    """One interpret run over the features still to do."""

    def __init__(self, cfg: InterpretConfig, store: Store, row: dict, client: LLMClient, base: str):
        self.cfg, self.store, self.client, self.base = cfg, store, client, base
        self.explainer = DelphiExplainer(prefill=cfg.prefill)
        self.scorers = {name: SCORERS[name]() for name in cfg.scorers}
        self.failures: dict[int, str] = {}
        self.skipped: dict[int, str] = {}
        self.stages: dict[str, Stage] = {}
        """What the `explaining` and `scoring` stages took."""
        subject = cache(lambda: load_model(row["model"], store=store))
        scorer_model = cache(lambda: load_model(cfg.scorer_model, store=store) if cfg.scorer_model else subject())
        sae = cache(lambda: load_dictionary(row))
        self.ctx = ScoreContext(client, subject, scorer_model, sae, options={
            "intervention_prompts": cfg.intervention_prompts, "intervention_tokens": cfg.intervention_tokens,
            "intervention_kl": cfg.intervention_kl}, thresholds=calibrated_thresholds(store, client.cfg.model,
                                                                                     cfg.scorers))

    def load_data(self, features: list[int]) -> dict[int, FeatureData]:
        """Split examples per feature; add verified non-activating windows (one forward pass for all)."""
        data: dict[int, FeatureData] = {}
        for f in features:
            df = queries.feature_examples(self.store, self.cfg.dict_id, f)
            split = split_examples(df, f, self.cfg.n_train, self.cfg.n_test, self.cfg.n_top_train, self.cfg.seed,
                                   self.cfg.n_test_top)
            if not split.train or not split.test_active:  # nothing to explain, or nothing to test on
                self.skipped[f] = f"{len(split.train) + len(split.test_active)} distinct activating examples"
                continue
            data[f] = split
        if data:
            docs = feature_pass_docs(self.store, self.cfg.dict_id)
            lengths = {f: [len(e.tokens) for e in d.test_active] for f, d in data.items()}
            negatives = inactive_examples(self.ctx.subject(), self.ctx.sae(), docs, lengths, self.cfg.n_inactive,
                                          self.cfg.seed)
            for f, d in data.items():
                d.test_inactive = negatives[f]
        return data

    async def explain(self, f: int, data: FeatureData) -> None:
        run_id = storage.feature_run_id(self.base, f)
        self.store.begin_run(run_id, "interpret-feature", {"parent": self.base, "feature": f})
        try:
            expl = await self.explainer.explain(self.client, data)
        except RECOVERABLE as err:
            self.failures[f] = f"explainer: {err}"
            self.store.fail_run(run_id, self.failures[f])
            return
        explainer = f"{self.explainer.name}/{self.client.cfg.model}"
        frame = storage.explanation_frame(self.base, self.cfg.dict_id, f, explainer, self.explainer.prompt_version,
                                          expl)
        self.store.publish(run_id, {"explanations": frame}, finish=False)

    async def _one(self, name: str, text: str, data: FeatureData, extra: dict) -> ScoreResult:
        scorer = self.scorers[name]
        try:
            result = await scorer.score(self.ctx, text, data)
        except RECOVERABLE as err:
            result = ScoreResult(None, 0, {"error": f"{type(err).__name__}: {err}"})
        return result._replace(details={**result.details, "prompt_version": scorer.prompt_version, **extra})

    async def score(self, f: int, data: FeatureData, text: str, control: tuple[int, str] | None) -> None:
        """All scorers on the real explanation (and the control): the LLM scorers' requests concurrently,
        then the local scorers in turn (run alongside a local server they would compete for its cores)."""
        jobs: list[tuple[str, str, str, dict]] = [(name, name, text, {}) for name in self.scorers]
        if control is not None:
            jobs += [(f"{name}:shuffled", name, control[1], {"control": "shuffled", "explanation": control[1],
                                                             "source_feature": control[0]}) for name in self.scorers]
        llm = [j for j in jobs if self.scorers[j[1]].uses_llm]
        local = [j for j in jobs if not self.scorers[j[1]].uses_llm]
        llm_results = await asyncio.gather(*(self._one(name, t, data, extra) for _, name, t, extra in llm))
        local_results = [await self._one(name, t, data, extra) for _, name, t, extra in local]
        results = dict(zip([j[0] for j in llm + local], [*llm_results, *local_results]))
        run_id = storage.feature_run_id(self.base, f)
        self.store.publish(run_id, {"scores": storage.scores_frame(run_id, results)}, finish=False)
        failed = {k: r.details["error"] for k, r in results.items() if r.score is None}
        if failed:
            self.failures[f] = "; ".join(f"{k}: {v}" for k, v in failed.items())[:1500]
            self.store.fail_run(run_id, self.failures[f])
        else:
            self.store.publish(run_id, {}, finish=True)

    def _bar(self, desc: str, total: int) -> tqdm:
        return tqdm(total=total, unit="feature", desc=desc, disable=not self.cfg.progress)

    def _tick(self, bar: tqdm, start: float) -> None:
        """Advance a bar and show features/min and LLM tokens spent so far."""
        bar.update(1)
        usage = self.client.usage
        bar.set_postfix(feat_per_min=f"{bar.n / max(time.perf_counter() - start, 1e-9) * 60:.1f}",
                        tokens=usage.tokens_in + usage.tokens_out)

    async def run(self, todo: list[int]) -> None:
        try:
            await self._explain_then_score(todo)
        finally:
            await self.client.aclose()

    async def _explain_then_score(self, todo: list[int]) -> None:
        data = self.load_data(todo)
        have = set(storage.stored_explanations(self.store, self.base)["feature"].astype(int))
        pending = [(f, d) for f, d in data.items() if f not in have]
        start, used, bar = time.perf_counter(), self.client.usage, self._bar("explaining", len(pending))

        async def explain_one(f: int, d: FeatureData) -> None:
            await self.explain(f, d)
            self._tick(bar, start)

        await asyncio.gather(*(explain_one(f, d) for f, d in pending))
        bar.close()
        self._end_stage("explaining", start, used)
        explained = storage.stored_explanations(self.store, self.base)
        texts = dict(zip(explained["feature"].astype(int), explained["text"]))
        order = sorted(texts)
        start, used, bar = time.perf_counter(), self.client.usage, self._bar("scoring", len(data))
        for f, d in data.items():
            if f in texts:
                nxt = order[(order.index(f) + 1) % len(order)]
                control = (nxt, texts[nxt]) if self.cfg.controls and nxt != f else None
                await self.score(f, d, texts[f], control)
            self._tick(bar, start)
        bar.close()
        self._end_stage("scoring", start, used)

    def _end_stage(self, name: str, start: float, used: Usage) -> None:
        self.stages[name] = Stage(time.perf_counter() - start, self.client.usage.since(used))


def run(cfg: InterpretConfig, store: Store, stages: dict[str, Stage] | None = None) -> str:
    """Explain and score `cfg.features`; returns the interpret run id. Already finished features are skipped.
    `stages`, when given, receives what each stage took (`Job.stages`)."""
    row = check_inputs(cfg, store)
    with endpoint(cfg) as (url, model):
        base = cfg.base_run_id(model)
        statuses = storage.feature_statuses(store, base)
        todo = [f for f in cfg.feature_ids if statuses.get(f) != "finished"]
        if not todo:
            if store.run_status(base) in ("running", "interrupted"):   # stopped after its last feature was scored
                store.publish(base, {}, finish=True)
            print(f"{base}: all {len(cfg.feature_ids)} features already scored")
            return base
        with store.running(base, "interpret", {**asdict(cfg), "resolved_model": model, "base_url": url}):
            job = Job(cfg, store, row, LLMClient(cfg.llm_config(model, url)), base)
            run_sync(job.run(todo))
    if stages is not None:
        stages.update(job.stages)
    _finish(store, base, job)
    if cfg.export_dir:
        print(f"exported to {storage.export_delphi(store, base, cfg.export_dir)}")
    return base


def _finish(store: Store, base: str, job: Job) -> None:
    usage = job.client.usage
    print(f"{base}: {len(job.failures)} features failed, {len(job.skipped)} skipped (fewer than 2 activating "
          f"examples: {sorted(job.skipped)[:20]}); LLM calls {usage.calls} ({usage.cached} cached), "
          f"tokens in {usage.tokens_in} ({usage.tokens_reused} reused from the server's prompt cache) out "
          f"{usage.tokens_out}, {usage.seconds:.0f} s in calls; "
          + ", ".join(f"{name} {stage.seconds:.0f} s" for name, stage in job.stages.items()) + " wall clock")
    if job.failures:
        store.fail_run(base, "; ".join(f"f{f}: {e}" for f, e in sorted(job.failures.items()))[:2000])
    else:
        store.publish(base, {}, finish=True)
    print(specificity.summary(specificity.for_run(store, base, job.cfg.dict_id)))


def results(store: Store, base: str) -> pd.DataFrame:
    """Mean score per scorer, real vs shuffled controls (see queries.score_summary)."""
    return queries.score_summary(store, base)
