"""Branches the flow walker can decide statically: literal and constructor-constant conditions, memo blocks."""

from __future__ import annotations

from typing import Any

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.analysis.events import Root
from ckptlint.analysis.walk import walk
from ckptlint.infer.lattice import literal_truth
from ckptlint.infer.resolver import CallableRef, first_param
from ckptlint.project import dotted_name

__all__ = ["BranchesMixin", "self_attrs"]


class BranchesMixin:
    """Methods of the flow walker (``flow._Walker``); they use its analyzer ``a`` and state ``s``."""

    a: Any
    s: Any

    def truth(self, test: cst.BaseExpression) -> bool | None:
        """Truth value of a branch condition when the call fixes it, else None."""
        if isinstance(test, cst.Name):
            if test.value in self.s.consts:
                return self.s.consts[test.value]
            return literal_truth(test)
        if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
            inner = self.truth(test.expression)
            return None if inner is None else not inner
        if isinstance(test, cst.BooleanOperation):
            left, right = self.truth(test.left), self.truth(test.right)
            if isinstance(test.operator, cst.And):
                if left is False or right is False:
                    return False
                return True if left and right else None
            if left is True or right is True:
                return True
            return False if left is False and right is False else None
        if (
            isinstance(test, cst.Attribute)
            and isinstance(test.value, cst.Name)
            and test.value.value == self.s.ctx.self_name
        ):
            return self._self_const(test.attr.value)
        return None

    def _self_const(self, attr: str) -> bool | None:
        """``self.inplace`` when ``__init__`` stored a parameter the construction fixed."""
        ref = self.s.ref
        inst, cls = ref.instance, ref.cls
        if inst is None or cls is None:
            return None
        init = cls.methods.get("__init__")
        if init is None:
            return None
        env = self.a.resolver.evaluator.env_of(init, first_param(init))
        values = env.self_attrs.get(attr, [])
        if len(values) != 1:
            return None
        value = values[0]
        if not isinstance(value, cst.Name) or value.value in ("True", "False", "None"):
            return literal_truth(value)
        params = [p for p in (*init.params.posonly_params, *init.params.params)][1:]
        names = [p.name.value for p in params]
        if value.value not in names and value.value not in {p.name.value for p in init.params.kwonly_params}:
            return None
        if inst.call is None or any(a.star for a in inst.call.args):
            return None
        position = names.index(value.value) if value.value in names else None
        given = inst.kwarg(value.value, position)
        if given is not None:
            return literal_truth(given)
        for p in (*params, *init.params.kwonly_params):
            if p.name.value == value.value and p.default is not None:
                return literal_truth(p.default)
        return None

    def _const_args(
        self, ref: CallableRef, args: tuple[tuple[str | None, cst.BaseExpression, Root, str], ...]
    ) -> dict[str, bool]:
        """Callee parameters with a truth value fixed by this call (literals, defaults)."""
        p = ref.node.params
        positional = [x for x in (*p.posonly_params, *p.params)]
        if ref.bound and positional:
            positional = positional[1:]
        positional = positional[ref.partial_positional :]
        out: dict[str, bool] = {}
        # With ``*args``/``**kwargs`` at the call, only what it spells out by keyword (and the
        # positions before the first star) is fixed: a default may be overridden by the star.
        starred = any(star for _, _, _, star in args)
        given: dict[str, cst.BaseExpression] = {}
        i = 0
        for keyword, value, _, star in args:
            if star == "*":
                i = len(positional)
            elif star:
                continue
            elif keyword is None:
                if i < len(positional):
                    given[positional[i].name.value] = value
                i += 1
            else:
                given[keyword] = value
        for param in (*positional, *p.kwonly_params):
            name = param.name.value
            value = given.get(name, None if starred else param.default)
            if value is None:
                continue
            known = literal_truth(value)
            if known is None and name in given:
                known = self.truth(value)
            if known is not None:
                out[name] = known
        return out

    def _owned_by_self(self, value: cst.BaseExpression) -> bool:
        if isinstance(value, cst.Call) and dotted_name(value.func) in ("zip", "enumerate", "reversed", "list", "tuple", "iter"):
            return any(self._owned_by_self(a.value) for a in value.args)
        if not isinstance(value, (cst.Name, cst.Attribute, cst.Subscript, cst.Call)):
            return False
        if isinstance(value, cst.Call) and not (
            isinstance(value.func, cst.Attribute) and value.func.attr.value in N.OWNED_ITER_METHODS
        ):
            return False
        r = self.root(value)
        return r.kind == "self" and (r.through_attribute or isinstance(value, cst.Call))

    def _is_memo_block(self, stmt: cst.If) -> bool:
        """A fill-once block: ``if self.pad is None: self.pad = ...``, ``if k not in self.cache: self.cache[k] =
        ...``, and the module-level memos ``global _EXT; if _EXT is None: _EXT = load(...)`` and
        ``eng = _ENGINES.get(key); if eng is None: _ENGINES[key] = eng = make(...)``."""
        self_name = self.s.ctx.self_name
        tested = self_attrs(stmt.test, self_name) if self_name is not None else set()
        env = self.s.ctx.env
        params = set(env.params) if env is not None else set()
        names = self._tested_names(stmt.test) - params  # an input's own fill is not a memo of this code's
        if not tested and not names:
            return False
        for node in walk(stmt.body):
            targets: list[cst.BaseExpression] = []
            if isinstance(node, cst.Assign):
                targets = [t.target for t in node.targets]
            elif isinstance(node, (cst.AnnAssign, cst.AugAssign)):
                targets = [node.target]
            for t in targets:
                if self_name is not None and self_attrs(t, self_name) & tested:
                    return True
                base = t.value if isinstance(t, cst.Subscript) else t
                if isinstance(base, cst.Name) and base.value in names:
                    return True
        return False

    def _tested_names(self, test: cst.BaseExpression) -> set[str]:
        """Plain names a test reads, and the dict a tested local was looked up in (``eng = D.get(k)``)."""
        names = {n.value for n in walk(test) if isinstance(n, cst.Name) and n.value not in ("None", "True", "False")}
        env = self.s.ctx.env
        if env is None:
            return names
        for name in list(names):
            for value in env.values.get(name, ()):
                looked: cst.BaseExpression | None = None
                if isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and value.func.attr.value == "get":
                    looked = value.func.value  # ``eng = _ENGINES.get(key)``
                elif isinstance(value, cst.Subscript):
                    looked = value.value  # ``eng = _ENGINES[key]``
                if isinstance(looked, cst.Name):
                    names.add(looked.value)
        return names

    def _iter_origin(self, it: cst.BaseExpression) -> str | None:
        if isinstance(it, cst.Call) and dotted_name(it.func) in ("enumerate", "zip", "reversed", "list", "tuple"):
            for a in it.args:
                o = self.alias_origin(a.value)
                if o:
                    return o
        return None


def self_attrs(node: cst.CSTNode, self_name: str) -> set[str]:
    out: set[str] = set()
    for n in walk(node):
        if isinstance(n, cst.Attribute) and isinstance(n.value, cst.Name) and n.value.value == self_name:
            out.add(n.attr.value)
    return out
