"""Saving and loading dictionaries: SAELens's two-file layout plus our sidecar, for every method.

A saved dictionary is a folder with:
- `sae_weights.safetensors`: the method's tensors in model units (`Dictionary.saved_tensors`).
  SAEs write W_enc, b_enc, W_dec, b_dec (+ threshold for JumpReLU) under SAELens's names, any
  input normalisation folded in;
- `cfg.json` (`Dictionary.saved_cfg`): for SAEs the SAELens config, so
  `sae_lens.SAE.load_from_disk(folder)` loads it unchanged; other methods write their own
  architecture tag there, which SAELens rightly refuses;
- `workbench.json`: our architecture key, the full config dataclass, the folded input scale (SAEs)
  and caller metadata (e.g. the training config). It is a sidecar because SAELens's
  "architecture" names differ from ours ("standard" is our "relu").
A folder without `workbench.json` (e.g. trained by SAELens) loads too if its architecture is one
we implement with the same forward pass.

Only safetensors are read: never pickles.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from saes import registry
from saes.base import Dictionary
from workbench.config import check_types
from workbench.paths import write_atomically

WEIGHTS_FILE = "sae_weights.safetensors"
SAELENS_CFG_FILE = "cfg.json"
SIDECAR_FILE = "workbench.json"
FORMAT_VERSION = 1


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and a rename, so a crash leaves no half file."""
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=True)))


def save_tensors_atomic(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    write_atomically(path, lambda tmp: save_file(tensors, str(tmp)))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a missing or corrupted file into a clear ValueError."""
    if not path.is_file():
        raise ValueError(f"missing weights file {path}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"could not read {path}: corrupted or not a safetensors file ({err})") from err


def save_dictionary(sae: Dictionary, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write the three files into `path` (created if needed); returns the folder."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors_atomic(folder / WEIGHTS_FILE, sae.saved_tensors())
    write_json_atomic(folder / SAELENS_CFG_FILE, sae.saved_cfg())
    write_json_atomic(folder / SIDECAR_FILE, {
        "format_version": FORMAT_VERSION, "architecture": sae.architecture, "config": dataclasses.asdict(sae.cfg),
        "metadata": dict(metadata or {}), **sae.saved_notes()})
    return folder


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text (JSON is expected)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def build_config(architecture: str, fields: Mapping[str, Any], source: str) -> Any:
    """The architecture's config dataclass from a dict, naming unknown or missing fields and a value
    of the wrong type."""
    if not isinstance(fields, Mapping):
        raise ValueError(f"{source}: the config must be a JSON object, got {type(fields).__name__} {fields!r}")
    config_class = registry.get(architecture).config_class
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {architecture} config fields: {', '.join(unknown)}")
    required = {f.name for f in dataclasses.fields(config_class)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - set(fields))
    if missing:
        raise ValueError(f"{source}: missing {architecture} config fields: {', '.join(missing)}")
    check_types(config_class, fields, f"{source}: ")
    return config_class(**fields)


def _config_from_saelens(cfg: dict[str, Any], source: str) -> tuple[str, Any]:
    """(architecture, config) for a cfg.json written by SAELens itself."""
    architecture = registry.by_saelens_architecture(str(cfg.get("architecture", "standard")))
    expected = {"apply_b_dec_to_input": True, "normalize_activations": "none", "rescale_acts_by_decoder_norm": False}
    unsupported = {key: cfg[key] for key, ok in expected.items() if cfg.get(key, ok) != ok}
    if unsupported:
        raise ValueError(f"{source}: SAELens options this workbench does not implement: {unsupported}")
    meta = cfg.get("metadata") or {}
    config_class = registry.get(architecture).config_class
    names = {f.name for f in dataclasses.fields(config_class)}
    fields = {key: cfg[key] for key in names if key in cfg}
    fields.update(hook_point=meta.get("hook_name") or "", model_name=meta.get("model_name") or "")
    check_types(config_class, fields, f"{source}: ")
    return architecture, config_class(**fields)


def load_dictionary(path: str | Path, architecture: str | None = None,
                    expected_d_in: int | None = None, device: str = "cpu") -> Dictionary:
    """Load a dictionary folder written by `save_dictionary` (or by SAELens).

    Raises ValueError if it is not the requested `architecture`, its config has unknown fields,
    the weights are corrupted or do not match the config, or `d_in != expected_d_in`.
    """
    folder = Path(path)
    sidecar = folder / SIDECAR_FILE
    if sidecar.is_file():
        info = _read_json(sidecar)
        found = str(info.get("architecture"))
        registry.get(found)
        config = build_config(found, info.get("config") or {}, str(sidecar))
    elif (folder / SAELENS_CFG_FILE).is_file():
        found, config = _config_from_saelens(_read_json(folder / SAELENS_CFG_FILE), str(folder / SAELENS_CFG_FILE))
    else:
        raise ValueError(f"{folder} holds no saved dictionary (no {SIDECAR_FILE} or {SAELENS_CFG_FILE})")
    if architecture is not None and found != architecture:
        raise ValueError(f"{folder} holds a {found!r} dictionary, but {architecture!r} was requested")
    sae = registry.get(found).module_class(config)
    if expected_d_in is not None:
        sae.check_compatible(expected_d_in)
    sae.load_saved_tensors(read_tensors(folder / WEIGHTS_FILE), source=str(folder / WEIGHTS_FILE))
    return sae.to(device)
