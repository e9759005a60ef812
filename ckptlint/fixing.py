"""The ``--fix``/``--unsafe-fixes``/``--diff`` loop: which files may be written, and when.

:mod:`ckptlint.fixes` splices edits into text; this module decides what is
done with the result. A file is rewritten only when all of these hold:

* it is reached as itself, not through a symbolic link to a file (a fix
  would replace the link by a copy), and has no other hard link;
* its resolved path lies inside one of the checked paths (a linked folder
  pointing outside the tree is never written through);
* it is writable as it is: a read-only file is reported, never ``chmod``-ed;
* the fixed text is accepted by libcst *and* by Python's ``compile()``;
* the file still holds the text the fixes were computed from.

One file reached through several paths (``legacy_models -> models``) is
edited once: findings are grouped by resolved path. A file that cannot be
fixed gets one line in :attr:`FixReport.failures` and keeps its findings;
the run goes on.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ckptlint.files import display_path
from ckptlint.fixes import (
    SourceFile,
    StaleFileError,
    applicable,
    apply_fixes,
    compile_problem,
    read_source,
    reparses,
    unified_diff,
    write_source,
)
from ckptlint.types import Finding

__all__ = ["FixReport", "WriteGuard", "fix_passes", "MAX_FIX_PASSES"]

# Fixes on one expression can only be applied one at a time (the second needs
# fresh positions); a handful of passes settles every real file.
MAX_FIX_PASSES = 8

_READ_ERRORS = (OSError, SyntaxError, UnicodeDecodeError, LookupError)


@dataclass
class FixReport:
    """What ``--fix``/``--diff`` did."""

    applied: list[Finding] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)
    changed_files: list[str] = field(default_factory=list)
    # (path, why): a fix that would break the file, a file that may not or
    # could not be written, or edits outside it.
    failures: list[tuple[str, str]] = field(default_factory=list)


class WriteGuard:
    """Which files a fix may touch: inside the checked roots, never through a link."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = tuple(sorted({os.path.realpath(r) for r in (roots or ["."])}))

    def inside(self, real: str) -> bool:
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots)

    def refusal(self, path: str, *, writing: bool) -> str | None:
        """Why ``path`` may not be fixed, or ``None``. ``writing=False`` (``--diff``)
        skips the permission checks: showing a fix writes nothing."""
        if os.path.islink(path):
            return (
                f"not fixed: it is a symbolic link to {os.path.realpath(path)!r}; rewriting it would "
                "replace the link by a copy (fix the file it points to)"
            )
        real = os.path.realpath(path)
        if not self.inside(real):
            return f"not fixed: it resolves to {real!r}, outside the checked paths (reached through a linked folder)"
        try:
            st = os.stat(real)
        except OSError as exc:
            return f"not fixed: cannot stat it: {exc.strerror}"
        if not stat.S_ISREG(st.st_mode):
            return "not fixed: not a regular file"
        if st.st_nlink > 1:
            return (
                f"not fixed: the file has {st.st_nlink} hard links; replacing it would leave the other "
                "names with the old text (fix it where you keep it)"
            )
        if writing and (not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(real, os.W_OK)):
            return "not fixed: the file is read-only (ckptlint never changes permissions; make it writable to fix it)"
        return None


def _canonical(paths: Sequence[str]) -> str:
    """The path to write a file through: not a link, ideally with no linked folder on the way."""

    def rank(p: str) -> tuple[bool, bool, str]:
        return (os.path.islink(p), os.path.realpath(p) != os.path.abspath(p), p)

    return min(paths, key=rank)


