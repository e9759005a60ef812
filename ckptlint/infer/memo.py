"""Memoisation of the evaluator's queries, per (expression, scope).

Every query the evaluator answers (what module objects an expression may be, what classes it
names) depends on the expression and on the frame it is evaluated in: the module, the bound local
scope, the class of ``self`` and the object ``self`` is. Results are kept per that key; a query met
again while it is being answered is a cycle (``x = x or Default``) and answers nothing.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import libcst as cst

from ckptlint.infer.lattice import Frame

__all__ = ["memoised"]

_Key = tuple[int, int, int, int]
_T = TypeVar("_T")


def memoised(
    memo: dict[_Key, tuple[cst.BaseExpression, list[_T]]], active: set[_Key],
    expr: cst.BaseExpression, fr: Frame, compute: Callable[[], list[_T]],
) -> list[_T]:
    """``compute()`` once per (expression, scope); a query already in progress (a cycle) is unknown."""
    key = (id(expr), id(fr.env), id(fr.owner), id(fr.instance))
    hit = memo.get(key)
    if hit is not None and hit[0] is expr:  # the node is kept alive by the entry, so its id is not reused
        return list(hit[1])
    if key in active:
        return []
    active.add(key)
    try:
        found = compute()
    finally:
        active.discard(key)
    memo[key] = (expr, found)
    return list(found)
