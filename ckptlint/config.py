"""``[tool.ckptlint]`` configuration: discovery, validation, rule selection.

The configuration lives in the nearest ``pyproject.toml`` that has a
``[tool.ckptlint]`` table, searched upward from the first checked path
(``--config FILE`` names one explicitly, ``--isolated`` ignores all of them).
Every key is validated; a bad key or value raises :class:`ConfigError` whose
text is one line naming the key, the value and the file.

Rule selection follows ruff's model so that users meet no surprise: ``select``
replaces the enabled set, ``extend-select`` adds to it, ``ignore`` removes from
it, and when a code matches both a selector and an ignore entry the *more
specific* one wins (``select = ["CKP101"]`` with ``ignore = ["CKP1"]`` keeps
CKP101; a tie goes to ``ignore``). Configuration and command line are layers:
the command line is applied after the file, and a ``--select`` there starts
afresh exactly like ``select`` in the file.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ckptlint.files import glob_to_regex

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

DEFAULT_MAX_HELPER_DEPTH = 3
# A helper chain deeper than this would make analysis time explode on large
# trees and no real model nests checkpointed helpers that deep.
MAX_HELPER_DEPTH_LIMIT = 20

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



@dataclass(frozen=True)
class Budgets:
    """Per-file limits: a file over one is reported (CKP003) instead of checked.

    ``max_file_memory`` is in MiB and bounds a worker process's address-space
    growth; ``file_timeout`` is in seconds; 0 switches either off.
    """

    max_file_bytes: int = 8_000_000
    max_nesting: int = 100
    file_timeout: float = 60.0
    max_file_memory: int = 4096


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


_RELEASED_CODES = (
    "CKP101 CKP102 CKP103 CKP104 CKP105 CKP106 CKP107 CKP201 CKP202 CKP203 CKP204 CKP205 "
    "CKP301 CKP302 CKP303 CKP304 CKP305 CKP401 CKP402"
).split()

_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_CODE_SHAPE = re.compile(r"^CKP[0-9]{0,3}$")


class ConfigError(Exception):
    """A user mistake in configuration or in a rule selector: one line, no traceback."""


@dataclass(frozen=True)
class SelectionLayer:
    """One layer of rule selectors (the config file, or the command line).

    ``select`` of ``None`` means "keep what earlier layers enabled".
    """

    select: tuple[str, ...] | None = None
    extend_select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    """The effective configuration of one run."""

    # Directory patterns are resolved against this (the config file's folder,
    # else the current directory).
    root: str = "."
    # Where .ckptlint_cache/ goes: the config file's folder, else the nearest
    # folder above the first path holding pyproject.toml or .git, else cwd.
    project_root: str = "."
    source: str | None = None  # the file it came from, for messages
    layers: tuple[SelectionLayer, ...] = ()
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    exclude: tuple[str, ...] = ()
    extend_exclude: tuple[str, ...] = ()
    checkpoint_functions: tuple[str, ...] = ()
    max_helper_depth: int = DEFAULT_MAX_HELPER_DEPTH
    budgets: Budgets = field(default_factory=lambda: Budgets())
    extra: Mapping[str, Any] = field(default_factory=dict)
    # `cache-dir` / --cache-dir / CKPTLINT_CACHE_DIR; None: <project_root>/.ckptlint_cache
    cache_dir: str | None = None

    def with_cli(
        self,
        *,
        select: Sequence[str] | None = None,
        extend_select: Sequence[str] = (),
        ignore: Sequence[str] = (),
        exclude: Sequence[str] | None = None,
        extend_exclude: Sequence[str] = (),
        checkpoint_functions: Sequence[str] = (),
        max_helper_depth: int | None = None,
        cache_dir: str | None = None,
    ) -> "Config":
        """Return this config with command-line overrides applied on top."""
        validate_selectors(select or (), "--select")
        validate_selectors(extend_select, "--extend-select")
        validate_selectors(ignore, "--ignore")
        for name in checkpoint_functions:
            _check_dotted(name, "--checkpoint-function", name, "the command line")
        layers = self.layers
        if select is not None or extend_select or ignore:
            layers = layers + (
                SelectionLayer(
                    select=tuple(select) if select is not None else None,
                    extend_select=tuple(extend_select),
                    ignore=tuple(ignore),
                ),
            )
        if max_helper_depth is not None:
            _check_depth(max_helper_depth, "--max-helper-depth", "the command line")
        return replace(
            self,
            layers=layers,
            exclude=tuple(exclude) if exclude is not None else self.exclude,
            extend_exclude=self.extend_exclude + tuple(extend_exclude),
            checkpoint_functions=tuple(
                sorted(set(self.checkpoint_functions) | set(checkpoint_functions))
            ),
            max_helper_depth=(
                max_helper_depth if max_helper_depth is not None else self.max_helper_depth
            ),
            cache_dir=os.path.abspath(cache_dir) if cache_dir else self.cache_dir,
        )

    def cache_directory(self) -> str:
        """Where the result cache lives for this configuration."""
        from ckptlint.cache import CACHE_DIR_NAME

        return self.cache_dir or os.path.join(self.project_root, CACHE_DIR_NAME)

    def describe(self) -> list[tuple[str, str]]:
        """The resolved settings, as ``--show-settings`` prints them."""
        return [
            ("config file", self.source or "(none: defaults)"),
            ("root", self.root),
            ("project root", self.project_root),
            ("cache dir", self.cache_directory()),
            ("enabled rules", " ".join(sorted(self.enabled()))),
            ("per-file-ignores", "; ".join(f"{p} = {' '.join(c)}" for p, c in self.per_file_ignores) or "(none)"),
            ("exclude", " ".join(self.exclude) or "(none)"),
            ("extend-exclude", " ".join(self.extend_exclude) or "(none)"),
            ("checkpoint-functions", " ".join(self.checkpoint_functions) or "(none)"),
            ("max-helper-depth", str(self.max_helper_depth)),
        ]

    def enabled(self) -> frozenset[str]:
        """The set of enabled rule codes after all selection layers."""
        return enabled_codes(self.layers)

    def exclude_matcher(self) -> "GlobMatcher":
        return GlobMatcher(self.exclude + self.extend_exclude, self.root)

    def ignored_for(self, path: str) -> tuple[str, ...]:
        """Selectors ignored for ``path`` by ``per-file-ignores``."""
        out: list[str] = []
        for pattern, codes in self.per_file_ignores:
            if GlobMatcher((pattern,), self.root).matches(path):
                out.extend(codes)
        return tuple(out)


# --------------------------------------------------------------------- codes


@lru_cache(maxsize=1)
def known_codes() -> frozenset[str]:
    """Every rule code ckptlint can emit (rules registry plus the tool's own).

    Read from the rule modules' file names (``ckp101_inplace_method_on_input.py``)
    without importing them: importing the registry loads libcst and the whole
    analysis, which a cached run otherwise never needs (~0.4 s).
    """
    import importlib.util
    import pkgutil

    codes = {"CKP001", "CKP002"}
    spec = importlib.util.find_spec("ckptlint.rules")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for info in pkgutil.iter_modules(locations):
        match = re.match(r"^ckp(\d{3})_", info.name)
        if match:
            codes.add("CKP" + match.group(1))
    if len(codes) > 2:
        return frozenset(codes)
    try:
        from ckptlint.rules import ALL_RULES
    except ImportError:
        # Only a broken install lacks the registry; the released codes are a
        # public contract, so selectors can still be checked against them.
        return frozenset(codes | set(_RELEASED_CODES))
    for rule in ALL_RULES:
        code = getattr(rule, "CODE", None)
        if isinstance(code, str):
            codes.add(code)
    return frozenset(codes)


def _selector_specificity(selector: str, code: str) -> int:
    """How specifically ``selector`` names ``code`` (0: not at all)."""
    if selector == "ALL":
        return 1
    if code.startswith(selector):
        return len(selector) + 1
    return 0


def validate_selectors(selectors: Iterable[str], where: str) -> None:
    """Raise :class:`ConfigError` for a selector that names no known code."""
    codes = known_codes()
    for selector in selectors:
        if not isinstance(selector, str):
            raise ConfigError(f"{where}: rule selector {selector!r} is not a string")
        if selector == "ALL":
            continue
        if not _CODE_SHAPE.match(selector) or not any(c.startswith(selector) for c in codes):
            raise ConfigError(
                f"{where}: unknown rule selector {selector!r} "
                f"(expected a code such as 'CKP101', a prefix such as 'CKP1', or 'ALL')"
            )


def enabled_codes(layers: Sequence[SelectionLayer], codes: Iterable[str] | None = None) -> frozenset[str]:
    """Apply selection layers in order, ruff style (more specific selector wins)."""
    all_codes = sorted(codes if codes is not None else known_codes())
    # Default: every rule except the opt-in unused-suppression report, which
    # --report-unused-ignores switches on separately.
    current = {c for c in all_codes if c != "CKP002"}
    for layer in layers:
        nxt: set[str] = set()
        selectors = (layer.select or ()) + layer.extend_select
        for code in all_codes:
            sel = max((_selector_specificity(s, code) for s in selectors), default=0)
            ign = max((_selector_specificity(s, code) for s in layer.ignore), default=0)
            if sel or ign:
                on = sel > ign
            else:
                on = layer.select is None and code in current
            if on:
                nxt.add(code)
        current = nxt
    return frozenset(current)


def code_matches(code: str, selectors: Iterable[str]) -> bool:
    """True when any selector (code, prefix or ``ALL``) names ``code``."""
    return any(_selector_specificity(s, code) for s in selectors)


# --------------------------------------------------------------------- globs


class GlobMatcher:
    """Match paths against ``exclude``/``per-file-ignores`` patterns.

    A pattern with a ``/`` is anchored at ``root``; one without matches any
    path segment (``__init__.py``, ``tests``, ``*_pb2.py``). A pattern matches
    a file when it matches the file or any folder above it, so ``tests``
    excludes everything below ``tests/``.
    """

    def __init__(self, patterns: Sequence[str], root: str = ".") -> None:
        self.root = os.path.abspath(root)
        anchored: list[str] = []
        floating: list[str] = []
        for pattern in patterns:
            p = pattern.replace(os.sep, "/")
            if p.startswith("./"):
                p = p[2:]
            p = p.rstrip("/")
            if not p:
                continue
            if "/" in p:
                if os.path.isabs(p):
                    # An absolute pattern is anchored at the filesystem root.
                    anchored.append(glob_to_regex(p))
                else:
                    anchored.append(glob_to_regex(self.root.replace(os.sep, "/").rstrip("/") + "/" + p))
            else:
                floating.append(glob_to_regex(p))
        self._anchored = re.compile("^(?:" + "|".join(anchored) + ")(?:/.*)?$") if anchored else None
        self._floating = re.compile("^(?:" + "|".join(floating) + ")$") if floating else None

    def __bool__(self) -> bool:
        return self._anchored is not None or self._floating is not None

    def matches(self, path: str) -> bool:
        full = os.path.abspath(path).replace(os.sep, "/")
        if self._anchored is not None and self._anchored.match(full):
            return True
        if self._floating is not None:
            # Only segments at or below the root take part: a project living
            # in /home/u/tests/ must not exclude itself through 'tests'.
            root = self.root.replace(os.sep, "/").rstrip("/") + "/"
            rel = full[len(root) :] if full.startswith(root) else full.lstrip("/")
            for segment in rel.split("/"):
                if self._floating.match(segment):
                    return True
        return False


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


def _check_dotted(name: str, key: str, value: Any, source: str) -> None:
    if not _DOTTED_NAME.match(name):
        raise ConfigError(
            f"{source} {key} = {value!r}: {name!r} is not a dotted qualified name "
            "(e.g. 'deepspeed.checkpointing.checkpoint')"
        )


def _check_depth(value: Any, key: str, source: str) -> None:
    # bool is an int subclass; max-helper-depth = true is a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_HELPER_DEPTH_LIMIT:
        raise ConfigError(
            f"{source} {key} = {value!r}: expected an integer from 0 to {MAX_HELPER_DEPTH_LIMIT}"
        )


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
