"""Auto-interpretation (Delphi-style): explain dictionary features with an LLM and score the explanations.

    from pipelines.autointerp import InterpretConfig, run
    run_id = run(InterpretConfig(dict_id="my-sae", features="0:50"), Store())

Stages, one module each: examples.py (what is shown), prompts.py (every prompt, versioned),
explainer.py, scorers/ (one file per scorer, registry in scorers/__init__.py), storage.py
(rows, resumability, Delphi export), pipeline.py (the run). The LLM client is workbench/llm.py;
the embedded endpoint is serve.py (`workbench llm serve`) over server.py or llama.cpp.

Names are resolved on first use (PEP 562), so `pipelines.autointerp.serve` and the server
subprocess start without importing torch models, saes and the scorers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "InterpretConfig": "pipelines.autointerp.config",
    "parse_features": "pipelines.autointerp.config",
    "run": "pipelines.autointerp.pipeline",
    "results": "pipelines.autointerp.pipeline",
    "export_delphi": "pipelines.autointerp.storage",
    "ServeConfig": "pipelines.autointerp.serve",
}

__all__ = [*_EXPORTS, "serve_run"]


def __getattr__(name: str) -> Any:
    if name == "serve_run":
        return importlib.import_module("pipelines.autointerp.serve").run
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipelines.autointerp' has no attribute {name!r}")
