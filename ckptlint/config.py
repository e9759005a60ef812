"""``[tool.ckptlint]`` configuration: discovery, validation, rule selection.

The configuration lives in the nearest ``pyproject.toml`` that has a
``[tool.ckptlint]`` table, searched upward from the first checked path
(``--config FILE`` names one explicitly, ``--isolated`` ignores all of them).
Every key is validated; a bad key or value raises :class:`ConfigError` whose
text is one line naming the key, the value and the file.

This module reads and validates the file; the values it builds
(:class:`Config`, :class:`Budgets`, :class:`GlobMatcher`) are in
:mod:`ckptlint.config_model`, and rule codes and selectors (ruff's model,
:class:`ConfigError`) in :mod:`ckptlint.config_selection`. Every name is
importable from here, as before.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

# Re-exported: callers import every configuration name from ckptlint.config.
from ckptlint.config_model import (
    _DOTTED_NAME,
    DEFAULT_MAX_HELPER_DEPTH,
    MAX_HELPER_DEPTH_LIMIT,
    Budgets,
    Config,
    GlobMatcher,
)
from ckptlint.config_selection import (
    ConfigError,
    SelectionLayer,
    enabled_codes,
    known_codes,
    validate_selectors,
)
from ckptlint.config_selection import code_matches  # noqa: F401 - the runner imports it from here

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

__all__ = [
    "Budgets",
    "Config",
    "ConfigError",
    "SelectionLayer",
    "DEFAULT_MAX_HELPER_DEPTH",
    "find_config_file",
    "find_project_root",
    "load_config",
    "known_codes",
    "validate_selectors",
    "enabled_codes",
    "GlobMatcher",
]

_BUDGET_SPEC: dict[str, tuple[str, type | tuple[type, ...], float, float]] = {
    "max-file-bytes": ("max_file_bytes", int, 0, 2**40),
    "max-nesting": ("max_nesting", int, 10, 2000),
    "file-timeout": ("file_timeout", (int, float), 0, 86400),
    "max-file-memory": ("max_file_memory", int, 0, 2**20),
}
BUDGET_KEYS = tuple(_BUDGET_SPEC)

_KEYS = (
    "select",
    "ignore",
    "extend-select",
    "per-file-ignores",
    "exclude",
    "extend-exclude",
    "checkpoint-functions",
    "max-helper-depth",
    "cache-dir",
    *BUDGET_KEYS,
)


def _parse_budgets(data: Mapping[str, Any], source: str) -> Budgets:
    values: dict[str, Any] = {}
    for key, (name, kind, low, high) in _BUDGET_SPEC.items():
        if key not in data:
            continue
        value = data[key]
        ok = not isinstance(value, bool) and isinstance(value, kind) and low <= value <= high
        if not ok:
            what = "an integer" if kind is int else "a number"
            raise _fail(key, value, source, f"expected {what} from {low} to {high}")
        values[name] = value
    return Budgets(**values)


# --------------------------------------------------------------------- files


def _has_tool_table(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        # A broken pyproject.toml that might hold our table must not be
        # skipped silently: load_config reports it.
        return "[tool.ckptlint" in path.read_text(encoding="utf-8", errors="replace")
    return isinstance(data.get("tool"), dict) and "ckptlint" in data["tool"]


def find_config_file(start: str) -> Path | None:
    """The nearest ``pyproject.toml`` with a ``[tool.ckptlint]`` table, upward from ``start``."""
    here = Path(start).resolve()
    if not here.is_dir():
        here = here.parent
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and _has_tool_table(candidate):
            return candidate
    return None


def _fail(key: str, value: Any, source: str, why: str) -> ConfigError:
    return ConfigError(f"{source} [tool.ckptlint] {key} = {value!r}: {why}")


def _str_list(data: Mapping[str, Any], key: str, source: str) -> tuple[str, ...]:
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(key, value, source, "expected a list of strings")
    return tuple(value)


def _check_selectors(key: str, values: Sequence[str], source: str) -> None:
    for value in values:
        try:
            validate_selectors([value], key)
        except ConfigError as exc:
            raise _fail(key, value, source, str(exc).split(": ", 1)[1]) from None


def parse_table(data: Mapping[str, Any], source: str, root: str) -> Config:
    """Validate a ``[tool.ckptlint]`` table and build a :class:`Config`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source} [tool.ckptlint]: expected a table, got {data!r}")
    for key in data:
        if key not in _KEYS:
            hint = ""
            if key.replace("_", "-") in _KEYS:
                hint = f" (did you mean {key.replace('_', '-')!r}?)"
            raise _fail(key, data[key], source, f"unknown key{hint}; known keys: {', '.join(_KEYS)}")
    select: tuple[str, ...] | None = None
    extend_select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    if "select" in data:
        select = _str_list(data, "select", source)
        _check_selectors("select", select, source)
    if "extend-select" in data:
        extend_select = _str_list(data, "extend-select", source)
        _check_selectors("extend-select", extend_select, source)
    if "ignore" in data:
        ignore = _str_list(data, "ignore", source)
        _check_selectors("ignore", ignore, source)
    per_file: list[tuple[str, tuple[str, ...]]] = []
    if "per-file-ignores" in data:
        table = data["per-file-ignores"]
        if not isinstance(table, Mapping):
            raise _fail("per-file-ignores", table, source, "expected a table of glob = [codes]")
        for pattern, codes in sorted(table.items()):
            key = f"per-file-ignores.{pattern!r}"
            if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
                raise _fail(key, codes, source, "expected a list of rule codes")
            _check_selectors(key, codes, source)
            per_file.append((pattern, tuple(codes)))
    exclude = _str_list(data, "exclude", source) if "exclude" in data else ()
    extend_exclude = _str_list(data, "extend-exclude", source) if "extend-exclude" in data else ()
    functions: tuple[str, ...] = ()
    if "checkpoint-functions" in data:
        functions = _str_list(data, "checkpoint-functions", source)
        for name in functions:
            if not _DOTTED_NAME.match(name):
                raise _fail(
                    "checkpoint-functions",
                    name,
                    source,
                    "not a dotted qualified name (e.g. 'deepspeed.checkpointing.checkpoint')",
                )
    depth = DEFAULT_MAX_HELPER_DEPTH
    if "max-helper-depth" in data:
        depth = data["max-helper-depth"]
        if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_HELPER_DEPTH_LIMIT:
            raise _fail(
                "max-helper-depth", depth, source, f"expected an integer from 0 to {MAX_HELPER_DEPTH_LIMIT}"
            )
    cache_dir: str | None = None
    if "cache-dir" in data:
        value = data["cache-dir"]
        if not isinstance(value, str) or not value:
            raise _fail("cache-dir", value, source, "expected a folder path")
        cache_dir = os.path.normpath(os.path.join(root, os.path.expanduser(value)))
    layers: tuple[SelectionLayer, ...] = ()
    if select is not None or extend_select or ignore:
        layers = (SelectionLayer(select=select, extend_select=extend_select, ignore=ignore),)
    return Config(
        cache_dir=cache_dir,
        root=root,
        source=source,
        layers=layers,
        per_file_ignores=tuple(per_file),
        exclude=exclude,
        extend_exclude=extend_exclude,
        checkpoint_functions=tuple(sorted(set(functions))),
        max_helper_depth=depth,
        budgets=_parse_budgets(data, source),
    )


