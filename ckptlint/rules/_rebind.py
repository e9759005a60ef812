"""When a rebinding fix (``h.add_(1)`` -> ``h = h.add(1)``) keeps the function's meaning.

Rebinding stops the mutation of the tensor ``h`` shares with a checkpoint
input. That is the point of the fix, and callers who relied on the mutation
are why it is *unsafe*. It must not also change what the function itself
computes: in ::

    def block(x):
        h = x
        h.add_(1)
        return x * 3      # 6 with the mutation, 3 after rebinding h

the mutated storage is read after the mutation through another name. So a
rebinding fix is offered only when, after the mutation, no other name that
may share storage with the mutated input (an alias or view, or a container,
closure or object that may hold one) is used anywhere the function can reach
later: later statements, the rest of an enclosing loop, nested functions.
A mutation inside a helper (reached from the checkpointed function) gets no
rebinding fix at all: its caller still holds the tensor.

The seeds come from the flow analysis (:mod:`ckptlint.analysis.flow`): the
event's :class:`~ckptlint.analysis.flow.Root` (the mutated name and the input
it aliases) and the visit's taint (which parameters carry that input).
From them, every binding in the function is followed, flow-insensitively and
erring towards "may alias": a missed fix is a lost convenience, a wrong one
changes results.
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.analysis.flow import Root, Visit
from ckptlint.analysis.walk import iter_children, walk
from ckptlint.data import out_of_place_names

__all__ = ["rebinding_keeps_meaning"]

_VIEW = 1  # shares the tensor's storage
_HOLDER = 2  # may hold the tensor somewhere inside (list, dict, object, unknown call result)
_DISPLAYS = (cst.List, cst.Tuple, cst.Set, cst.Dict, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)
_ARITH = (cst.BinaryOperation, cst.UnaryOperation, cst.Comparison)
# Container methods that keep a reference to their argument.
_STORING_METHODS = frozenset({"append", "extend", "insert", "add", "update", "setdefault", "put", "put_nowait", "push", "appendleft", "extendleft", "__setitem__", "register_buffer", "register_parameter"})


def rebinding_keeps_meaning(mutation: cst.CSTNode, root: Root, visit: Visit | None) -> bool:
    """Whether rebinding ``root.name`` at ``mutation`` leaves the function's own
    results unchanged (see the module docstring)."""
    if visit is None or len(visit.chain) != 1 or root.kind != "input" or root.origin is None:
        return False
    fn = visit.ref.node
    body = fn.body
    if not isinstance(fn, cst.FunctionDef) or not isinstance(body, cst.BaseSuite):
        return False
    try:
        parents = {id(child): node for node in walk(fn) for child in iter_children(node)}
        kinds = _aliases(fn, root, visit, mutation)
        return not any(
            name.value in kinds and name.value != root.name and not _is_label(name, parents)
            for name in _later_names(fn, mutation, parents)
        )
    except RecursionError:  # an expression too deep to follow (generated code): keep the finding, offer no fix
        return False


def _aliases(fn: cst.FunctionDef, root: Root, visit: Visit, mutation: cst.CSTNode) -> dict[str, int]:
    """Names that may share storage with ``root``'s input, with how (view or holder).

    The mutated name itself is rebound by the fix, so what is computed from it
    after the mutation is computed from the new tensor: only bindings before
    the mutation (in source order; in a loop that covers the first iteration)
    inherit from it.
    """
    kinds: dict[str, int] = {p: _VIEW for p, origin in visit.taint.items() if origin == root.origin}
    kinds[root.name] = _VIEW
    after: set[int] = set()
    seen = False
    for n in walk(fn):
        seen = seen or n is mutation
        if seen:
            after.add(id(n))
    changed = True
    while changed:
        changed = False
        for target, kind in _bindings(fn, kinds, after, root.name):
            for name in _target_names(target):
                if kind > kinds.get(name, 0):
                    kinds[name] = kind
                    changed = True
    return kinds


def _bindings(
    fn: cst.FunctionDef, every: dict[str, int], after: set[int], rebound: str
) -> Iterator[tuple[cst.BaseExpression, int]]:
    for node in walk(fn):
        # After the mutation the mutated name holds the fix's new tensor.
        kinds = {k: v for k, v in every.items() if k != rebound} if id(node) in after else every
        if isinstance(node, cst.Assign):
            k = _kind(node.value, kinds)
            for t in node.targets:
                yield from _bind(t.target, k)
        elif isinstance(node, (cst.AnnAssign, cst.NamedExpr)) and node.value is not None:
            yield from _bind(node.target, _kind(node.value, kinds))
        elif isinstance(node, cst.AugAssign):
            # ``acc += [x]`` / ``history += (x,)`` puts the tensor in a container.
            yield from _bind(node.target, _HOLDER if _kind(node.value, kinds) else 0)
        elif isinstance(node, cst.For):
            yield from _bind(node.target, _kind(node.iter, kinds))
        elif isinstance(node, cst.WithItem) and node.asname is not None:
            yield from _bind(node.asname.name, _HOLDER if _kind(node.item, kinds) else 0)
        elif (
            isinstance(node, cst.Call)
            and isinstance(node.func, cst.Attribute)
            and node.func.attr.value in _STORING_METHODS
            and any(_kind(a.value, kinds) for a in node.args)
        ):
            # ``out.append(x)``, ``cache.update(k=x)``: the container now holds it.
            yield (_base(node.func.value), _HOLDER)


def _bind(target: cst.BaseExpression, kind: int) -> Iterator[tuple[cst.BaseExpression, int]]:
    if not kind:
        return
    if isinstance(target, (cst.Attribute, cst.Subscript)):
        # ``self.cache = x`` / ``d[k] = x``: the object now holds the tensor.
        yield (_base(target), _HOLDER)
    else:
        yield (target, kind)


def _base(expr: cst.BaseExpression) -> cst.BaseExpression:
    while isinstance(expr, (cst.Attribute, cst.Subscript)):
        expr = expr.value
    return expr


def _target_names(target: cst.BaseExpression) -> Iterator[str]:
    if isinstance(target, cst.Name):
        yield target.value
    elif isinstance(target, (cst.Tuple, cst.List)):
        for el in target.elements:
            yield from _target_names(el.value)
    elif isinstance(target, cst.StarredElement):
        yield from _target_names(target.value)


def _fresh_method(name: str) -> bool:
    """A tensor method from the verified table that returns a new tensor (not a view)."""
    return name in out_of_place_names("Tensor") and name not in N.VIEW_METHODS


def _kind(expr: cst.BaseExpression | None, kinds: dict[str, int]) -> int:
    """How ``expr``'s value may share storage with the tracked tensor (0: it does not)."""
    if expr is None:
        return 0
    if isinstance(expr, cst.Name):
        return kinds.get(expr.value, 0)
    if isinstance(expr, (cst.Attribute, cst.Subscript)):
        return _kind(expr.value, kinds) or _mentions(expr, kinds)
    if isinstance(expr, cst.Call):
        func = expr.func
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            if method == "clone" or _fresh_method(method):
                return 0
            if method in N.VIEW_METHODS and not expr.args:
                return _kind(func.value, kinds)
        return _HOLDER if _mentions(expr, kinds) else 0
    if isinstance(expr, _ARITH):
        # Tensor arithmetic makes a new tensor; list/tuple arithmetic keeps the elements.
        return _HOLDER if any(_kind(c, kinds) == _HOLDER or isinstance(c, _DISPLAYS) and _mentions(c, kinds)
                              for c in iter_children(expr) if isinstance(c, cst.BaseExpression)) else 0
    if isinstance(expr, (cst.BooleanOperation, cst.IfExp)):
        return max((_kind(c, kinds) for c in iter_children(expr) if isinstance(c, cst.BaseExpression)), default=0)
    if isinstance(expr, cst.NamedExpr):
        return _kind(expr.value, kinds)
    if isinstance(expr, (cst.SimpleString, cst.Integer, cst.Float, cst.Imaginary, cst.Ellipsis)):
        return 0
    return _HOLDER if _mentions(expr, kinds) else 0


