"""Default output, shaped like ruff's: location, code, message, source line, caret."""

from __future__ import annotations

from typing import Callable, Sequence

from ckptlint.report.escape import printable
from ckptlint.types import Finding

__all__ = ["format_text"]

_BOLD = "\x1b[1m"
_RED = "\x1b[31m"
_CYAN = "\x1b[36m"
_BLUE = "\x1b[34m"
_RESET = "\x1b[0m"


def format_text(
    findings: Sequence[Finding],
    read_line: Callable[[str, int], str | None] | None = None,
    color: bool = False,
    files_checked: int | None = None,
) -> str:
    """Render findings; ``read_line(path, line)`` supplies source lines for the caret view."""

    def c(code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    out: list[str] = []
    for f in findings:
        # Paths and messages (which quote names and paths) come from the
        # checked tree: never let them drive the terminal.
        loc = f"{c(_BOLD, printable(f.path))}:{f.line}:{f.column + 1}:"
        out.append(f"{loc} {c(_RED + _BOLD, f.code)} {printable(f.message)}")
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
    n = len(findings)
    if n:
        summary = f"Found {n} finding{'s' if n != 1 else ''}"
    else:
        summary = "All checks passed!"
    if files_checked is not None:
        summary += f" ({files_checked} file{'s' if files_checked != 1 else ''} checked)"
    out.append(summary + ("." if n else ""))
    return "\n".join(out) + "\n"
