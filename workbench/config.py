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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

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


def _element_type(annotation: Any) -> Any:
    """`list[int]` (or `list[int] | None`) -> int; None for any other annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _element_type(next(a for a in typing.get_args(annotation) if a is not type(None)))
    args = typing.get_args(annotation)
    return args[0] if origin is list and args else None


def _list_flag(element: Any) -> Callable[[str], list]:
    """A comma-separated flag value -> list, each item converted to `element` (int or float; else kept
    as text), so a bad item is reported against its flag."""
    convert = element if element in (int, float) else str

    def parse(text: str) -> list:
        try:
            return [convert(x) for x in text.split(",") if x]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {convert.__name__} values, "
                                             f"got {text!r}") from None
    return parse


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def group_class(cls: type, name: str, values: Mapping[str, Any]) -> type | None:
    """The dataclass whose fields a group field holds: the field's own type when that is a dataclass
    (`trainer: TrainConfig`), or, for a dict field, the class the config names for the values given
    so far (`cls.group_classes(values)`: the `sae` group's class depends on `architecture`)."""
    hint = typing.get_type_hints(cls)[name]
    if dataclasses.is_dataclass(hint):
        return hint  # type: ignore[return-value]
    groups = getattr(cls, "group_classes", None)
    return groups(values).get(name) if groups is not None else None


def group_fields(cls: type, name: str, values: Mapping[str, Any]) -> list[dataclasses.Field]:
    """The fields of group `name` a user may set (not those the pipeline sets: `cls.PIPELINE_FIELDS`)."""
    group = group_class(cls, name, values)
    owned = getattr(cls, "PIPELINE_FIELDS", {}).get(name, ())
    return [] if group is None else [f for f in dataclasses.fields(group) if f.name not in owned]


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _add_flag(parser: argparse.ArgumentParser, name: str, annotation: Any, doc: str, default: Any) -> None:
    kind = _base_type(annotation)
    convert = {bool: _parse_bool, list: _list_flag(_element_type(annotation))}.get(kind, kind)
    parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=convert, default=None,
                        help=f"{doc} (default: {default})".replace("%", "%%"))   # argparse formats help with %


def add_arguments(parser: argparse.ArgumentParser, cls: type, values: Mapping[str, Any] | None = None) -> None:
    """One `--field-name` flag per dataclass field, with its docstring as help; a group field gets one
    `--group.field-name` flag per field of its group (for `values` given so far, e.g. the architecture)."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        group = group_class(cls, f.name, values or {})
        if group is None:
            _add_flag(parser, f.name, hints[f.name], docs.get(f.name, ""), _field_default(f))
            continue
        defaults = _field_default(f)
        group_docs, group_hints = field_docs(group), typing.get_type_hints(group)
        for g in group_fields(cls, f.name, values or {}):
            default = getattr(defaults, g.name) if dataclasses.is_dataclass(defaults) else _field_default(g)
            _add_flag(parser, f"{f.name}.{g.name}", group_hints[g.name], group_docs.get(g.name, ""), default)


def build_config(cls: type[T], args: argparse.Namespace | None = None, toml_path: str | Path | None = None,
                 values: Mapping[str, Any] | None = None) -> T:
    """Defaults <- TOML file (a [group] table per group) <- `values` (groups as dicts) <- CLI flags
    (`--group.field`); the dataclass validates on construction."""
    layers = [_read_toml(toml_path) if toml_path is not None else {}, dict(values or {})]
    flags: dict[str, Any] = {}
    for key, value in vars(args or argparse.Namespace()).items():
        top, _, sub = key.partition(".")
        if value is None or top not in _field_names(cls):
            continue
        if sub:
            flags.setdefault(top, {})[sub] = value
        else:
            flags[top] = value
    values = {}
    for layer in [*layers, flags]:   # later layers win, field by field inside a group
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(values.get(key), dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = dict(value) if isinstance(value, dict) else value
    unknown = set(values) - _field_names(cls)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    where = f"config {toml_path} or flags: " if toml_path is not None else ""
    for f in dataclasses.fields(cast(Any, cls)):
        if f.name in values and group_class(cls, f.name, values) is not None:
            values[f.name] = _build_group(cls, f, values, where)
    check_types(cls, {k: v for k, v in values.items() if group_class(cls, k, values) is None}, where)
    return cls(**values)


def _read_toml(path: str | Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text())
    except UnicodeDecodeError:
        raise ValueError(f"config {path} is not UTF-8 text (a TOML file is expected)") from None
    except OSError as err:
        raise ValueError(f"config {path} cannot be read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config {path} is not valid TOML: {err}") from None


def check_types(cls: type, values: Mapping[str, Any], where: str = "", group: str = "") -> None:
    """ValueError naming the field and the expected type for a value of the wrong type (checked
    before the dataclass is built, so its range checks never meet a string where a number belongs)."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        annotation = hints.get(name)
        if annotation is None or (value is None and _optional(annotation)):
            continue
        kind, element = _base_type(annotation), _element_type(annotation)
        if not _fits(value, kind) or (element is not None and not all(_fits(v, element) for v in value)):
            expected = _type_name(kind) + (f"[{_type_name(element)}]" if element is not None else "")
            raise ValueError(f"{where}{group}{name} expects {expected}, got {type(value).__name__} {value!r}")


def _type_name(kind: Any) -> str:
    return str(getattr(kind, "__name__", kind))


def _optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def _fits(value: Any, kind: Any) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in (bool, str, list, dict):
        return isinstance(value, kind)
    return True   # Any, dataclass groups (checked field by field) and other annotations


def _build_group(cls: type, f: dataclasses.Field, values: Mapping[str, Any], where: str = "") -> Any:
    """A group's given fields checked by name and type; a dataclass group is built over its default."""
    given = values[f.name]
    if dataclasses.is_dataclass(given):
        return given
    if not isinstance(given, dict):
        raise ValueError(f"{f.name} must be a table of fields ([{f.name}] in TOML, "
                         f"--{f.name.replace('_', '-')}.FIELD on the command line), got {given!r}")
    allowed = {g.name for g in group_fields(cls, f.name, values)}
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(f"unknown {f.name} fields: {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
    group = group_class(cls, f.name, values)
    assert group is not None   # the caller checked
    check_types(group, given, where, f"{f.name}.")
    default = _field_default(f)
    return dataclasses.replace(cast(Any, default), **given) if dataclasses.is_dataclass(default) else dict(given)


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def to_dict(cfg: Any) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def require_positive(config: Any, *names: str) -> None:
    """ValueError naming the first of `config`'s integer fields `names` that is below 1."""
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")


def comma_list(value: str | list[str]) -> list[str]:
    """A list field given as 'a, b' (flags, API) -> ['a', 'b']; a list is returned as is."""
    return [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value


def config_id(prefix: str, fields: Mapping[str, Any]) -> str:
    """`{prefix}-{12 hex digits}`: a stable id over the fields that change a run's results, so
    rerunning the same command resumes or skips the same run."""
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{prefix}-{digest}"
