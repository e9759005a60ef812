"""Classifying what an expression in a checked body is rooted at (input alias, self, global...) and binding names."""

from __future__ import annotations

from typing import Any

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.analysis.events import LOCAL, Root, WriteEvent, GlobalWriteEvent

__all__ = ["RootsMixin"]


class RootsMixin:
    """Methods of the flow walker (``flow._Walker``); they use its analyzer ``a`` and state ``s``."""

    a: Any
    s: Any

    def root_of_name(self, name: str) -> Root:
        s = self.s
        for scope in reversed(s.comprehension_scopes):
            if name in scope:
                origin = s.taint.get(name)
                return Root("input", name, origin) if origin else Root("local", name)
        if name in s.taint:
            fresh = name in s.fresh
            return Root("input", name, s.taint[name], fresh_container=fresh)
        if s.ctx.self_name is not None and name == s.ctx.self_name:
            return Root("self", name)
        if name in s.self_alias:
            return Root("self", name, through_attribute=True)
        if name in s.globals:
            return Root("global", name)
        if name in s.nonlocals:
            return Root("closure", name)
        if name in s.locals or name in s.local_imports:
            return Root("local", name)
        outer = s.ctx.outer
        while outer is not None:
            if outer.env is not None and (name in outer.env.values or name in outer.env.loop_iters):
                return Root("closure", name)
            if outer.fn is not None and name in {p.name.value for p in (*outer.fn.params.params, *outer.fn.params.kwonly_params, *outer.fn.params.posonly_params)}:
                if outer.self_name == name:
                    return Root("self", name)
                return Root("closure", name)
            outer = outer.outer
        mod = s.ctx.module
        if name in mod.imports:
            return Root("module", name, qualnames=tuple(mod.imports[name]))
        if name in mod.defs:
            return Root("module", name, qualnames=(f"{mod.name}.{name}",))
        if name in mod.assigns:
            return Root("outer", name)
        return Root("unknown", name)

    def root(self, expr: cst.BaseExpression) -> Root:
        """Classify the base variable of ``expr`` (through views, items, attributes)."""
        through_attr = False
        node = expr
        while True:
            if isinstance(node, cst.Attribute):
                if node.attr.value in N.NON_TENSOR_ATTRS:
                    return LOCAL
                if node.attr.value not in N.VIEW_ATTRS:
                    through_attr = True
                node = node.value
            elif isinstance(node, cst.Subscript):
                node = node.value
            elif isinstance(node, cst.Call):
                func = node.func
                if isinstance(func, cst.Attribute) and (
                    func.attr.value in N.VIEW_METHODS
                    or func.attr.value in N.OWNED_ITER_METHODS
                    or (func.attr.value.endswith("_") and not func.attr.value.startswith("_"))
                ):
                    node = func.value
                    continue
                quals = self.a.resolver.qualnames(func, self.s.ctx) if isinstance(func, (cst.Name, cst.Attribute)) else []
                if quals and N.matches(quals, N.VIEW_FUNCTIONS) and node.args and node.args[0].keyword is None:
                    node = node.args[0].value
                    continue
                return LOCAL
            elif isinstance(node, cst.Name):
                r = self.root_of_name(node.value)
                if r.fresh_container and node is not expr:
                    r = Root(r.kind, r.name, r.origin, r.qualnames, r.through_attribute, False)
                if r.kind == "module":
                    quals = tuple(self.a.resolver.qualnames(expr, self.s.ctx)) if isinstance(expr, (cst.Name, cst.Attribute)) else r.qualnames
                    return Root("module", r.name, qualnames=quals, through_attribute=through_attr)
                if through_attr:
                    return Root(r.kind, r.name, r.origin, r.qualnames, True)
                return r
            else:
                return LOCAL

    def alias_origin(self, expr: cst.BaseExpression) -> str | None:
        """The input that ``expr`` may share storage with, if any."""
        if isinstance(expr, cst.IfExp):
            return self.alias_origin(expr.body) or self.alias_origin(expr.orelse)
        if isinstance(expr, cst.BooleanOperation):
            return self.alias_origin(expr.left) or self.alias_origin(expr.right)
        if isinstance(expr, cst.NamedExpr):
            return self.alias_origin(expr.value)
        if isinstance(expr, cst.Call):
            returned = self.call_returns.get(id(expr))
            if returned is not None and returned.whole:
                return returned.whole
            func = expr.func
            if isinstance(func, cst.Attribute):
                m = func.attr.value
                if not (m in N.VIEW_METHODS or (m.endswith("_") and not m.startswith("_"))):
                    quals = self.a.resolver.qualnames(func, self.s.ctx)
                    if not (quals and N.matches(quals, N.VIEW_FUNCTIONS)):
                        return None
        elif not isinstance(expr, (cst.Name, cst.Attribute, cst.Subscript)):
            return None
        r = self.root(expr)
        return r.origin if r.kind == "input" else None

    # -- binding ------------------------------------------------------------------------

    def bind(self, target: cst.BaseExpression, origin: str | None, value: cst.BaseExpression | None) -> None:
        s = self.s
        if isinstance(target, cst.Name):
            name = target.value
            if name in s.globals or name in s.nonlocals:
                memoized = self.memo_blocks > 0
                from_inputs = memoized and value is not None and self.reads_input_data(value)
                keyword = "global" if name in s.globals else "nonlocal"
                self.a.emit(GlobalWriteEvent(name, target, self.stmt, keyword, memoized, from_inputs), self.visit)
            s.fresh.discard(name)
            s.consts.pop(name, None)
            if origin is not None:
                s.taint[name] = origin
            else:
                s.taint.pop(name, None)
            # ``w = self.weight`` / ``for p in self.parameters()``: the name now
            # refers to state owned by the module.
            if origin is None and value is not None and self._owned_by_self(value):
                s.self_alias.add(name)
            else:
                s.self_alias.discard(name)
        elif isinstance(target, (cst.Tuple, cst.List)):
            elements = target.elements
            values: list[cst.BaseExpression] | None = None
            if isinstance(value, (cst.Tuple, cst.List)) and len(value.elements) == len(elements):
                values = [el.value for el in value.elements]
            elif isinstance(value, cst.Call):
                returned = self.call_returns.get(id(value))
                if returned is not None and returned.elements is not None and len(returned.elements) == len(elements):
                    for el, o in zip(elements, returned.elements):
                        self.bind(el.value, o, None)
                    return
            for i, el in enumerate(elements):
                sub_origin = self.alias_origin(values[i]) if values is not None else origin
                self.bind(el.value, sub_origin, values[i] if values is not None else None)
        elif isinstance(target, cst.StarredElement):
            self.bind(target.value, origin, None)
        elif isinstance(target, (cst.Attribute, cst.Subscript)):
            self.write(target, "assign", value=value)

    def reads_input_data(self, node: cst.CSTNode) -> bool:
        """Does ``node`` compute with the values of a checkpoint input (not only its shape, dtype, device)?"""
        if isinstance(node, cst.Name):
            return self.root_of_name(node.value).kind == "input"
        if isinstance(node, cst.Attribute):  # ``self.x`` reads ``self``; its attribute name is not a variable
            if isinstance(node.value, cst.Name) and node.attr.value in N.TENSOR_METADATA_ATTRS:
                return False
            return self.reads_input_data(node.value)
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and isinstance(node.func.value, cst.Name) \
                and node.func.attr.value in N.TENSOR_METADATA_METHODS:
            return any(self.reads_input_data(a.value) for a in node.args)
        if isinstance(node, cst.Arg):  # not its ``keyword=``
            return self.reads_input_data(node.value)
        if isinstance(node, (cst.Lambda, cst.BaseComp)):
            return False  # evaluated later (or in its own scope): not followed
        return any(self.reads_input_data(child) for child in node.children)

    def write(self, target: cst.BaseExpression, kind: str, aug: cst.AugAssign | None = None,
              value: cst.BaseExpression | None = None) -> None:
        self.expr_children_of_target(target)
        r = self.root(target)
        if isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name) and self.root(target.value).fresh_container:
            r = Root(r.kind, r.name, r.origin, r.qualnames, r.through_attribute, True)
        quals: tuple[str, ...] = ()
        if isinstance(target, (cst.Attribute, cst.Name)):
            quals = tuple(self.a.resolver.qualnames(target, self.s.ctx)) if r.kind == "module" else ()
        memoized = self.memo_blocks > 0
        from_inputs = memoized and value is not None and self.reads_input_data(value)
        self.a.emit(WriteEvent(target, self.stmt, kind, r, aug, quals, memoized, from_inputs), self.visit)

    def expr_children_of_target(self, target: cst.BaseExpression) -> None:
        # Index expressions in a target run too: ``x[f(y)] = v``.
        node = target
        while isinstance(node, (cst.Attribute, cst.Subscript)):
            if isinstance(node, cst.Subscript):
                for el in node.slice:
                    self.expr(el.slice, el.slice)
            node = node.value
        if isinstance(node, cst.Call):
            self.expr(node, node)

    # -- statements ----------------------------------------------------------------------