def _mentions(node: cst.CSTNode, kinds: dict[str, int]) -> int:
    return _HOLDER if any(isinstance(n, cst.Name) and n.value in kinds for n in walk(node)) else 0


def _later_names(fn: cst.FunctionDef, mutation: cst.CSTNode, parents: dict[int, cst.CSTNode]) -> Iterator[cst.Name]:
    """Names the function may evaluate after ``mutation``: later code, the whole
    enclosing loop (its next iteration), and every nested function or lambda."""
    inside = {id(n) for n in walk(mutation)}
    loop: cst.CSTNode | None = None
    node: cst.CSTNode | None = parents.get(id(mutation))
    while node is not None and node is not fn:
        if isinstance(node, (cst.For, cst.While)):
            loop = node
        node = parents.get(id(node))
    looped = {id(n) for n in walk(loop)} if loop is not None else set()
    nested: set[int] = set()
    for n in walk(fn.body):
        if isinstance(n, (cst.FunctionDef, cst.Lambda, cst.ClassDef)) and id(n) not in nested:
            nested.update(id(m) for m in walk(n))
    seen = False
    for n in walk(fn.body):
        if n is mutation:
            seen = True
            continue
        if isinstance(n, cst.Name) and id(n) not in inside and (seen or id(n) in looped or id(n) in nested):
            yield n


def _is_label(name: cst.Name, parents: dict[int, cst.CSTNode]) -> bool:
    """``obj.name`` attributes and ``f(name=...)`` keywords are not variables."""
    parent = parents.get(id(name))
    if isinstance(parent, cst.Attribute) and parent.attr is name:
        return True
    if isinstance(parent, cst.Arg) and parent.keyword is name:
        return True
    return isinstance(parent, (cst.FunctionDef, cst.ClassDef, cst.ImportAlias)) and getattr(parent, "name", None) is name
