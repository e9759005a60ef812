"""A module-level monkeypatch of torch's ``checkpoint`` somewhere in the checked tree.

Training scripts silence the ``use_reentrant`` warning of libraries they cannot edit with
``torch.utils.checkpoint.checkpoint = functools.partial(torch.utils.checkpoint.checkpoint,
use_reentrant=False)``, or route every call through DeepSpeed's or their own function. After that
statement runs, every call that looks the name up on the module (``torch.utils.checkpoint.checkpoint(...)``,
``cp.checkpoint(...)`` with ``import torch.utils.checkpoint as cp``) runs the replacement; a name bound
by ``from torch.utils.checkpoint import checkpoint`` before the patch keeps the original, so those
calls are judged as written.

The patch takes effect where it runs: for the calls of the patching module and of the in-tree modules
it imports (transitively, up to ``MAX_IMPORT_DEPTH``) — a training script that patches and then
imports its model package — not for every file of a tree that merely contains such a script. The
tree's text is searched once for the assignment (no parse unless a line matches); the file that
holds it is a dependency of every result that used it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.project import Project

__all__ = ["CheckpointPatch", "find_patches", "mentions_patch", "reach"]

MAX_IMPORT_DEPTH = 4
_LINE = re.compile(r"^[\w.]*\bcheckpoint[ \t]*=[ \t]*\S", re.MULTILINE)
_ASSIGNED = re.compile(r"checkpoint[ \t]*=")  # what every _LINE match holds; unanchored, so far cheaper


@dataclass(frozen=True)
class CheckpointPatch:
    """What ``torch.utils.checkpoint.checkpoint`` was replaced with."""

    path: str
    line: int
    bound: dict[str, cst.BaseExpression] = field(default_factory=dict)  # partial(checkpoint, **bound)
    torch_api: bool = True  # a partial of torch's own checkpoint (else another function)
    scope: frozenset[str] = frozenset()  # the files whose calls it reaches


def mentions_patch(text: str) -> bool:
    """Cheap text test: may ``text`` hold a module-level ``...checkpoint = ...`` (what :func:`find_patches` parses)."""
    return "checkpoint" in text and _ASSIGNED.search(text) is not None and _LINE.search(text) is not None


def find_patches(project: Project) -> list[CheckpointPatch]:
    """Every module-level ``<torch.utils.checkpoint>.checkpoint = ...`` in the tree, with its reach."""
    out: list[CheckpointPatch] = []
    for path, _ in project.files_matching(mentions_patch):
        mod = project.module(path)
        for stmt in mod.module.body if mod.module is not None else ():
            if not isinstance(stmt, cst.SimpleStatementLine):
                continue
            for small in stmt.body:
                if not isinstance(small, cst.Assign) or len(small.targets) != 1:
                    continue
                target = small.targets[0].target
                if not (isinstance(target, cst.Attribute) and target.attr.value == "checkpoint"):
                    continue
                if not N.matches(project.resolve_expr(mod, target), frozenset({N.TORCH_CHECKPOINT})):
                    continue
                pos = mod.position(small)
                found = _patch(project, mod, small.value, path, pos.start.line if pos is not None else 0)
                out.append(CheckpointPatch(found.path, found.line, found.bound, found.torch_api, reach(project, mod)))
    return out


def reach(project: Project, mod) -> frozenset[str]:  # type: ignore[no-untyped-def]
    """``mod`` and the in-tree modules it imports, transitively."""
    seen = {mod.path}
    frontier = [mod]
    for _ in range(MAX_IMPORT_DEPTH):
        following = []
        for m in frontier:
            for qualnames in m.imports.values():
                for q in qualnames:
                    target = _module_of(project, q, m)
                    if target is not None and target.path not in seen:
                        seen.add(target.path)
                        following.append(target)
        frontier = following
    return frozenset(seen)


def _module_of(project: Project, qualname: str, near):  # type: ignore[no-untyped-def]
    """The in-tree module ``qualname`` is or lives in (``pkg.model.Model`` -> ``pkg.model``)."""
    parts = qualname.split(".")
    for end in range(len(parts), 0, -1):
        found = project.find_module(".".join(parts[:end]), near)
        if found is not None:
            return found
    return None


def _patch(project: Project, mod, value: cst.BaseExpression, path: str, line: int) -> CheckpointPatch:  # type: ignore[no-untyped-def]
    if isinstance(value, cst.Call) and value.args and N.matches(project.resolve_expr(mod, value.func), N.PARTIAL):
        inner = value.args[0].value
        if N.matches(project.resolve_expr(mod, inner), frozenset({N.TORCH_CHECKPOINT})):
            bound = {a.keyword.value: a.value for a in value.args[1:] if a.keyword is not None}
            return CheckpointPatch(path, line, bound, True)
    return CheckpointPatch(path, line, {}, False)
