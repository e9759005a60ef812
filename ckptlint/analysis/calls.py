"""Calls in a checked body: the event for each, and following helpers defined in the checked tree."""

from __future__ import annotations

from typing import Any

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.analysis.events import CallEvent, Returns, Root
from ckptlint.infer.lattice import Instance
from ckptlint.infer.resolver import CallableRef

__all__ = ["CallsMixin"]


class CallsMixin:
    """Methods of the flow walker (``flow._Walker``); they use its analyzer ``a`` and state ``s``."""

    a: Any
    s: Any

    def call(self, call: cst.Call) -> None:
        ctx = self.s.ctx
        func = call.func
        resolver = self.a.resolver
        quals: tuple[str, ...] = ()
        method: str | None = None
        receiver: Root | None = None
        if isinstance(func, (cst.Name, cst.Attribute)):
            if isinstance(func, cst.Name) and func.value in self.s.locals and func.value not in self.s.local_imports:
                quals = ()
            else:
                base = func
                while isinstance(base, cst.Attribute):
                    base = base.value
                if isinstance(base, cst.Name):
                    r = self.root_of_name(base.value)
                    if r.kind in ("module", "unknown", "outer"):
                        quals = tuple(resolver.qualnames(func, ctx))
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            receiver = self.root(func.value)
        args = tuple(
            (a.keyword.value if a.keyword is not None else None, a.value, self.root(a.value), a.star)
            for a in call.args
        )
        instances: tuple[Instance, ...] = ()
        if not quals or not any(q.startswith(("torch.", "numpy.", "random.")) for q in quals):
            try:
                instances = tuple(resolver.instances(func, ctx))
            except RecursionError:
                instances = ()
        receiver_instances: tuple[Instance, ...] = ()
        if isinstance(func, cst.Attribute) and receiver is not None and receiver.kind in ("self", "outer", "global", "closure", "input"):
            try:
                receiver_instances = tuple(resolver.instances(func.value, ctx))
            except RecursionError:
                receiver_instances = ()
        event = CallEvent(
            call, self.stmt, quals, method, receiver, args, instances,
            is_statement=self.statement_expr is call, in_with=self.in_with, receiver_instances=receiver_instances,
        )
        self.a.emit(event, self.visit)
        if self.depth < self.a.max_helper_depth and not self.a.is_checkpoint_call(call, ctx):
            self.follow(call, args)

    def follow(self, call: cst.Call, args: tuple[tuple[str | None, cst.BaseExpression, Root, str], ...]) -> None:
        resolver = self.a.resolver
        try:
            refs = resolver.resolve(call.func, self.s.ctx)
        except RecursionError:
            return
        merged: Returns | None = None
        project = resolver.project
        for ref in refs:
            is_forward = isinstance(ref.node, cst.FunctionDef) and ref.node.name.value == "forward"
            if ref.cls is not None and is_forward:
                # A BatchNorm subclass's own forward (timm's BatchNormAct2d): its
                # running-stat updates are reported once, at the call (CKP204).
                if project.all_base_names(ref.cls) & (N.BATCHNORM_CLASSES | N.INSTANCENORM_CLASSES):
                    continue
            fresh: set[str] = set()
            taint = self._map_args(ref, args, fresh) if ref.receives_input else {}
            returned = self.a._run(
                ref, taint, (*self.visit.chain, ref.name), self.depth + 1, self.memo_extra, frozenset(fresh),
                frozenset(self._const_args(ref, args).items()),
            )
            if returned is not None:
                if merged is None:
                    merged = Returns()
                merged.merge(returned)
        if merged is not None and (merged.whole or (merged.elements and any(merged.elements))):
            self.call_returns[id(call)] = merged

    def _map_args(
        self, ref: CallableRef, args: tuple[tuple[str | None, cst.BaseExpression, Root, str], ...], fresh: set[str]
    ) -> dict[str, str]:
        node = ref.node
        p = node.params
        positional = [x.name.value for x in (*p.posonly_params, *p.params)]
        if ref.bound and positional:
            positional = positional[1:]
        positional = positional[ref.partial_positional :]
        by_name = set(positional) | {x.name.value for x in p.kwonly_params}
        star = p.star_arg.name.value if isinstance(p.star_arg, cst.Param) else None
        star_kw = p.star_kwarg.name.value if isinstance(p.star_kwarg, cst.Param) else None
        taint: dict[str, str] = {}
        # Parameters bound explicitly by this call: ``**kwargs`` cannot reach them.
        bound: set[str] = set()
        npos = 0
        for keyword, _, _, star_mark in args:
            if star_mark == "*":
                npos = len(positional)
            elif not star_mark and keyword is None:
                npos += 1
            elif keyword is not None:
                bound.add(keyword)
        bound.update(positional[:npos])
        i = 0
        nulled = self.a.nulled
        for keyword, value, root, star_mark in args:
            if keyword is not None and keyword in nulled:
                continue
            origin = root.origin if root.kind == "input" else self.alias_origin(value)
            if root.kind == "input" and origin is None:
                origin = root.origin
            if star_mark == "*":
                if origin:
                    for name in positional[i:]:
                        taint[name] = origin
                    if star:
                        taint[star] = origin
                i = len(positional)
                continue
            if star_mark == "**":
                if origin:
                    for name in by_name - bound:
                        taint.setdefault(name, origin)
                    if star_kw:
                        taint[star_kw] = origin
                continue
            if keyword is None:
                if i < len(positional):
                    if origin:
                        taint[positional[i]] = origin
                        if root.fresh_container:
                            fresh.add(positional[i])
                elif star and origin:
                    taint[star] = origin
                i += 1
            else:
                if keyword in by_name:
                    if origin:
                        taint[keyword] = origin
                        if root.fresh_container:
                            fresh.add(keyword)
                elif star_kw and origin:
                    taint[star_kw] = origin
        for name in nulled:
            taint.pop(name, None)
        return taint
