"""What shapes one ``ckptlint check`` run and what it returns.

:class:`RunSettings` (everything besides the paths), :class:`RunResult` (ready
for the formatters) and :func:`default_jobs`. The run itself is in
:mod:`ckptlint.runner`; import these names from there, as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

from ckptlint.config import Config
from ckptlint.fixing import FixReport
from ckptlint.types import Finding

__all__ = ["RunSettings", "RunResult", "default_jobs"]


def default_jobs() -> int:
    """Number of worker processes by default: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class RunSettings:
    """Everything that shapes one run, besides the paths."""

    config: Config = field(default_factory=Config)
    jobs: int | None = None
    use_cache: bool = True
    honor_bare_noqa: bool = False
    report_unused_ignores: bool = False
    show_suppressed: bool = False
    fix: bool = False
    unsafe_fixes: bool = False
    diff: bool = False
    progress: Callable[[int, int], None] | None = None
    # In-memory texts that win over the disk (stdin, an editor's unsaved
    # buffers), keyed by path; a path here is checked even if no file exists.
    sources: Mapping[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    """The outcome of a run, ready for the formatters."""

    findings: list[Finding]
    suppressed: list[Finding]
    errors: list[tuple[str, str]]
    files_checked: int
    files_analysed: int = 0
    cache_hits: int = 0
    fixes: FixReport | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # One line each for stderr: things skipped that do not fail the run.
    warnings: list[str] = field(default_factory=list)

    @property
    def fixable(self) -> int:
        return sum(1 for f in self.findings if f.fix is not None)
