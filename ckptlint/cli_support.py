"""The parts of the command line that ruff users expect and that are not the
run itself: stdin, ``--show-settings``/``--show-files``, ``ckptlint clean``,
colour choice and the rule list as JSON. No analysis here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, TextIO

from ckptlint.config import Config

if TYPE_CHECKING:
    from ckptlint.runner import RunResult, RunSettings

__all__ = [
    "STDIN",
    "CACHE_DIR_ENV",
    "clean",
    "fix_in_memory",
    "read_stdin",
    "rules_json",
    "show_files",
    "show_settings",
    "use_color",
]

STDIN = "-"
CACHE_DIR_ENV = "CKPTLINT_CACHE_DIR"
# The name findings carry when stdin comes without --stdin-filename.
STDIN_DISPLAY = "-"


def read_stdin(stream: TextIO | None = None) -> str:
    """The whole of stdin as text, decoded as Python decodes a source file."""
    from ckptlint.project import decode_source

    stream = stream or sys.stdin
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        return decode_source(buffer.read())
    return stream.read()


def use_color(choice: str, stream: TextIO) -> bool:
    """``--color`` first; in ``auto``: ``NO_COLOR`` off, then ``FORCE_COLOR`` on, then is it a terminal."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return stream.isatty()


def show_settings(config: Config, target: str, out: TextIO) -> None:
    out.write(f"Resolved settings for: {target}\n")
    rows = config.describe()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.write(f"  {key:<{width}}  {value}\n")


def show_files(files: Sequence[str], out: TextIO) -> None:
    from ckptlint.files import display_path

    for path in files:
        out.write(display_path(path) + "\n")


def _is_ckptlint_cache(folder: Path) -> bool:
    tag = folder / "CACHEDIR.TAG"
    try:
        return "ckptlint" in tag.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def clean(configs: Sequence[Config], quiet: bool, err: TextIO) -> int:
    """Remove each configuration's cache folder; refuse a folder ckptlint did not create."""
    status = 0
    for folder in sorted({Path(c.cache_directory()) for c in configs}):
        if not folder.exists():
            continue
        if not _is_ckptlint_cache(folder):
            err.write(f"ckptlint: error: {str(folder)!r} is not a ckptlint cache (no CACHEDIR.TAG written by ckptlint); not removed\n")
            status = 2
            continue
        if not quiet:
            err.write(f"Removing cache at: {folder}\n")
        shutil.rmtree(folder, ignore_errors=True)
    return status


def rules_json(modules: Sequence[object]) -> str:
    """``ckptlint rule --all --output-format json``: one object per rule."""
    from ckptlint.rules import rule_doc

    items = []
    for m in modules:
        doc = rule_doc(m)  # type: ignore[arg-type]
        first = doc.splitlines()[0] if doc else ""
        items.append(
            {
                "code": m.CODE,  # type: ignore[attr-defined]
                "name": m.NAME,  # type: ignore[attr-defined]
                "summary": first.split(": ", 1)[-1],
                "explanation": doc,
            }
        )
    return json.dumps(items, indent=2) + "\n"


def fix_in_memory(path: str, text: str, settings: "RunSettings", *, unsafe: bool) -> tuple[str, "RunResult", int]:
    """``--fix`` for a source that lives only in memory (stdin): pass after pass, as
    the runner fixes files, but nothing is written. Returns the fixed text, the
    final run's result and how many findings were fixed.
    """
    from dataclasses import replace

    from ckptlint.files import display_path
    from ckptlint.fixes import applicable, apply_fixes, compile_problem, reparses
    from ckptlint.fixing import MAX_FIX_PASSES
    from ckptlint.runner import run

    lint = replace(settings, fix=False, unsafe_fixes=False, diff=False)
    shown = display_path(path)
    fixed = 0
    for _ in range(MAX_FIX_PASSES):
        result = run([], replace(lint, sources={path: text}))
        todo = [f for f in result.findings if f.path == shown and applicable(f, unsafe=unsafe)]
        if not todo:
            break
        outcome = apply_fixes(text, todo)
        if not outcome.applied or outcome.text == text:
            break
        if reparses(outcome.text) is not None or compile_problem(outcome.text, path) is not None:
            break  # as for files: a fix that Python would not compile is never applied
        text = outcome.text
        fixed += len({f.fix for f in outcome.applied})
    else:
        result = run([], replace(lint, sources={path: text}))
    return text, result, fixed
