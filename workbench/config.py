"""Config dataclasses <-> CLI flags and TOML files, so every field is declared once.

Field help comes from the docstring written under each field (the sparsify/delphi convention);
Python drops those at runtime, so they are read back from the class source.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import inspect
import json
import textwrap
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (and its bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        definition = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0]
        assert isinstance(definition, ast.ClassDef)
        body = definition.body
        for stmt, nxt in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
                docs[stmt.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _base_type(annotation: Any) -> type:
    """`int | None` -> int; `list[str]` -> list."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    return origin or annotation


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_mapping(text: str) -> dict[str, Any]:
    """`k=32,aux_coefficient=0.03` -> {"k": 32, "aux_coefficient": 0.03} (values read as TOML)."""
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value.strip()
    return out


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--field-name` flag per dataclass field, with its docstring as help."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        convert = {bool: _parse_bool, list: lambda s: [x for x in s.split(",") if x],
                   dict: _parse_mapping}.get(kind, kind)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=convert, default=None,
                            help=f"{docs.get(f.name, '')} (default: {default})")


def build_config(cls: type[T], args: argparse.Namespace | None = None, toml_path: str | Path | None = None) -> T:
    """Defaults <- TOML file <- CLI flags; the dataclass validates on construction."""
    values: dict[str, Any] = {}
    if toml_path is not None:
        values.update(tomllib.loads(Path(toml_path).read_text()))
    if args is not None:
        values.update({k: v for k, v in vars(args).items() if v is not None and k in _field_names(cls)})
    unknown = set(values) - _field_names(cls)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**values)


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def to_dict(cfg: Any) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def config_id(prefix: str, fields: Mapping[str, Any]) -> str:
    """`{prefix}-{12 hex digits}`: a stable id over the fields that change a run's results, so
    rerunning the same command resumes or skips the same run."""
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{prefix}-{digest}"
