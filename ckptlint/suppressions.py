"""CKP002 unused-suppression: a suppression comment that silences nothing.

What it flags
-------------
A ``# ckptlint: ignore[CODE,...]`` (or ``# noqa: CODE``) comment that names a
ckptlint code for which no finding exists on that statement. Reported only
with ``--report-unused-ignores``.

Why it matters
--------------
A stale suppression hides the next real hazard on that line: once the code it
silenced is fixed, the comment keeps silencing whatever appears there later
(a gradient checkpointing hazard is silent at runtime, so a wrongly suppressed
one goes unnoticed until gradients are wrong).

How to fix
----------
Delete the comment, or the codes in it that no longer apply.

Example
-------
::

    def forward(self, x):
        return x * 2  # ckptlint: ignore[CKP101]   <- CKP002: nothing to ignore here

Suppression syntax
------------------
* ``# ckptlint: ignore[CKP101,CKP2]`` — ignore those codes (full codes or
  prefixes) on this statement. ``# ckptlint: ignore`` without brackets
  ignores every ckptlint code there.
* ``# noqa: CKP101`` — the flake8/ruff spelling, same effect. Codes of other
  linters in the same comment (``# noqa: E501, CKP101``) are left to them.
* A bare ``# noqa`` (no codes) is *not* honoured unless ``--honor-bare-noqa``
  is given: bare noqa is almost always written for another linter, and a
  gradient checkpointing hazard is too costly to hide by accident.
* ``# ckptlint: skip-file`` anywhere in a file skips the whole file.

A comment applies to a finding when it sits on any line of the statement
holding the finding (so a multi-line call can carry it on its last line).
Comments are found with :mod:`tokenize`, so a ``#`` inside a string never
counts.
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass, field

from ckptlint.types import Finding

__all__ = [
    "CODE",
    "NAME",
    "MESSAGE",
    "EVENT",
    "VALID",
    "INVALID",
    "Directive",
    "FileSuppressions",
    "parse_suppressions",
    "apply_suppressions",
]

CODE = "CKP002"
NAME = "unused-suppression"
MESSAGE = "unused suppression {comment!r}: no {codes} finding on this statement; remove it"
# Not produced by the engine's rule events but by the runner after
# suppressions are applied: the engine's rule-case collection skips it, and
# tests/cli_features/test_runner.py covers it end to end.
EVENT = "none"
VALID: list[str] = []
INVALID: list[str] = []

_CODE_LIST = r"[A-Za-z]+[0-9]*(?:\s*[,\s]\s*[A-Za-z]+[0-9]*)*"
_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>" + _CODE_LIST + r"))?", re.IGNORECASE)
_IGNORE = re.compile(r"#\s*ckptlint:\s*ignore(?:\[(?P<codes>[^\]]*)\]|(?![\w-]))")
_SKIP_FILE = re.compile(r"#\s*ckptlint:\s*skip-file\b")
_OUR_CODE = re.compile(r"^CKP[0-9]{0,3}$")
_MAY_HOLD = re.compile(r"ckptlint|noqa", re.IGNORECASE)  # in every directive above


@dataclass
class Directive:
    """One suppression comment (or the ckptlint part of one)."""

    line: int
    column: int  # 0-based column of the directive's ``#``
    end_column: int
    kind: str  # "ignore" or "noqa"
    text: str  # the directive as written, for messages
    codes: tuple[str, ...] | None  # None: every ckptlint code (bare form)
    used: set[str] = field(default_factory=set)

    def covers(self, code: str) -> str | None:
        """The selector of this directive that names ``code`` (or ``"*"``)."""
        if self.codes is None:
            return "*"
        for selector in self.codes:
            if code.startswith(selector):
                return selector
        return None


@dataclass
class FileSuppressions:
    """The suppression comments of one file, by line."""

    skip_file: bool = False
    by_line: dict[int, list[Directive]] = field(default_factory=dict)

    def directives(self) -> list[Directive]:
        return [d for line in sorted(self.by_line) for d in self.by_line[line]]


def _comments(source: str) -> list[tuple[int, int, str]]:
    """(line, column, text) of every comment, as tokenize sees them.

    A file that stops tokenizing part-way (it will be CKP001) still yields the
    comments before the error.
    """
    out: list[tuple[int, int, str]] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out.append((tok.start[0], tok.start[1], tok.string))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


def parse_suppressions(source: str, *, honor_bare_noqa: bool = False) -> FileSuppressions:
    """Find the ckptlint suppression directives in ``source``."""
    result = FileSuppressions()
    if not _MAY_HOLD.search(source):
        return result  # no directive can be there: skip the tokenizer (most of a big tree's files)
    for line, col, text in _comments(source):
        if _SKIP_FILE.search(text):
            result.skip_file = True
            continue
        for match in _IGNORE.finditer(text):
            raw = match.group("codes")
            codes: tuple[str, ...] | None
            if raw is None:
                codes = None
            else:
                codes = tuple(c.upper() for c in re.split(r"[,\s]+", raw.strip()) if c)
                if not codes:
                    codes = None
            result.by_line.setdefault(line, []).append(
                Directive(line, col + match.start(), col + match.end(), "ignore", match.group(0), codes)
            )
        for match in _NOQA.finditer(text):
            raw = match.group("codes")
            if raw is None:
                if not honor_bare_noqa:
                    continue
                codes = None
            else:
                ours = tuple(c.upper() for c in re.split(r"[,\s]+", raw.strip()) if _OUR_CODE.match(c.upper()))
                if not ours:
                    # "# noqa: E501" is another linter's business.
                    continue
                codes = ours
            result.by_line.setdefault(line, []).append(
                Directive(line, col + match.start(), col + match.end(), "noqa", match.group(0), codes)
            )
    return result


def _lines_of(finding: Finding) -> range:
    first, last = finding.statement_lines or (finding.line, finding.line)
    first = min(first, finding.line)
    last = max(last, finding.line)
    return range(first, last + 1)


def apply_suppressions(
    findings: list[Finding], suppressions: FileSuppressions
) -> tuple[list[Finding], list[Finding]]:
    """Split one file's findings into (kept, suppressed), marking directives used."""
    if suppressions.skip_file:
        return [], list(findings)
    kept: list[Finding] = []
    hidden: list[Finding] = []
    for finding in findings:
        suppressed = False
        for line in _lines_of(finding):
            for directive in suppressions.by_line.get(line, ()):
                selector = directive.covers(finding.code)
                if selector is not None:
                    directive.used.add(selector)
                    suppressed = True
        (hidden if suppressed else kept).append(finding)
    return kept, hidden


def unused_findings(
    path: str, suppressions: FileSuppressions, enabled: frozenset[str]
) -> list[Finding]:
    """CKP002 findings for directives (or codes in them) that silenced nothing.

    Codes whose rule is not enabled in this run are not reported: the comment
    may well be needed under another configuration.
    """
    if suppressions.skip_file:
        return []
    out: list[Finding] = []
    for directive in suppressions.directives():
        if directive.codes is None:
            if directive.used or directive.kind == "noqa":
                # A bare noqa may serve other linters; never call it unused.
                continue
            unused = ["any"]
        else:
            unused = [
                c
                for c in directive.codes
                if c not in directive.used and any(e.startswith(c) for e in enabled)
            ]
        if not unused:
            continue
        codes = ", ".join(unused)
        out.append(
            Finding(
                code=CODE,
                message=MESSAGE.format(comment=directive.text, codes=codes),
                path=path,
                line=directive.line,
                column=directive.column,
                end_line=directive.line,
                end_column=directive.end_column,
                statement_lines=(directive.line, directive.line),
            )
        )
    return out
