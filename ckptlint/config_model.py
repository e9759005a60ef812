"""The configuration as values: :class:`Config`, its :class:`Budgets`, and the
:class:`GlobMatcher` its path patterns use.

:meth:`Config.with_cli` validates the command-line layer it adds; reading and
validating ``[tool.ckptlint]`` itself is :mod:`ckptlint.config`'s, and that is
where callers import these names from.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from ckptlint.config_selection import (
    ConfigError,
    SelectionLayer,
    enabled_codes,
    validate_selectors,
)
from ckptlint.files import glob_to_regex

__all__ = ["Budgets", "Config", "GlobMatcher", "DEFAULT_MAX_HELPER_DEPTH", "MAX_HELPER_DEPTH_LIMIT"]

DEFAULT_MAX_HELPER_DEPTH = 3
# A helper chain deeper than this would make analysis time explode on large
# trees and no real model nests checkpointed helpers that deep.
MAX_HELPER_DEPTH_LIMIT = 20

_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


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