def fix_passes(
    roots: Sequence[str],
    files: Sequence[str],
    *,
    unsafe: bool,
    write: bool,
    diff: bool,
    lint: Callable[[dict[str, str]], tuple[list[Finding], list[Finding]]],
) -> tuple[list[Finding], list[Finding], FixReport]:
    """Lint, fix, re-lint until nothing applicable is left (at most ``MAX_FIX_PASSES``).

    ``lint(overlay)`` returns (kept, suppressed) findings with ``overlay``'s
    texts (path spelling -> text) standing in for the files on disk. With
    ``write`` the fixed files are written (and the overlay stays empty);
    otherwise (``--diff``) the fixed texts live only in the overlay. With
    ``diff`` a unified diff per changed file is kept. Returns the final findings and what was done.
    """
    guard = WriteGuard(roots)
    report = FixReport()
    # Only the files being checked are rewritten: a hazard found in a file
    # imported from elsewhere is reported, never silently edited.
    spellings: dict[str, list[str]] = {}  # resolved path -> every checked path reaching it
    real_of: dict[str, str] = {}  # finding path (display form) -> resolved path
    for f in files:
        real = os.path.realpath(f)
        spellings.setdefault(real, []).append(f)
        real_of[display_path(f)] = real
    originals: dict[str, SourceFile] = {}
    current: dict[str, str] = {}  # resolved path -> its text now (on disk or in the overlay)
    shown: dict[str, str] = {}  # resolved path -> the path named in messages and diffs
    broken: set[str] = set()
    overlay: dict[str, str] = {}
    findings, hidden = lint(overlay)
    for _ in range(MAX_FIX_PASSES):
        groups: dict[str, list[Finding]] = {}
        for f in findings:
            real = real_of.get(f.path)
            if real is not None and real not in broken and applicable(f, unsafe=unsafe):
                groups.setdefault(real, []).append(f)
        if not groups:
            break
        changed_any = False
        for real, group in sorted(groups.items()):
            target = _canonical(spellings[real])
            name = shown.setdefault(real, display_path(target))
            if real not in originals:
                source, why = _open(guard, target, write)
                if source is None:
                    report.failures.append((name, why or "not fixed"))
                    broken.add(real)
                    continue
                originals[real] = source
                current[real] = source.text
            text = current[real]
            # The findings of every path reaching this file are spliced into
            # one text: identical fixes count once, clashing ones wait a pass.
            outcome = apply_fixes(text, group)
            for finding, why in outcome.invalid:
                report.failures.append((name, f"{finding.code} fix not applied: {why}"))
            if not outcome.applied or outcome.text == text:
                continue
            why = _verify(text, outcome.text, name)
            if why is None and write:
                why = _write(guard, target, SourceFile(outcome.text, originals[real].encoding), text)
            if why is not None:
                report.failures.append((name, why))
                broken.add(real)
                continue
            if not write:
                for path in spellings[real]:
                    for key in _path_keys(path):
                        overlay[key] = outcome.text
            current[real] = outcome.text
            report.applied.extend(outcome.applied)
            changed_any = True
        if not changed_any:
            break
        # Written to disk: the next pass reads (and caches) the real files.
        findings, hidden = lint({} if write else overlay)
    for real in sorted(originals, key=lambda r: shown[r]):
        if current[real] != originals[real].text:
            report.changed_files.append(shown[real])
            if diff:
                report.diffs.append(unified_diff(shown[real], originals[real].text, current[real]))
    return findings, hidden, report


def _open(guard: WriteGuard, target: str, write: bool) -> tuple[SourceFile | None, str | None]:
    """The file's text, or why it may not or cannot be fixed."""
    why = guard.refusal(target, writing=write)
    if why is not None:
        return None, why
    try:
        return read_source(target), None
    except _READ_ERRORS as exc:
        return None, f"cannot read for fixing: {exc}"


def _write(guard: WriteGuard, target: str, source: SourceFile, expected: str) -> str | None:
    """Write the fixed file; ``None`` when done, else why not (the file is then untouched)."""
    why = guard.refusal(target, writing=True)  # again: the tree may have changed during the run
    if why is not None:
        return why
    try:
        write_source(target, source, expected=expected)
    except StaleFileError as exc:
        return f"not fixed: {exc}"
    except _READ_ERRORS as exc:
        return f"not fixed: cannot write it: {getattr(exc, 'strerror', None) or exc}"
    return None


def _verify(before: str, after: str, name: str) -> str | None:
    """Why the fixed text ``after`` may not be written, or ``None``."""
    problem = reparses(after)
    if problem is not None:
        return f"fixes not applied: the fixed file would not parse ({problem})"
    problem = compile_problem(after, name)
    if problem is None:
        return None
    original = compile_problem(before, name)
    if original is not None:
        # libcst parses syntax newer than this interpreter (PEP 695 ...): then
        # compile() cannot vouch for the fix, and an unverified fix is not written.
        return (
            f"fixes not applied: Python {sys.version_info[0]}.{sys.version_info[1]} cannot compile the file as it is "
            f"({original}), so the fixed text cannot be verified; run --fix under the Python the code is written for"
        )
    return f"fixes not applied: the fixed file would not compile ({problem})"


def _path_keys(path: str) -> set[str]:
    """The spellings under which the engine may look ``path`` up."""
    return {path, os.path.normpath(path), os.path.abspath(path), display_path(path)}
