"""Modules whose parameters take part in more than one reentrant backward per step (CKP404's second shape).

Reentrant checkpoint runs each region's backward as a backward of its own, and every one of them
accumulates into ``param.grad`` and fires DDP's per-parameter hook. A parameter reached by two such
backwards — or by one and by the outer backward — is marked ready twice, which DDP refuses even
without ``find_unused_parameters`` (measured with gloo on torch 2.13, one and two processes):

- the same member checkpointed in a loop or a comprehension (``for _ in range(n): x =
  checkpoint(self.layer, x)``, ALBERT-style sharing; ``[checkpoint(self.block, c) for c in chunks]``);
- the same member at two reentrant checkpoint calls of one function, or also run outside one (called
  directly, its ``.weight`` read, or under a non-reentrant checkpoint, whose recompute belongs to the
  outer backward);
- two members tied in ``__init__`` (``self.b.weight = self.a.weight``), one checkpointed and the other
  checkpointed or called in the same function.

Used twice inside one region is fine (one inner backward), and so are uses in arms of one ``if`` (the
usual ``if self.gradient_checkpointing: checkpoint(self.block, x) else: self.block(x)``) or after a
branch that returns. Only members of ``self`` whose expression names nothing else are compared: a
loop's own variable (``self.layers[i]``) is a different module each time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import libcst as cst

from ckptlint.analysis.walk import iter_children, walk
from ckptlint.discovery.sites import SiteCall
from ckptlint.project import ModuleInfo
from ckptlint.rules._common import reentrant_variant

__all__ = ["SharedUse", "shared_uses"]

_Path = tuple[tuple[int, int, int], ...]  # (id of the block's owner, statement index, arm)


@dataclass(frozen=True)
class SharedUse:
    """A reentrant checkpoint call whose module's parameters run in another backward too."""

    call: cst.Call
    member: str  # ``self.layer`` as written
    how: str  # "in a loop" / "also checkpointed at line 12" / "tied to self.a (line 9), called at line 14"


@dataclass(frozen=True)
class _Use:
    call: cst.Call | cst.Attribute  # the checkpoint or direct call, or a ``.weight`` read
    member: str
    checkpointed: bool
    in_loop: bool  # inside a loop or comprehension, and not in a ``return`` that ends it
    path: _Path
    exits: tuple[bool, ...]  # per level of ``path``: a return/raise follows in that block


def shared_uses(mod: ModuleInfo, sites: Sequence[SiteCall]) -> Iterator[SharedUse]:
    reentrant = {id(s.call) for s in sites if _reentrant(s)}
    if not reentrant:
        return
    others = {id(s.call) for s in sites if s.kind == "checkpoint" and id(s.call) not in reentrant}
    for cls in (n for stmt in mod.parsed_statements() for n in walk(stmt)):
        if not isinstance(cls, cst.ClassDef):
            continue  # the sites lie in statements already parsed; the rest of the file is not needed
        tied = _tied(cls, mod)
        for fn in cls.body.body:
            if isinstance(fn, cst.FunctionDef):
                yield from _in_function(mod, fn, reentrant, others, tied)


def _reentrant(site: SiteCall) -> bool:
    """torch's own ``checkpoint`` running reentrant, its arguments all written at the call."""
    if site.kind != "checkpoint" or not site.torch_api or any(a.star == "**" for a in site.call.args):
        return False
    return reentrant_variant(site) is not None


def _in_function(
    mod: ModuleInfo, fn: cst.FunctionDef, reentrant: set[int], others: set[int], tied: dict[str, tuple[str, int]]
) -> Iterator[SharedUse]:
    walker = _Walker(reentrant, others)
    walker.block(fn.body.body, id(fn), 0, False, ())
    uses = walker.uses
    if not any(u.checkpointed for u in uses):
        return
    for i, use in enumerate(uses):
        if not use.checkpointed:
            continue
        if use.in_loop:
            yield SharedUse(use.call, use.member, "in a loop: once per iteration")
            continue
        partner = tied.get(use.member, ("", 0))
        for j, other in enumerate(uses):
            if j == i or (other.checkpointed and j > i) or _exclusive(use, other):
                continue  # of two checkpoint calls, the later one is reported
            where = f"at line {_line(mod, other.call)}"
            if other.member == use.member:
                yield SharedUse(use.call, use.member, ("also checkpointed " if other.checkpointed else "also run outside a reentrant checkpoint ") + where)
                break
            if other.member == partner[0]:
                did = "checkpointed" if other.checkpointed else "used outside a reentrant checkpoint"
                yield SharedUse(use.call, use.member, f"its weights are tied to {partner[0]} (line {partner[1]}), {did} {where}")
                break


