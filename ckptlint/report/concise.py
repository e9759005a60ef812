"""``--output-format concise``: one line per finding, as ruff's concise format."""

from __future__ import annotations

from typing import Sequence

from ckptlint.report.text import fix_hint, fixable_marker, summary_line
from ckptlint.types import Finding

__all__ = ["format_concise"]


def format_concise(
    findings: Sequence[Finding],
    files_checked: int | None = None,
    *,
    unsafe_fixes: bool = False,
    quiet: bool = False,
) -> str:
    """``path:line:col: CODE [*] message`` per finding (1-based column), then the summary unless ``quiet``."""
    out = [f"{f.path}:{f.line}:{f.column + 1}: {f.code} {fixable_marker(f, unsafe_fixes)}{f.message}" for f in findings]
    if not quiet:
        out.append(summary_line(len(findings), files_checked))
        hint = fix_hint(findings, unsafe_fixes)
        if hint:
            out.append(hint)
    return "".join(line + "\n" for line in out)
