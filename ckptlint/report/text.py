"""Default output, shaped like ruff's: location, code, message, source line, caret."""

from __future__ import annotations

from typing import Callable, Sequence

from ckptlint.report.escape import printable
from ckptlint.types import Finding

__all__ = ["fix_hint", "fixable_marker", "format_text", "summary_line"]

_BOLD = "\x1b[1m"
_RED = "\x1b[31m"
_CYAN = "\x1b[36m"
_BLUE = "\x1b[34m"
_RESET = "\x1b[0m"


def fixable_marker(f: Finding, unsafe_fixes: bool = False) -> str:
    """``"[*] "`` when ``--fix`` (or ``--unsafe-fixes``, if given) would fix ``f``, as ruff marks it."""
    fix = f.fix
    if fix is None or not fix.edits:
        return ""
    return "[*] " if fix.applicability == "safe" or unsafe_fixes else ""


def fix_hint(findings: Sequence[Finding], unsafe_fixes: bool = False) -> str | None:
    """The closing line: how many findings ``--fix`` (and ``--unsafe-fixes``) would fix."""
    safe = sum(1 for f in findings if f.fix is not None and f.fix.edits and f.fix.applicability == "safe")
    unsafe = sum(1 for f in findings if f.fix is not None and f.fix.edits and f.fix.applicability == "unsafe")
    if unsafe_fixes:
        return f"[*] {safe + unsafe} fixable with --fix --unsafe-fixes." if safe + unsafe else None
    if safe and unsafe:
        return f"[*] {safe} fixable with --fix ({unsafe} more with --unsafe-fixes)."
    if safe:
        return f"[*] {safe} fixable with --fix."
    if unsafe:
        return f"No fixes available with --fix ({unsafe} with --unsafe-fixes)."
    return None


def summary_line(n: int, files_checked: int | None) -> str:
    summary = f"Found {n} finding{'s' if n != 1 else ''}" if n else "All checks passed!"
    if files_checked is not None:
        summary += f" ({files_checked} file{'s' if files_checked != 1 else ''} checked)"
    return summary + ("." if n else "")


def format_text(
    findings: Sequence[Finding],
    read_line: Callable[[str, int], str | None] | None = None,
    color: bool = False,
    files_checked: int | None = None,
    *,
    unsafe_fixes: bool = False,
    quiet: bool = False,
) -> str:
    """Render findings; ``read_line(path, line)`` supplies source lines for the caret view."""

    def c(code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    out: list[str] = []
    for f in findings:
        # Paths and messages (which quote names and paths) come from the
        # checked tree: never let them drive the terminal.
        loc = f"{c(_BOLD, printable(f.path))}:{f.line}:{f.column + 1}:"
        out.append(f"{loc} {c(_RED + _BOLD, f.code)} {fixable_marker(f, unsafe_fixes)}{printable(f.message)}")
        src = read_line(f.path, f.line) if read_line is not None else None
        if src is not None:
            gutter = str(f.line)
            pad = " " * len(gutter)
            raw = src.rstrip("\r\n").expandtabs(1)
            width = (f.end_column - f.column) if f.end_line == f.line else max(len(raw) - f.column, 1)
            width = max(1, min(width, max(len(raw) - f.column, 1)))
            # The caret moves with the escapes that widen the text before it.
            start = len(printable(raw[: f.column]))
            width = max(1, len(printable(raw[f.column : f.column + width])))
            text = printable(raw)
            out.append(f"{pad} {c(_BLUE, '|')}")
            out.append(f"{c(_BLUE, gutter)} {c(_BLUE, '|')} {text}")
            out.append(f"{pad} {c(_BLUE, '|')} {' ' * start}{c(_RED, '^' * width)}")
            out.append("")
    if quiet:
        return "".join(line + "\n" for line in out)
    out.append(summary_line(len(findings), files_checked))
    hint = fix_hint(findings, unsafe_fixes)
    if hint:
        out.append(hint)
    return "\n".join(out) + "\n"
