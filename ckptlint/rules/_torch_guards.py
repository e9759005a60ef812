"""Branches that only run on a torch release without ``use_reentrant`` (torch < 1.11).

Libraries that supported old torch wrote::

    if is_torch_version(">=", "1.11.0"):
        x = checkpoint(fn, x, use_reentrant=False)
    else:
        x = checkpoint(fn, x)          # only runs on torch < 1.11: nothing to pass

:func:`legacy_only` tells whether a node sits on such a branch. Guards are
recognised by name and shape, never by importing anything:

- a version call: ``is_torch_version(">=", "1.11.0")`` (diffusers,
  transformers, accelerate), ``is_torch_greater_or_equal("1.11")``,
  ``is_torch_greater_than``/``is_torch_less_than``;
- a comparison of a torch version with a version literal:
  ``version.parse(torch.__version__) >= version.parse("1.11")``,
  ``torch.__version__ < "1.11"``, ``TORCH_VERSION >= (1, 11)``
  (``parse``/``Version``/``LooseVersion``/``parse_version`` wrappers and
  ``.base_version``/``.release`` are seen through);
- a flag named like ``_TORCH_GREATER_EQUAL_1_11`` / ``is_torch_greater_or_equal_than_1_13``
  (lightning, transformers), also when assigned once at module level from one of the above;
- a feature test on the parameter itself:
  ``"use_reentrant" in inspect.signature(checkpoint).parameters``.

A branch is *legacy-only* when the conditions leading to it imply
``torch < 1.11`` (``not``, ``and`` in the taken branch, ``elif`` chains and
``x if cond else y`` are followed). ``hasattr(torch.utils.checkpoint, name)``
is recognised but proves nothing: every public name of
``torch.utils.checkpoint`` that such guards test predates 1.11 or came
after it, and code on the ``else`` side of a test for a later feature still
runs on torch releases that warn.
"""

from __future__ import annotations

import re
from typing import Iterator

import libcst as cst

from ckptlint.analysis.walk import iter_children
from ckptlint.project import ModuleInfo, dotted_name
from ckptlint.rules._idempotent import code_of

__all__ = ["legacy_only"]

USE_REENTRANT_SINCE = (1, 11)

_VERSION_CALLS = {
    "is_torch_greater_or_equal": ">=",
    "is_torch_greater_than": ">",
    "is_torch_less_than": "<",
    "is_torch_less_or_equal": "<=",
}
_NEGATE = {">=": "<", "<": ">=", ">": "<=", "<=": ">", "==": "!=", "!=": "=="}
_FLIP = {">=": "<=", "<=": ">=", ">": "<", "<": ">", "==": "==", "!=": "!="}
_CMP_OPS = {
    cst.GreaterThanEqual: ">=", cst.GreaterThan: ">", cst.LessThan: "<", cst.LessThanEqual: "<=",
    cst.Equal: "==", cst.NotEqual: "!=",
}
_PARSERS = frozenset({"parse", "Version", "LooseVersion", "StrictVersion", "parse_version"})
_FLAG_RE = re.compile(
    r"torch_(?P<op>greater_equal|greater_or_equal(?:_than)?|ge|geq|gte|greater(?:_than)?|gt|less_than|lt|less_equal|le)_"
    r"(?P<ver>\d+(?:_\d+)*)$",
    re.IGNORECASE,
)
_FLAG_OPS = {
    "greater_equal": ">=", "greater_or_equal": ">=", "greater_or_equal_than": ">=", "ge": ">=", "geq": ">=", "gte": ">=",
    "greater": ">", "greater_than": ">", "gt": ">", "less_than": "<", "lt": "<", "less_equal": "<=", "le": "<=",
}

Constraint = tuple[str, tuple[int, ...]]  # ("<", (1, 11)): the branch runs when torch < 1.11


def legacy_only(mod: ModuleInfo, scope: cst.CSTNode | None, node: cst.CSTNode) -> bool:
    """``node`` (inside ``scope``, a function or the module) only runs on torch < 1.11."""
    root = scope if scope is not None else mod.module
    for test, taken in _branches_to(root, node):
        for op, ver in _constraints(test, taken, mod):
            if _implies_old(op, ver):
                return True
    return False


def _implies_old(op: str, ver: tuple[int, ...]) -> bool:
    ver = _pad(ver)
    since = _pad(USE_REENTRANT_SINCE)
    return (op == "<" and ver <= since) or (op in ("<=", "==") and ver < since)


def _pad(ver: tuple[int, ...]) -> tuple[int, ...]:
    return (ver + (0, 0, 0))[:3]


def _branches_to(root: cst.CSTNode, target: cst.CSTNode) -> list[tuple[cst.BaseExpression, bool]]:
    """The ``(test, taken)`` pairs of every ``if``/``elif``/ternary on the way from ``root`` to ``target``."""
    path = _path(root, target)
    out: list[tuple[cst.BaseExpression, bool]] = []
    for parent, child in zip(path, path[1:]):
        if isinstance(parent, (cst.If, cst.IfExp)) and child is not parent.test:
            out.append((parent.test, child is parent.body))
    return out


def _path(root: cst.CSTNode, target: cst.CSTNode) -> list[cst.CSTNode]:
    stack: list[tuple[cst.CSTNode, int]] = [(root, 0)]
    trail: list[cst.CSTNode] = []
    while stack:
        node, depth = stack.pop()
        del trail[depth:]
        trail.append(node)
        if node is target:
            return trail
        for child in reversed(list(iter_children(node))):
            stack.append((child, depth + 1))
    return []


