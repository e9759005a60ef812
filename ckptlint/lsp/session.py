"""What the language server checks, with no LSP in it: open buffers in,
findings per file out, through the same runner ``ckptlint check`` uses.

An editor holds a few open files whose text may differ from the disk. Each
check runs over the open files and the Python files beside them (so that a
``Block`` defined in ``blocks.py`` and checkpointed from ``model.py`` in the
same folder is seen from either side), with every open buffer overlaying the
disk. Files are grouped by their configuration, so each is checked under its
own project's ``[tool.ckptlint]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from ckptlint.config import Config, ConfigError, load_config
from ckptlint.fixes import applicable, apply_fixes, reparses
from ckptlint.runner import RunSettings, run
from ckptlint.types import Finding

__all__ = ["CheckOutcome", "check_documents", "fix_all"]


@dataclass(frozen=True)
class CheckOutcome:
    """Findings keyed by absolute path, and one-line problems (bad config, internal errors)."""

    findings: Mapping[str, tuple[Finding, ...]]
    problems: tuple[str, ...]


def _siblings(path: str) -> list[str]:
    folder = os.path.dirname(path)
    try:
        names = os.listdir(folder)
    except OSError:  # the folder itself was deleted
        return []
    return [os.path.join(folder, n) for n in names if n.endswith(".py") and os.path.isfile(os.path.join(folder, n))]


def _config_for(path: str) -> Config:
    return load_config([path if os.path.exists(path) else os.path.dirname(path) or "."])


def check_documents(documents: Mapping[str, str], *, use_cache: bool = True) -> CheckOutcome:
    """Check the open ``documents`` (absolute path -> text) and their siblings."""
    groups: dict[str, tuple[Config, list[str]]] = {}
    problems: list[str] = []
    for path in sorted(documents):
        try:
            config = _config_for(path)
        except ConfigError as exc:
            problems.append(f"ckptlint: {exc}")
            continue
        key = config.source or config.project_root
        groups.setdefault(key, (config, []))[1].append(path)
    findings: dict[str, list[Finding]] = {}
    for config, paths in groups.values():
        on_disk = sorted({s for p in paths for s in _siblings(p)} - set(paths))
        settings = RunSettings(
            config=config,
            jobs=1,
            use_cache=use_cache,
            sources={p: documents[p] for p in paths},
        )
        result = run(on_disk, settings)
        for path, error in result.errors:
            problems.append(f"ckptlint: internal error while checking {path}: {error.strip().splitlines()[-1]}")
        for finding in result.findings:
            findings.setdefault(os.path.abspath(finding.path), []).append(finding)
    return CheckOutcome({p: tuple(fs) for p, fs in findings.items()}, tuple(problems))


def fix_all(text: str, findings: tuple[Finding, ...], *, unsafe: bool = False) -> str | None:
    """``text`` with every applicable fix applied (as one ``--fix`` pass does), or None if nothing changes."""
    todo = [f for f in findings if applicable(f, unsafe=unsafe)]
    if not todo:
        return None
    outcome = apply_fixes(text, todo)
    if not outcome.applied or outcome.text == text or reparses(outcome.text) is not None:
        return None
    return outcome.text
