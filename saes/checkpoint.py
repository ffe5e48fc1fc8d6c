"""Training checkpoints: one folder per step with `state.safetensors` (every tensor) and
`trainer.json` (everything else). No pickles, so a checkpoint can be loaded without trusting it.

A checkpoint is written into a temporary folder and renamed into place, then older checkpoints
are removed, so an interruption at any moment leaves the previous complete checkpoint readable.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saes.storage import read_tensors, save_tensors_atomic, write_json_atomic
from workbench.paths import write_atomically

STATE_FILE = "state.safetensors"
META_FILE = "trainer.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint folder with the highest step under `root`, if any."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / META_FILE).is_file() and (p / STATE_FILE).is_file()]
    return max(found)[1] if found else None


def save_checkpoint(root: str | Path, step: int, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
    """Write `root/step_{step}` atomically and delete older step folders; returns the folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:09d}"

    def write(tmp: Path) -> None:
        tmp.mkdir()
        save_tensors_atomic(tmp / STATE_FILE, tensors)
        write_json_atomic(tmp / META_FILE, dict(meta))

    shutil.rmtree(final, ignore_errors=True)
    write_atomically(final, write)
    for path in root.iterdir():
        if _STEP_DIR.match(path.name) and path != final:
            shutil.rmtree(path, ignore_errors=True)
    return final


def load_checkpoint(folder: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, metadata) of a checkpoint folder; ValueError if it is incomplete or corrupted."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise ValueError(f"{folder} is not a checkpoint (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_path} is not valid JSON ({err})") from err
    return read_tensors(folder / STATE_FILE), meta


def split_prefix(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries whose name starts with `prefix`, with it removed."""
    return {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}


def optimizer_to_flat(state: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors ("optim.{param}.{key}") and JSON."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of `optimizer_to_flat`, ready for `optimizer.load_state_dict`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in split_prefix(tensors, "optim.").items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, entries in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, Tensor]:
    return {"rng.torch": torch.get_rng_state()}


def restore_rng(tensors: Mapping[str, Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