def _constraints(test: cst.BaseExpression, taken: bool, mod: ModuleInfo) -> Iterator[Constraint]:
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        yield from _constraints(test.expression, not taken, mod)
        return
    if isinstance(test, cst.BooleanOperation):
        # The taken side of ``a and b`` implies both; the other side of ``a or b`` implies neither.
        if (isinstance(test.operator, cst.And) and taken) or (isinstance(test.operator, cst.Or) and not taken):
            yield from _constraints(test.left, taken, mod)
            yield from _constraints(test.right, taken, mod)
        return
    found = _version_test(test, mod, depth=0)
    if found is None:
        return
    op, ver = found
    yield (op, ver) if taken else (_NEGATE[op], ver)


def _version_test(test: cst.BaseExpression, mod: ModuleInfo, depth: int) -> Constraint | None:
    """``(op, version)`` such that ``test`` is true exactly when ``torch <op> version``."""
    if isinstance(test, cst.Call):
        return _version_call(test)
    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1:
        return _comparison(test)
    if isinstance(test, (cst.Name, cst.Attribute)):
        name = test.value if isinstance(test, cst.Name) else test.attr.value
        m = _FLAG_RE.search(name)
        if m is not None:
            return _FLAG_OPS[m.group("op").lower()], tuple(int(p) for p in m.group("ver").split("_"))
        if isinstance(test, cst.Name) and depth == 0:
            values = mod.assigns.get(test.value, []) if test.value in mod.assigns else []
            if len(values) == 1:
                return _version_test(values[0], mod, depth + 1)
    return None


def _version_call(call: cst.Call) -> Constraint | None:
    name = _last_name(call.func)
    args = [a.value for a in call.args if a.keyword is None]
    if name == "is_torch_version" and len(args) == 2:
        op, ver = _string(args[0]), _version_literal(args[1])
        if op in _NEGATE and ver is not None:
            return op, ver
    if name in _VERSION_CALLS and args:
        ver = _version_literal(args[0])
        if ver is not None:
            return _VERSION_CALLS[name], ver
    return None


def _comparison(test: cst.Comparison) -> Constraint | None:
    target = test.comparisons[0]
    if isinstance(target.operator, (cst.In, cst.NotIn)):
        # "use_reentrant" in inspect.signature(checkpoint).parameters: true exactly on torch >= 1.11.
        if _string(test.left) == "use_reentrant" and "signature" in (dotted_name(_call_func(target.comparator)) or code_of(target.comparator)):
            return (">=", USE_REENTRANT_SINCE) if isinstance(target.operator, cst.In) else ("<", USE_REENTRANT_SINCE)
        return None
    op = _CMP_OPS.get(type(target.operator))
    if op is None:
        return None
    left, right = test.left, target.comparator
    if _is_torch_version(left):
        ver = _version_literal(right)
        return (op, ver) if ver is not None else None
    if _is_torch_version(right):
        ver = _version_literal(left)
        return (_FLIP[op], ver) if ver is not None else None
    return None


def _is_torch_version(expr: cst.BaseExpression) -> bool:
    """``torch.__version__``, ``version.parse(torch.__version__)[.base_version]``, ``TORCH_VERSION``."""
    expr = _unwrap(expr)
    text = dotted_name(expr) or ""
    if text in ("torch.__version__", "torch.version.__version__"):
        return True
    last = text.rsplit(".", 1)[-1].lower()
    return last in ("torch_version", "_torch_version", "torch_ver")


def _unwrap(expr: cst.BaseExpression) -> cst.BaseExpression:
    for _ in range(4):
        if isinstance(expr, cst.Attribute) and expr.attr.value in ("base_version", "release"):
            expr = expr.value
        elif isinstance(expr, cst.Call) and _last_name(expr.func) in _PARSERS and len(expr.args) == 1:
            expr = expr.args[0].value
        else:
            break
    return expr


def _version_literal(expr: cst.BaseExpression) -> tuple[int, ...] | None:
    expr = _unwrap(expr)
    text = _string(expr)
    if text is not None:
        m = re.match(r"^\s*(\d+(?:\.\d+)*)", text)
        return tuple(int(p) for p in m.group(1).split(".")) if m else None
    if isinstance(expr, cst.Tuple) and expr.elements and all(isinstance(e.value, cst.Integer) for e in expr.elements):
        return tuple(int(e.value.value, 0) for e in expr.elements)  # type: ignore[attr-defined]
    return None


def _string(expr: cst.BaseExpression) -> str | None:
    if isinstance(expr, cst.SimpleString):
        value = expr.evaluated_value
        return value if isinstance(value, str) else None
    return None


def _last_name(expr: cst.BaseExpression) -> str:
    if isinstance(expr, cst.Name):
        return expr.value
    if isinstance(expr, cst.Attribute):
        return expr.attr.value
    return ""


def _call_func(expr: cst.BaseExpression) -> cst.BaseExpression:
    """``inspect.signature(f).parameters`` -> ``inspect.signature``."""
    while isinstance(expr, cst.Attribute):
        expr = expr.value
    return expr.func if isinstance(expr, cst.Call) else expr

