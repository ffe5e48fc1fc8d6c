"""Model variants: a model the project changed (LoRA merged, codebooks inserted, finetuned), saved as a
local Hugging Face folder plus any extra modules it needs, registered in the store's `models` table
with its parent and how it was made, and loadable by name through `workbench.models.load_model`.

    save_variant(store, "smollm2-bbc-lora", parent="smollm2-135m-instruct",
                 how={"method": "lora", "corpus": "bbc", "steps": 200}, hf_model=merged, tokenizer=tok)
    load_model("smollm2-bbc-lora", store=store)

Extra modules the variant runs with (its codebooks: `workbench/codebooks.py`) are written into the
folder by the method that made it (`write_extras`) before the folder is published; `load_model`
inserts them.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.paths import data_dir, write_atomically
from workbench.store import Store

VARIANT_FILE = "workbench_variant.json"
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def variant_path(store: Store, name: str) -> Path | None:
    """Folder of the registered variant `name`, or None (an absent store file is not created)."""
    if not store.path.exists():
        return None
    df = store.query("SELECT path FROM models WHERE name = ?", [name])
    return Path(df["path"].iloc[0]) if len(df) else None


def save_variant(store: Store, name: str, parent: str, how: Mapping[str, Any], hf_model: Any, tokenizer: Any,
                 write_extras: Callable[[Path], object] | None = None,
                 tables: Callable[[Path], Mapping[str, pd.DataFrame]] | None = None) -> Path:
    """Save `hf_model` + `tokenizer` (+ what `write_extras(folder)` writes) under
    data/artifacts/models/`name` and register it, with the rows `tables(folder)` gives (e.g. the
    variant's codebooks as dictionaries) in the same transaction, under run `variant-<name>`.

    ValueError, before anything is written, for the cases `check_new_variant` names."""
    check_new_variant(store, name, parent)
    folder = data_dir() / "artifacts" / "models" / name

    def write(tmp: Path) -> None:
        hf_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if write_extras is not None:
            write_extras(tmp)
        (tmp / VARIANT_FILE).write_text(json.dumps({"name": name, "parent": parent, "how": dict(how)}, indent=1))

    shutil.rmtree(folder, ignore_errors=True)  # a folder left by a run killed before it registered the variant
    write_atomically(folder, write)
    run_id = f"variant-{name}"
    row = {"name": name, "parent": parent, "how": json.dumps(dict(how)), "path": str(folder),
           "created_at": pd.Timestamp.now(tz="UTC").tz_localize(None)}
    with store.running(run_id, "variant", {"name": name, "parent": parent, "how": dict(how)}):
        store.publish(run_id, {"models": pd.DataFrame([row]), **(tables(folder) if tables else {})})
    return folder


def check_new_variant(store: Store, name: str, parent: str) -> None:
    """ValueError for a variant name that is malformed, a built-in model's or already registered, or a
    parent that is neither a known model, a registered variant nor a local folder (pipelines that
    make a variant call this before their work)."""
    from workbench.models import model_names

    if not NAME.fullmatch(name):
        raise ValueError(f"variant name {name!r} must be 1-64 lowercase letters, digits, '.', '_' or '-'")
    if name in model_names() or variant_path(store, name) is not None:
        raise ValueError(f"model {name!r} already exists: choose another variant name")
    if parent not in model_names() and variant_path(store, parent) is None and not Path(parent).is_dir():
        raise ValueError(f"unknown parent model {parent!r}: expected one of {model_names()}, a registered variant "
                         "or a local Hugging Face folder")
