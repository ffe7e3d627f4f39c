"""Shared pieces of every user-facing schema: strict frozen models and YAML loading with paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from etr_sim.errors import ConfigError, Problem, problem


class Strict(BaseModel):
    """Base of every schema: unknown keys are errors, values are frozen after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; any problem (missing, unreadable, not YAML, not a mapping) is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), problem("", "file not found")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), problem("", f"cannot read file: {exc}")) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - safe loader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), problem("", f"not valid YAML: {exc}")) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), problem("", "expected a mapping at the top level", data))
    return data


def format_path(parts: tuple | list) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _walk(data: Any, loc: tuple) -> tuple[list, Any, bool]:
    """Follow a pydantic error location through the raw data.

    Pydantic inserts the tag of a discriminated union (and validator names) into ``loc``; those
    elements do not exist in the data and are skipped. Returns (path parts, value, value found).
    """
    parts: list = []
    cur, found = data, True
    for i, key in enumerate(loc):
        if isinstance(cur, dict) and key in cur:
            parts.append(key)
            cur = cur[key]
        elif isinstance(cur, list) and isinstance(key, int) and 0 <= key < len(cur):
            parts.append(key)
            cur = cur[key]
        elif i == len(loc) - 1 and isinstance(key, str) and isinstance(cur, dict):
            parts.append(key)  # a missing or unknown key: name it, there is no value
            found = False
        # else: a union tag or function name that pydantic adds; skip it
    return parts, cur, found


def problems_from_validation(exc: ValidationError, data: Any, prefix: tuple = ()) -> list[Problem]:
    """Turn every pydantic error into a Problem with a YAML path and the offending value."""
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        parts, value, found = _walk(data, tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] == "missing":
            found = False
            msg = "required key is missing"
        elif err["type"] == "extra_forbidden":
            found = False
            msg = "unknown key"
        path = format_path(list(prefix) + parts)
        out.append(problem(path, msg, value) if found else problem(path, msg))
    # Pydantic may report one bad union member several times; keep the first of each.
    seen, unique = set(), []
    for p in out:
        key = (p.path, p.message)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def validate(model: type[BaseModel], data: dict, file: str, error: type[ConfigError] = ConfigError):
    """Validate ``data`` against ``model``; raise ``error`` listing every problem at once."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(file, problems_from_validation(exc, data)) from None


def deep_merge(base: dict, overrides: dict) -> dict:
    """Recursively merge ``overrides`` into a copy of ``base`` (mappings merge, anything else replaces)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
