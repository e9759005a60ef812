"""What one result-cache entry holds: the values the cache hands back
(:class:`Facts`, :class:`CachedResult`) and the shape checks every entry of a
loaded store must pass before use.

Import these from :mod:`ckptlint.cache`, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ckptlint.types import Finding

__all__ = ["CachedResult", "Facts"]


@dataclass(frozen=True)
class Facts:
    """What is known about one file's content, independent of options."""

    wrappers: tuple[str, ...]
    # None: not checked yet; () parses; (finding,) the CKP001 finding.
    syntax: tuple[Finding, ...] | None
    # It changes other files' findings by what it runs (a DDP wrapper, a checkpoint monkeypatch):
    # results then hold only for its content (see ``runner``).
    reaches_others: bool = False


@dataclass(frozen=True)
class CachedResult:
    """A driver file's analysis result as the cache returns it."""

    findings: tuple[Finding, ...]
    dependencies: tuple[str, ...]
    error: str | None


def _nat(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _valid_findings(items: Any) -> bool:
    """Every item has the shape :meth:`Finding.to_dict` writes (types and ranges)."""
    if not isinstance(items, list):
        return False
    for f in items:
        if not isinstance(f, dict) or not all(isinstance(f.get(k), str) for k in ("code", "message", "path")):
            return False
        if not (_nat(f.get("line")) and _nat(f.get("column")) and _nat(f.get("end_line")) and _nat(f.get("end_column"))):
            return False
        fix = f.get("fix")
        if fix is not None:
            edits = fix.get("edits") if isinstance(fix, dict) else None
            if not isinstance(edits, list) or not all(
                isinstance(e, dict) and isinstance(e.get("replacement"), str)
                and all(_nat(e.get(k)) for k in ("start_line", "start_column", "end_line", "end_column"))
                for e in edits
            ):
                return False
    return True


def _valid_result(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("hash"), str)
        and _valid_findings(entry.get("findings"))
        and isinstance(entry.get("deps"), list)
        and all(isinstance(d, list) and len(d) == 2 and all(isinstance(x, str) for x in d) for d in entry["deps"])
    )
