"""`InterpretConfig`: what `workbench interpret` explains and scores, and with which endpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar

from pipelines.autointerp import prompts, scorers
from pipelines.autointerp.serve import ServeConfig
from workbench.config import comma_list, config_id, require_positive
from workbench.llm import LLMConfig

RUN_ID_IGNORES = ("features", "run_id", "progress", "export_dir", "llm", "server")
"""Fields that do not change results; of the `llm` group, the resolved model name and the sampling
settings are hashed instead."""


def parse_features(spec: str) -> list[int]:
    """'0:200' (a range, end excluded), '3,17,42' or '7' -> sorted unique feature ids."""
    spec = spec.strip()
    try:
        if ":" in spec:
            start, end = (int(x) for x in spec.split(":"))
            ids = list(range(start, end))
        else:
            ids = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"features must look like '0:200' or '3,17,42', got {spec!r}") from err
    if not ids:
        raise ValueError(f"features {spec!r} selects no feature")
    if min(ids) < 0:
        raise ValueError(f"feature ids must be >= 0, got {min(ids)}")
    return sorted(set(ids))


@dataclass
class InterpretConfig:
    """Explain and score features of one dictionary (Delphi-style auto-interpretation)."""

    PIPELINE_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {"server": ("host", "port", "faults")}
    """The embedded server binds a free loopback port and injects no faults."""

    dict_id: str = ""
    """Dictionary id in the store; its feature pass (`workbench features`) must have run."""
    features: str = "0:50"
    """Features to explain: a range `0:200` (end excluded) or a list `3,17,42`."""
    scorers: list[str] = field(default_factory=scorers.names)
    """Scorers to run, from the scorer registry: detection, fuzzing, embedding, surprisal, intervention."""
    controls: bool = True
    """Also score every scorer on explanations shuffled across features (the random-explanation control)."""
    llm: LLMConfig = field(default_factory=lambda: LLMConfig(model=""))
    """The explainer/scorer endpoint: `--llm.base-url http://127.0.0.1:8080/v1` (empty starts the
    embedded local server), `--llm.model` (empty: the endpoint's first model), `--llm.api-key-env`,
    `--llm.max-in-flight`, `--llm.timeout-s`, `--llm.max-retries`, `--llm.cache-path` ('' asks anew)."""
    server: ServeConfig = field(default_factory=ServeConfig)
    """The embedded server started when no `llm.base_url` is given: `--server.backend`
    (auto, llama-cpp with Qwen2.5-Coder-1.5B, transformers), `--server.model`, `--server.threads`."""
    prefill: bool = False
    """Prefill the explainer's reply with the `[EXPLANATION]:` marker. Only for endpoints that continue a
    final assistant message (vLLM's `continue_final_message`, the embedded server with either backend);
    llama-cpp-python's own server closes it and starts a new turn instead."""
    n_train: int = 20
    """Activating examples shown to the explainer."""
    n_top_train: int = 4
    """How many of those are top examples (the rest are activation-quantile samples)."""
    n_test: int = 10
    """Held-out activating examples per scorer."""
    n_test_top: int = 2
    """How many of those are top examples the explainer did not see (the rest: one per activation
    decile in turn, from the top decile down)."""
    n_inactive: int = 10
    """Non-activating examples per scorer (verified zero activation)."""
    scorer_model: str = ""
    """Local model for surprisal and intervention log-probabilities; empty uses the dictionary's model."""
    intervention_prompts: int = 6
    """Prompts per feature for intervention scoring."""
    intervention_tokens: int = 8
    """Tokens generated per prompt, clean and steered."""
    intervention_kl: float = 0.5
    """Target mean KL(p_clean || p_steered) of the next token; each feature's steering strength is tuned to it."""
    export_dir: str = ""
    """Also write the run's explanations and scores in Delphi's file layout to this folder (empty: no export)."""
    run_id: str = ""
    """Run id; empty derives one from every field that changes results (not `features`, so ranges extend a run)."""
    seed: int = 0
    """Seed of example splits and non-activating window sampling."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if not self.dict_id:
            raise ValueError("dict_id is required")
        parse_features(self.features)
        self.scorers = comma_list(self.scorers)
        unknown = [s for s in self.scorers if s not in scorers.SCORERS]
        if unknown or not self.scorers:
            raise ValueError(f"unknown scorers {unknown or '(none given)'}; choose from {', '.join(scorers.SCORERS)}")
        require_positive(self, "n_train", "n_test", "n_inactive", "intervention_prompts", "intervention_tokens")
        if not 0 <= self.n_top_train <= self.n_train:
            raise ValueError(f"n_top_train ({self.n_top_train}) must be in 0..n_train ({self.n_train})")
        if not 0 <= self.n_test_top <= self.n_test:
            raise ValueError(f"n_test_top ({self.n_test_top}) must be in 0..n_test ({self.n_test})")
        if self.intervention_kl <= 0:
            raise ValueError(f"intervention_kl must be > 0, got {self.intervention_kl}")

    @property
    def feature_ids(self) -> list[int]:
        return parse_features(self.features)

    def llm_config(self, model: str, base_url: str) -> LLMConfig:
        """The client's config for the endpoint and model actually used."""
        return replace(self.llm, base_url=base_url, model=model)

    def base_run_id(self, model: str) -> str:
        """Stable id over everything that changes results, the resolved explainer model included."""
        if self.run_id:
            return self.run_id
        keep = {k: v for k, v in asdict(self).items() if k not in RUN_ID_IGNORES}
        keep.update(model=model, temperature=self.llm.temperature, max_tokens=self.llm.max_tokens,
                    prompts=[prompts.EXPLAIN_VERSION, prompts.DETECTION_VERSION, prompts.FUZZING_VERSION,
                             prompts.SURPRISAL_VERSION, prompts.INTERVENTION_VERSION])
        return config_id(f"interpret-{self.dict_id}", keep)
