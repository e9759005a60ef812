"""Applying the fixes findings carry: ``--fix``, ``--unsafe-fixes``, ``--diff``.

Rules compute each :class:`~ckptlint.types.Fix` with libcst over the exact
range of the original node, so formatting and comments outside that range are
untouched; this module only splices those textual edits into the source,
refuses overlapping ones (they are retried on the next pass, after a fresh
lint), checks that the result still parses and compiles (libcst accepts some
text Python rejects, such as a repeated keyword argument), and writes files
atomically in their original encoding and newline style. Which files may be
written at all (symlinks, roots, permissions) is :mod:`ckptlint.fixing`'s
business.
"""

from __future__ import annotations

import codecs
import difflib
import io
import os
import re
import stat
import tokenize
from dataclasses import dataclass
from typing import Iterable, Sequence

from ckptlint.atomic import replace_atomically
from ckptlint.types import Edit, Finding, Fix

__all__ = [
    "SourceFile",
    "FixOutcome",
    "StaleFileError",
    "applicable",
    "apply_fixes",
    "compile_problem",
    "read_source",
    "write_source",
    "unified_diff",
    "reparses",
]

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class SourceFile:
    """A file's text with what is needed to write it back byte-faithfully."""

    text: str
    encoding: str  # as Python names it; "utf-8-sig" keeps a BOM


def read_source(path: str) -> SourceFile:
    """Read ``path`` honouring its PEP 263 coding cookie and BOM, newlines kept."""
    with open(path, "rb") as fh:
        raw = fh.read()
    encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    if encoding == "utf-8" and raw.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    # Decoding bytes (not text-mode open) keeps "\r\n" as it is.
    return SourceFile(raw.decode(encoding), encoding)


class StaleFileError(OSError):
    """The file on disk is no longer the text the fixes were computed from."""


def write_source(path: str, source: SourceFile, *, expected: str | None = None) -> None:
    """Replace ``path`` atomically, keeping its permission bits (and owner, where allowed).

    The new text goes to a temporary file in the same folder, is flushed and
    fsync-ed, and then renamed over the file (``os.replace``), so a crash or a
    full disk leaves either the old or the new file, never half of one. With
    ``expected``, the file is left alone (:class:`StaleFileError`) when its
    current text differs: something else edited it since it was read.
    """
    data = source.text.encode(source.encoding)
    real = os.path.realpath(path)
    if expected is not None and read_source(real).text != expected:
        raise StaleFileError(f"{path} changed on disk while it was being fixed")
    st = os.stat(real)
    replace_atomically(real, data, mode=stat.S_IMODE(st.st_mode), owner=(st.st_uid, st.st_gid))


def applicable(finding: Finding, *, unsafe: bool) -> bool:
    """Whether ``finding``'s fix may be applied in this mode."""
    fix = finding.fix
    if fix is None or not fix.edits:
        return False
    return fix.applicability == "safe" or (unsafe and fix.applicability == "unsafe")


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for match in _LINE_END.finditer(text):
        starts.append(match.end())
    return starts


def _offset(starts: list[int], text: str, line: int, column: int) -> int:
    if line < 1 or line > len(starts):
        raise ValueError(f"line {line} outside the file (1..{len(starts)})")
    base = starts[line - 1]
    limit = starts[line] if line < len(starts) else len(text)
    if column < 0 or base + column > limit:
        raise ValueError(f"column {column} outside line {line}")
    return base + column


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    (s1, e1), (s2, e2) = a, b
    if s1 == e1 and s2 == e2:
        # Two insertions at one point: their order would be arbitrary.
        return s1 == s2
    if s1 == e1:
        return s2 < s1 < e2
    if s2 == e2:
        return s1 < s2 < e1
    return s1 < e2 and s2 < e1


@dataclass(frozen=True)
class FixOutcome:
    """What one pass of :func:`apply_fixes` did to one file."""

    text: str
    applied: tuple[Finding, ...]
    deferred: tuple[Finding, ...]  # overlapped an applied fix; retry next pass
    invalid: tuple[tuple[Finding, str], ...]  # edits outside the file


