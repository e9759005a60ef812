"""Which files of the checked tree run under ``DistributedDataParallel`` (for CKP404's shared-parameter shape).

A model file rarely wraps itself: a training script does (``DDP(model, device_ids=[rank])``,
Lightning's ``Trainer(strategy="ddp")`` / ``DDPStrategy(...)``) and imports the model package. A
file runs under DDP when it holds such a wrapper or is imported, transitively, by a file that does
(``discovery.patches.reach``, the same reach a checkpoint monkeypatch has). A wrapper with
``static_graph=True`` (or ``_set_static_graph()`` in the same file) is no evidence: DDP then
reduces each parameter once whatever the backward does.

The tree's text is searched once per run (no parse unless a line matches); the wrapping file is a
dependency of every result that used it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ckptlint.discovery.patches import reach
from ckptlint.project import Project
from ckptlint.rules._training_scripts import Script

__all__ = ["DdpWrap", "ddp_wrap_for", "mentions_ddp_wrap"]

_TEXT = re.compile(r"\b(?:DistributedDataParallel|DDP|DDPStrategy)[ \t]*\(|\bstrategy[ \t]*=[ \t]*['\"]ddp")
_CACHE = "ckp404_ddp_wraps"


@dataclass(frozen=True)
class DdpWrap:
    """A file that wraps a model in DDP, its first wrapping line, and the files it reaches."""

    path: str
    display: str
    line: int
    scope: frozenset[str]

    def where(self, here: str) -> str:
        return f"wrapped at line {self.line}" if self.path == here else f"wrapped at {self.display}:{self.line}, which imports it"


def mentions_ddp_wrap(text: str) -> bool:
    """Cheap text test: may ``text`` wrap a model in DDP (what :func:`ddp_wrap_for` parses)."""
    # Each alternative holds one of these literals; the substring tests skip the regex on most files.
    if "DDP" not in text and "DistributedDataParallel" not in text and "strategy" not in text:
        return False
    return _TEXT.search(text) is not None


def ddp_wrap_for(project: Project, path: str) -> DdpWrap | None:
    """The first DDP wrapper (in path order) whose reach holds ``path``; None when none does."""
    wraps = project.cache.get(_CACHE)
    if wraps is None:
        wraps = project.cache[_CACHE] = {"all": _scan(project)}
    found = [w for w in wraps["all"] if path in w.scope]  # type: ignore[union-attr]
    if not found:
        return None
    project.depends_on([found[0].path])
    return found[0]


def _scan(project: Project) -> list[DdpWrap]:
    out: list[DdpWrap] = []
    for path, _ in project.files_matching(mentions_ddp_wrap):
        mod = project.module(path)
        if mod.module is None:
            continue
        scripts = Script.of(mod)
        if any(s.static_graph_lines for s in scripts):
            continue
        calls = [c for s in scripts for c in s.ddp_calls if not any(a.star == "**" for a in c.args)]  # **kw may hold static_graph
        lines = sorted(pos.start.line for pos in map(mod.position, calls) if pos is not None)
        if lines:  # a call, not a word in a docstring or comment
            out.append(DdpWrap(path, mod.display, lines[0], reach(project, mod)))
    return out
