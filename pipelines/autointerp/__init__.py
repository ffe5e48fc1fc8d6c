"""Auto-interpretation (Delphi-style): explain dictionary features with an LLM and score the explanations.

    from pipelines.autointerp import InterpretConfig, run
    run_id = run(InterpretConfig(dict_id="my-sae", features="0:50"), Store())

Stages, one module each: examples.py (what is shown), prompts.py (every prompt, versioned),
explainer.py, scorers/ (one file per scorer, registry in scorers/__init__.py), storage.py
(rows, resumability, Delphi export), pipeline.py (the run). The LLM client is workbench/llm.py;
the embedded endpoint is serve.py (`workbench llm serve`).
"""

from pipelines.autointerp.config import InterpretConfig, parse_features
from pipelines.autointerp.pipeline import results, run
from pipelines.autointerp.serve import ServeConfig
from pipelines.autointerp.serve import run as serve
from pipelines.autointerp.storage import export_delphi

__all__ = ["InterpretConfig", "ServeConfig", "export_delphi", "parse_features", "results", "run", "serve"]
