"""GitHub Actions workflow commands (``--format github``): PR annotations.

One line per finding::

    ::error file=src/model.py,line=12,col=5,endLine=12,endColumn=19,title=CKP101::message

escaped exactly as ``@actions/core`` does (``toCommandValue`` then
``escapeProperty``/``escapeData``): in the message ``%``, CR and LF become
``%25``, ``%0D``, ``%0A``; in property values additionally ``:`` and ``,``
become ``%3A`` and ``%2C``. Other control characters, bidi controls and
undecodable bytes of file names are shown as ``\\x1b``-style escapes (the log
is read in a terminal-like viewer). Columns are 1-based.
"""

from __future__ import annotations

from typing import Sequence

from ckptlint.report.escape import printable
from ckptlint.types import Finding

__all__ = ["escape_data", "escape_property", "render", "annotation"]


def escape_data(text: str) -> str:
    """Escape a workflow command's message (other control characters: see :func:`printable`)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return printable(text)


def escape_property(text: str) -> str:
    """Escape a workflow command's property value."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(finding: Finding, level: str = "error") -> str:
    """The workflow command line for one finding (no trailing newline)."""
    props = [
        ("file", finding.path.replace("\\", "/")),
        ("line", str(finding.line)),
        ("col", str(finding.column + 1)),
        ("endLine", str(max(finding.end_line, finding.line))),
        ("endColumn", str(finding.end_column + 1)),
        ("title", finding.code),
    ]
    joined = ",".join(f"{key}={escape_property(value)}" for key, value in props)
    return f"::{level} {joined}::{escape_data(finding.message)}"


def render(findings: Sequence[Finding]) -> str:
    """All findings as workflow commands, one per line."""
    return "".join(
        annotation(f, "warning" if f.code == "CKP002" else "error") + "\n" for f in findings
    )