def apply_fixes(text: str, findings: Sequence[Finding]) -> FixOutcome:
    """Splice the edits of ``findings``' fixes into ``text``.

    Fixes are taken in source order; a fix whose edits overlap one already
    taken is deferred, never merged, because two rewrites of one expression
    cannot both be right without re-analysis. A fix is all-or-nothing.
    """
    starts = _line_starts(text)
    taken: list[tuple[int, int, str]] = []
    applied: list[Finding] = []
    deferred: list[Finding] = []
    invalid: list[tuple[Finding, str]] = []
    seen: set[Fix] = set()
    ordered = sorted(
        (f for f in findings if f.fix is not None),
        key=lambda f: (min(f.fix.edits) if f.fix and f.fix.edits else Edit(0, 0, 0, 0, ""), f.sort_key()),
    )
    for finding in ordered:
        fix = finding.fix
        assert fix is not None
        if fix in seen:
            # The same rewrite reported twice (one hazard seen from two
            # checkpoint sites) counts as applied once.
            applied.append(finding)
            continue
        try:
            spans = [
                (
                    _offset(starts, text, e.start_line, e.start_column),
                    _offset(starts, text, e.end_line, e.end_column),
                    e.replacement,
                )
                for e in fix.edits
            ]
        except ValueError as exc:
            invalid.append((finding, str(exc)))
            continue
        if any(s > e for s, e, _ in spans):
            invalid.append((finding, "edit ends before it starts"))
            continue
        own_clash = any(
            _overlaps((a[0], a[1]), (b[0], b[1])) for i, a in enumerate(spans) for b in spans[i + 1 :]
        )
        if own_clash:
            invalid.append((finding, "the fix's own edits overlap"))
            continue
        if any(_overlaps((s, e), (ts, te)) for s, e, _ in spans for ts, te, _ in taken):
            deferred.append(finding)
            continue
        taken.extend(spans)
        applied.append(finding)
        seen.add(fix)
    out = text
    # Splice from the end so earlier offsets stay valid.
    for s, e, replacement in sorted(taken, key=lambda t: (t[0], t[1]), reverse=True):
        out = out[:s] + replacement + out[e:]
    return FixOutcome(out, tuple(applied), tuple(deferred), tuple(invalid))


def reparses(text: str) -> str | None:
    """``None`` when ``text`` parses with libcst, else the parser's message."""
    import libcst  # only when fixing: a plain check may never need it

    try:
        libcst.parse_module(text)
    except libcst.ParserSyntaxError as exc:
        return f"{exc.message} at {exc.raw_line}:{exc.raw_column + 1}"
    except Exception as exc:  # libcst raises a few other types on odd input
        return f"{type(exc).__name__}: {exc}"
    return None


def compile_problem(text: str, path: str) -> str | None:
    """``None`` when Python's own ``compile()`` accepts ``text``, else its message.

    libcst's parser is more permissive than CPython's compiler (a repeated
    keyword argument, ``return`` outside a function, a bad assignment target
    parse fine), so a fixed file is written only when both accept it.
    """
    try:
        compile(text, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f" at {exc.lineno}:{exc.offset}" if exc.lineno is not None else ""
        return f"{exc.msg}{where}"
    except (ValueError, RecursionError, MemoryError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def unified_diff(path: str, before: str, after: str) -> str:
    """A ``git diff``-style unified diff of one file's fix."""
    a = before.splitlines(keepends=True)
    b = after.splitlines(keepends=True)
    lines = list(difflib.unified_diff(a, b, fromfile=f"a/{path}", tofile=f"b/{path}"))
    out: list[str] = []
    for line in lines:
        if not line.endswith(("\n", "\r")):
            out.append(line + "\n\\ No newline at end of file\n")
        else:
            out.append(line)
    return "".join(out)


def group_by_path(findings: Iterable[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for finding in findings:
        out.setdefault(finding.path, []).append(finding)
    return out