def read_config_file(path: Path) -> Config:
    """Read ``[tool.ckptlint]`` from ``path`` (a pyproject.toml, or a TOML file
    whose top level is the ckptlint table, such as ``ckptlint.toml``)."""
    source = str(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    tool = data.get("tool")
    if isinstance(tool, dict) and "ckptlint" in tool:
        table = tool["ckptlint"]
    elif path.name == "pyproject.toml":
        table = {}
    else:
        table = data
    return parse_table(table, source, str(path.resolve().parent))


def find_project_root(start: str) -> str:
    """The nearest folder at or above ``start`` with a pyproject.toml or .git, else cwd."""
    here = Path(start).resolve()
    if not here.is_dir():
        here = here.parent
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() or (folder / ".git").exists():
            return str(folder)
    return os.getcwd()


def load_config(
    paths: Sequence[str],
    *,
    config_file: str | None = None,
    isolated: bool = False,
) -> Config:
    """Find and read the configuration for a run over ``paths``."""
    start = paths[0] if paths else "."
    if isolated:
        return Config(root=os.getcwd(), project_root=find_project_root(start))
    if config_file is not None:
        config = read_config_file(Path(config_file))
        return replace(config, project_root=config.root)
    found = find_config_file(start)
    if found is None:
        return Config(root=os.getcwd(), project_root=find_project_root(start))
    config = read_config_file(found)
    return replace(config, project_root=config.root)