class _Walker:
    """The calls of one function body on ``self`` members, with the branch and loop they sit in."""

    def __init__(self, reentrant: set[int], others: set[int]) -> None:
        self.reentrant = reentrant
        self.others = others  # non-reentrant checkpoints: their recompute is part of the outer backward
        self.uses: list[_Use] = []

    def block(self, stmts: Sequence[cst.BaseStatement | cst.BaseSmallStatement], owner: int, arm: int, loop: bool, path: _Path, exits: tuple[bool, ...] = ()) -> None:
        last_exit = max((i for i, s in enumerate(stmts) if _exits(s)), default=-1)
        for idx, stmt in enumerate(stmts):
            # a return/raise at or after this statement in its block
            self.stmt(stmt, loop, path + ((owner, arm, idx),), exits + (idx <= last_exit,))

    def stmt(self, stmt: cst.BaseStatement | cst.BaseSmallStatement, loop: bool, path: _Path, exits: tuple[bool, ...]) -> None:
        if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            return  # runs when called, not here
        if isinstance(stmt, cst.If):
            self.expr(stmt.test, loop, path, exits)
            self.block(stmt.body.body, id(stmt), 0, loop, path, exits)
            if isinstance(stmt.orelse, cst.If):
                self.block([stmt.orelse], id(stmt), 1, loop, path, exits)
            elif isinstance(stmt.orelse, cst.Else):
                self.block(stmt.orelse.body.body, id(stmt), 1, loop, path, exits)
            return
        if isinstance(stmt, (cst.For, cst.While)):
            self.expr(stmt.iter if isinstance(stmt, cst.For) else stmt.test, loop, path, exits)
            self.block(stmt.body.body, id(stmt), 0, True, path, exits)
            if stmt.orelse is not None:
                self.block(stmt.orelse.body.body, id(stmt.orelse), 0, loop, path, exits)
            return
        if isinstance(stmt, cst.Try):
            self.block(stmt.body.body, id(stmt), 0, loop, path, exits)
            for k, handler in enumerate(stmt.handlers):
                self.block(handler.body.body, id(stmt), k + 1, loop, path, exits)
            for tail in (stmt.orelse, stmt.finalbody):
                if tail is not None:
                    self.block(tail.body.body, id(tail), 0, loop, path, exits)
            return
        if isinstance(stmt, cst.BaseSmallStatement):  # one of a one-line suite's (``if c: return ...``)
            self.expr(stmt, loop and not isinstance(stmt, cst.Return), path, exits)
            return
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                self.expr(small, loop and not isinstance(small, cst.Return), path, exits)
            return
        self.children(stmt, loop, path, exits)  # with, match, ...: their blocks run in order

    def expr(self, node: cst.CSTNode, loop: bool, path: _Path, exits: tuple[bool, ...]) -> None:
        if isinstance(node, cst.Lambda):
            return  # its body runs when called: inside a region, often
        if isinstance(node, _COMPREHENSIONS):
            loop = True
        if isinstance(node, cst.Attribute) and node.attr.value in _META and isinstance(node.value, cst.Attribute) and node.value.attr.value in _PARAMS:
            return  # ``self.proj.weight.dtype``: read outside autograd
        if isinstance(node, cst.Call):
            if id(node) in self.reentrant or id(node) in self.others:
                fn = next((a.value for a in node.args if a.keyword is None and not a.star), None)
                member = _checkpointed_member(fn) if fn is not None else None
                if member is not None:
                    self.uses.append(_Use(node, member, id(node) in self.reentrant, loop, path, exits))
            else:
                member = _member(node.func)
                if member is not None:
                    self.uses.append(_Use(node, member, False, loop, path, exits))
        elif isinstance(node, cst.Attribute) and node.attr.value in _PARAMS:
            member = _member(node.value)  # ``F.linear(h, self.embed.weight)``: a use of the module's weight
            if member is not None:
                self.uses.append(_Use(node, member, False, loop, path, exits))
        self.children(node, loop, path, exits)

    def children(self, node: cst.CSTNode, loop: bool, path: _Path, exits: tuple[bool, ...]) -> None:
        for child in iter_children(node):
            if isinstance(child, cst.IndentedBlock):
                self.block(child.body, id(child), 0, loop, path, exits)
            elif isinstance(child, cst.BaseStatement):
                self.stmt(child, loop, path, exits)
            else:
                self.expr(child, loop, path, exits)


