"""flake8 entry point: ``flake8 --select CKP`` reports ckptlint's findings.

flake8 checks one file at a time, so this plugin analyses the file flake8
hands it as the only driver; classes and helpers it imports from sibling
files are still resolved from disk. What flake8's model cannot give is a
finding located in another file: a hazard in ``blocks.py`` whose class is
only checkpointed from ``model.py`` is found while checking ``model.py``, but
flake8 shows a plugin's results only for the file being checked, so it is
dropped (and ``blocks.py`` on its own has no checkpoint call). Run ``ckptlint
check`` (or its pre-commit hook) for whole-tree results; use this plugin to
see the CKP codes inline with the rest of a flake8 setup.

Suppression is flake8's own (``# noqa: CKP101``); ckptlint's
``[tool.ckptlint]`` rule selection is not consulted (use flake8's
``--select``/``--extend-ignore``), but ``checkpoint-functions`` and
``max-helper-depth`` are read from it.
"""

from __future__ import annotations

import ast
import os
from functools import lru_cache
from typing import Any, Iterator, Sequence

__all__ = ["Plugin"]


@lru_cache(maxsize=64)
def _options_for(folder: str) -> Any:
    """Engine options from the ``[tool.ckptlint]`` governing ``folder`` (read once per folder)."""
    from ckptlint import engine
    from ckptlint.config import Config, ConfigError, load_config

    try:
        config = load_config([folder])
    except ConfigError:
        # flake8 has no channel for a ckptlint config problem; run with
        # defaults rather than hide every finding.
        config = Config()
    return engine.EngineOptions(
        checkpoint_functions=tuple(config.checkpoint_functions),
        max_helper_depth=config.max_helper_depth,
    )


class Plugin:
    """flake8 plugin class (registered under the ``CKP`` prefix)."""

    name = "ckptlint"
    # flake8 reads ``version`` as a class attribute.
    from ckptlint import __version__ as version

    def __init__(self, tree: ast.AST, filename: str, lines: Sequence[str]) -> None:
        self.filename = filename
        self.lines = lines

    def run(self) -> Iterator[tuple[int, int, str, type[Any]]]:
        from ckptlint import engine
        from ckptlint.files import display_path

        source = "".join(self.lines)
        path = os.path.normpath(self.filename)
        options = _options_for(os.path.dirname(os.path.abspath(path)))
        if not engine.may_reach_checkpoint(source, options):
            return
        project = engine.Project([path], sources={path: source})
        result = engine.analyze_file(project, path, options)
        here = display_path(path)
        seen: set[tuple[int, int, str]] = set()
        for finding in sorted(result.findings, key=lambda f: f.sort_key()):
            if finding.path != here:
                continue
            message = finding.message
            if not message.startswith(finding.code):
                message = f"{finding.code} {message}"
            key = (finding.line, finding.column, message)
            if key in seen:
                continue
            seen.add(key)
            # flake8 wants a 0-based column, as ckptlint keeps it inside.
            yield finding.line, finding.column, message, type(self)