_PARAMS = frozenset({"weight", "bias"})
_META = frozenset({"dtype", "device", "shape", "size", "ndim", "dim", "data", "requires_grad", "is_cuda", "numel"})
_COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp)


def _exits(stmt: cst.BaseStatement | cst.BaseSmallStatement) -> bool:
    if isinstance(stmt, (cst.Return, cst.Raise)):
        return True
    return isinstance(stmt, cst.SimpleStatementLine) and any(isinstance(s, (cst.Return, cst.Raise)) for s in stmt.body)


def _exclusive(a: _Use, b: _Use) -> bool:
    """``a`` and ``b`` never both run in one call: arms of one branch, or one after a branch that returns."""
    for k, (ea, eb) in enumerate(zip(a.path, b.path)):
        if ea == eb:
            continue
        if ea[0] == eb[0] and ea[1] != eb[1]:
            return True  # if/else (or try/except) arms
        first = a if ea[2] < eb[2] else b
        return any(first.exits[k + 1:])  # the earlier one sits in a block that returns after it
    return False


def _checkpointed_member(fn: cst.BaseExpression) -> str | None:
    """The member a checkpoint's function runs: ``self.layer``, ``create_custom_forward(self.layer)``,
    ``partial(self.layer, ...)``, ``lambda h: self.layer(h)``."""
    if isinstance(fn, cst.Lambda):
        return _member(fn.body.func) if isinstance(fn.body, cst.Call) else None
    if isinstance(fn, cst.Call):
        inner = [m for m in (_member(a.value) for a in fn.args if not a.star) if m is not None]
        return inner[0] if len(inner) == 1 else None
    return _member(fn)


def _member(expr: cst.BaseExpression) -> str | None:
    """``self.a.b[0]`` as text when ``expr`` names a member of ``self`` and nothing else (``.forward`` dropped)."""
    parts: list[str] = []
    while True:
        if isinstance(expr, cst.Attribute):
            parts.append("." + expr.attr.value)
            expr = expr.value
        elif isinstance(expr, cst.Subscript) and len(expr.slice) == 1:
            index = expr.slice[0].slice
            if not (isinstance(index, cst.Index) and isinstance(index.value, (cst.Integer, cst.SimpleString))):
                return None
            parts.append(f"[{index.value.value}]")
            expr = expr.value
        else:
            break
    if not (isinstance(expr, cst.Name) and expr.value == "self" and parts):
        return None
    if parts[0] in (".forward", ".__call__"):
        parts = parts[1:]
    if not parts:
        return None
    return "self" + "".join(reversed(parts))


def _tied(cls: cst.ClassDef, mod: ModuleInfo) -> dict[str, tuple[str, int]]:
    """``self.b.weight = self.a.weight`` anywhere in the class: ``{"self.b": ("self.a", line), "self.a": (...)}``."""
    out: dict[str, tuple[str, int]] = {}
    for node in walk(cls):
        if not isinstance(node, cst.Assign) or len(node.targets) != 1:
            continue
        target, value = node.targets[0].target, node.value
        if not (isinstance(target, cst.Attribute) and isinstance(value, cst.Attribute)) or target.attr.value != value.attr.value:
            continue
        left, right = _member(target.value), _member(value.value)
        if left is None or right is None or left == right:
            continue
        out[left] = (right, _line(mod, node))
        out[right] = (left, _line(mod, node))
    return out


def _line(mod: ModuleInfo, node: cst.CSTNode) -> int:
    pos = mod.position(node)
    return pos.start.line if pos is not None else 0
