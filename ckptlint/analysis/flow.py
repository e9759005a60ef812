"""Per-function analysis: which values alias an input, and what the body does.

One pass over a checked function body in statement order. It keeps the set
of local names that currently alias a checkpoint input (``h = x``,
``x.view(...)``, ``x[...]``, ``x.data``; rebinding ``x = x + 1`` ends the
alias) and turns every call and every write into an :class:`Event` with its
target classified (:class:`Root`: an input, ``self``, a global, a closure
variable, a fresh local...). Rules only look at events. Calls into helpers
defined in the checked tree are followed, mapping which helper parameters
receive input aliases, up to ``max_helper_depth``.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import libcst as cst

from ckptlint.analysis.branches import BranchesMixin
from ckptlint.analysis.calls import CallsMixin
from ckptlint.analysis.events import CallEvent, Event, GlobalWriteEvent, Returns, Root, Visit, WriteEvent
from ckptlint.analysis.roots import RootsMixin
from ckptlint.analysis.walk import iter_children
from ckptlint.infer.resolver import CallableRef, Ctx, Resolver, first_param

__all__ = ["CallEvent", "Event", "FlowAnalyzer", "GlobalWriteEvent", "Root", "Visit", "WriteEvent"]


class _FunctionState:
    def __init__(self, ref: CallableRef, ctx: Ctx, taint: dict[str, str], fresh: frozenset[str] = frozenset()) -> None:
        self.ref = ref
        self.ctx = ctx
        self.taint = dict(taint)
        self.globals: set[str] = set()
        self.nonlocals: set[str] = set()
        node = ref.node
        p = node.params
        self.params = {x.name.value for x in (*p.posonly_params, *p.params, *p.kwonly_params)}
        for star in (p.star_arg, p.star_kwarg):
            if isinstance(star, cst.Param):
                self.params.add(star.name.value)
        self.star_params = {x.name.value for x in (p.star_arg, p.star_kwarg) if isinstance(x, cst.Param)}
        # Containers built fresh for this call: its own ``*args``/``**kwargs``
        # and parameters that received a caller's fresh ``**kwargs`` dict.
        self.fresh: set[str] = (self.star_params & set(taint)) | set(fresh)
        self.self_alias: set[str] = set()
        # Parameters whose truth value is known from the call (``inplace=False``
        # by default): branches on them that cannot run are skipped.
        self.consts: dict[str, bool] = {}
        self.locals = set(self.params)
        env = ctx.env
        if env is not None:
            self.locals |= set(env.values) | set(env.loop_iters) | set(env.inner_defs)
        self.comprehension_scopes: list[set[str]] = []
        self.local_imports: dict[str, list[str]] = {}


_INERT_EXPRS = frozenset({cst.Lambda, cst.SimpleString, cst.Integer, cst.Float, cst.Name})
_COMPREHENSIONS = frozenset({cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp})


class FlowAnalyzer:
    """Walks checked functions and their helpers, emitting events."""

    def __init__(
        self,
        resolver: Resolver,
        max_helper_depth: int,
        emit: Callable[[Event, Visit], None],
        is_checkpoint_call: Callable[[cst.Call, Ctx], bool],
    ) -> None:
        self.resolver = resolver
        self.max_helper_depth = max_helper_depth
        self.emit = emit
        self.is_checkpoint_call = is_checkpoint_call
        self._done: set[tuple[object, ...]] = set()
        self._returns: dict[tuple[object, ...], Returns] = {}
        self._stack: list[tuple[int, int | None]] = []
        # Parameter names the checkpoint wrapper sets to None for the whole call
        # tree (transformers' GradientCheckpointingLayer: cache, layer_past...).
        self.nulled: frozenset[str] = frozenset()

    # -- entry -------------------------------------------------------------------------

    def run(
        self, ref: CallableRef, inputs: frozenset[str], chain: tuple[str, ...] = (), depth: int = 0, memo_extra: object = None,
        consts: frozenset[tuple[str, bool]] = frozenset(),
    ) -> None:
        taint = {name: name for name in inputs}
        self._run(ref, taint, (*chain, ref.name), depth, memo_extra, consts=consts)

    def _run(
        self, ref: CallableRef, taint: dict[str, str], chain: tuple[str, ...], depth: int, memo_extra: object,
        fresh: frozenset[str] = frozenset(), consts: frozenset[tuple[str, bool]] = frozenset(),
    ) -> Returns | None:
        inst = ref.instance
        # A checked module built with arguments (``Residual(nn.Sequential(...))``) is analysed per
        # construction; helpers below it once per class (their first construction's arguments).
        built = None
        if depth == 0 and inst is not None and inst.call is not None and inst.call.args and inst.frame is not None:
            built = (id(inst.call), id(inst.frame.env))
        key = (ref.key, frozenset(taint.items()), memo_extra, id(ref.outer) if ref.outer else None, fresh, consts, built)
        if key in self._done:
            return self._returns.get(key)
        if ref.key in self._stack:
            return None
        self._done.add(key)
        self._stack.append(ref.key)
        try:
            self_name = first_param(ref.node) if ref.bound else None
            if self_name is None and ref.outer is not None:
                self_name = ref.outer.self_name  # lambdas and closures see the method's ``self``
            env = self.resolver.evaluator.env_of(ref.node, self_name)
            ctx = Ctx(
                ref.module, ref.cls, ref.node, env, self_name, ref.name,
                closure=ref.closure, closure_refs=ref.closure_refs, outer=ref.outer, instance=ref.instance,
            )
            state = _FunctionState(ref, ctx, taint, fresh)
            state.consts = dict(consts)
            visit = Visit(ref, ref.module, chain, dict(taint))
            walker = _Walker(self, state, visit, depth, memo_extra)
            node = ref.node
            if isinstance(node, cst.Lambda):
                walker.expr(node.body, node.body)
                walker.record_return(node.body)
            elif isinstance(node.body, cst.IndentedBlock):
                walker.block(node.body.body)
            else:
                walker.block([node.body])
            self._returns[key] = walker.returns
            return walker.returns
        finally:
            self._stack.pop()


class _Walker(RootsMixin, BranchesMixin, CallsMixin):
    def __init__(self, analyzer: FlowAnalyzer, state: _FunctionState, visit: Visit, depth: int, memo_extra: object) -> None:
        self.a = analyzer
        self.s = state
        self.visit = visit
        self.depth = depth
        self.memo_extra = memo_extra
        self.stmt: cst.CSTNode = state.ref.node
        self.in_with = False
        self.statement_expr: cst.BaseExpression | None = None
        self.returns = Returns()
        self.memo_blocks = 0
        self.call_returns: dict[int, Returns] = {}  # id(call) -> what the followed callee returned

    def record_return(self, value: cst.BaseExpression) -> None:
        if isinstance(value, cst.Tuple):
            r = Returns(None, [self.alias_origin(el.value) if not isinstance(el, cst.StarredElement) else None for el in value.elements])
        else:
            r = Returns(self.alias_origin(value))
        self.returns.merge(r)

    # -- classification -------------------------------------------------------------

    def _snapshot(self) -> tuple[dict[str, str], set[str], dict[str, bool], set[str]]:
        s = self.s
        return dict(s.taint), set(s.fresh), dict(s.consts), set(s.self_alias)

    def _restore(self, snap: tuple[dict[str, str], set[str], dict[str, bool], set[str]]) -> None:
        """Back to ``snap`` (a snapshot taken for this and used by nobody else: no copy)."""
        s = self.s
        s.taint, s.fresh, s.consts, s.self_alias = snap

    def _join(self, other: tuple[dict[str, str], set[str], dict[str, bool], set[str]]) -> None:
        """May-alias join of two arms: aliased (or owned by self) in either, fresh / constant in both."""
        s = self.s
        for name, origin in other[0].items():
            s.taint.setdefault(name, origin)
        s.fresh &= other[1]
        s.consts = {k: v for k, v in s.consts.items() if other[2].get(k) == v}
        s.self_alias |= other[3]

    def block(self, body: Sequence[cst.CSTNode]) -> None:
        for stmt in body:
            try:
                self.statement(stmt)
            except RecursionError:
                # A statement nested deeper than Python's recursion limit
                # (generated code): skipped rather than failing the file.
                continue

    def statement(self, stmt: cst.CSTNode) -> None:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                self.stmt = stmt
                self.small(small)
            return
        if isinstance(stmt, cst.If):
            self.stmt = stmt.test
            self.expr(stmt.test, stmt.test)
            known = self.truth(stmt.test)
            memo = self._is_memo_block(stmt)
            self.memo_blocks += memo
            before = self._snapshot() if known is None else None
            try:
                if known is not False:
                    self.block(stmt.body.body)
            finally:
                self.memo_blocks -= memo
            if known is True:
                return
            # The other arm starts from the state before the test, not from the body's end
            # (``if b is None: b = x`` / ``else: b += x`` adds to the module's own tensor);
            # after the statement a name holds what either arm left in it.
            after_body = self._snapshot() if before is not None else None
            if before is not None:
                self._restore(before)
            orelse = stmt.orelse
            if isinstance(orelse, cst.If):
                self.statement(orelse)
            elif isinstance(orelse, cst.Else):
                self.block(orelse.body.body)
            if after_body is not None:
                self._join(after_body)
            return
        if isinstance(stmt, cst.For):
            self.stmt = stmt.iter
            self.expr(stmt.iter, stmt.iter)
            origin = self.alias_origin(stmt.iter) or self._iter_origin(stmt.iter)
            owned = origin is None and self._owned_by_self(stmt.iter)
            self.bind(stmt.target, origin, None)
            if owned:
                for t in _del_targets(stmt.target):
                    if isinstance(t, cst.Name):
                        self.s.self_alias.add(t.value)
            # Twice: an alias created late in the body reaches the next iteration.
            self.block(stmt.body.body)
            if stmt.orelse is not None:
                self.block(stmt.orelse.body.body)
            return
        if isinstance(stmt, cst.While):
            self.stmt = stmt.test
            self.expr(stmt.test, stmt.test)
            self.block(stmt.body.body)
            if stmt.orelse is not None:
                self.block(stmt.orelse.body.body)
            return
        if isinstance(stmt, cst.With):
            for item in stmt.items:
                self.stmt = item.item
                self.in_with = True
                try:
                    self.expr(item.item, item.item)
                finally:
                    self.in_with = False
                if item.asname is not None:
                    self.bind(item.asname.name, None, None)
            self.block(stmt.body.body)
            return
        if isinstance(stmt, cst.Try):
            self.block(stmt.body.body)
            for h in stmt.handlers:
                self.block(h.body.body)
            if stmt.orelse is not None:
                self.block(stmt.orelse.body.body)
            if stmt.finalbody is not None:
                self.block(stmt.finalbody.body.body)
            return
        if isinstance(stmt, cst.Match):
            self.stmt = stmt.subject
            self.expr(stmt.subject, stmt.subject)
            for case in stmt.cases:
                self.block(case.body.body)
            return
        # FunctionDef/ClassDef: defining is not running; calls to them are followed.

    def small(self, small: cst.BaseSmallStatement) -> None:
        s = self.s
        if isinstance(small, cst.Assign):
            self.expr(small.value, small.value)
            origin = self.alias_origin(small.value)
            for t in small.targets:
                self.bind(t.target, origin, small.value)
        elif isinstance(small, cst.AnnAssign):
            if small.value is not None:
                self.expr(small.value, small.value)
                self.bind(small.target, self.alias_origin(small.value), small.value)
        elif isinstance(small, cst.AugAssign):
            self.expr(small.value, small.value)
            target = small.target
            if isinstance(target, cst.Name):
                if target.value in s.globals or target.value in s.nonlocals:
                    self.a.emit(
                        GlobalWriteEvent(target.value, target, self.stmt, "global" if target.value in s.globals else "nonlocal"),
                        self.visit,
                    )
                    return
            self.write(target, "aug", small)
        elif isinstance(small, cst.Del):
            for t in _del_targets(small.target):
                if isinstance(t, cst.Name):
                    if t.value in s.globals or t.value in s.nonlocals:
                        self.a.emit(GlobalWriteEvent(t.value, t, self.stmt, "global" if t.value in s.globals else "nonlocal"), self.visit)
                    s.taint.pop(t.value, None)
                else:
                    self.write(t, "del")
        elif isinstance(small, cst.Expr):
            self.statement_expr = small.value
            try:
                self.expr(small.value, small.value)
            finally:
                self.statement_expr = None
        elif isinstance(small, cst.Return):
            if small.value is not None:
                self.expr(small.value, small.value)
                self.record_return(small.value)
        elif isinstance(small, cst.Global):
            s.globals.update(n.name.value for n in small.names)
        elif isinstance(small, cst.Nonlocal):
            s.nonlocals.update(n.name.value for n in small.names)
        elif isinstance(small, (cst.Import, cst.ImportFrom)):
            s.ctx.module.add_import(small, s.local_imports)
            s.ctx.local_imports = s.local_imports
        elif isinstance(small, (cst.Raise, cst.Assert)):
            for child in small.children:
                if isinstance(child, cst.BaseExpression):
                    self.expr(child, child)

    # -- expressions -----------------------------------------------------------------------

    def expr(self, node: cst.CSTNode, top: cst.CSTNode) -> None:
        # ``type(node) in``: libcst's node classes are ABCs (an isinstance runs Python code), and
        # these concrete classes have no subclasses.
        kind = type(node)
        if kind in _INERT_EXPRS:
            return
        if kind in _COMPREHENSIONS:
            self.comprehension(node)  # type: ignore[arg-type]
            return
        if kind is cst.NamedExpr:
            self.expr(node.value, top)  # type: ignore[attr-defined]
            self.bind(node.target, self.alias_origin(node.value), node.value)  # type: ignore[attr-defined]
            return
        if isinstance(node, cst.IfExp):
            self.expr(node.test, top)
            known = self.truth(node.test)
            if known is not False:
                self.expr(node.body, top)
            if known is not True:
                self.expr(node.orelse, top)
            return
        if isinstance(node, cst.Call):
            # Arguments run before the call.
            self.expr(node.func, top)
            for arg in node.args:
                self.expr(arg.value, top)
            self.call(node)
            return
        for child in iter_children(node):
            self.expr(child, top)

    def comprehension(self, node: cst.ListComp | cst.SetComp | cst.GeneratorExp | cst.DictComp) -> None:
        s = self.s
        scope: set[str] = set()
        s.comprehension_scopes.append(scope)
        saved = dict(s.taint)
        try:
            comp: cst.CompFor | None = node.for_in
            while comp is not None:
                self.expr(comp.iter, comp.iter)
                origin = self.alias_origin(comp.iter) or self._iter_origin(comp.iter)
                for t in _del_targets(comp.target):
                    if isinstance(t, cst.Name):
                        scope.add(t.value)
                        if origin:
                            s.taint[t.value] = origin
                        else:
                            s.taint.pop(t.value, None)
                for cond in comp.ifs:
                    self.expr(cond.test, cond.test)
                comp = comp.inner_for_in
            if isinstance(node, cst.DictComp):
                self.expr(node.key, node.key)
                self.expr(node.value, node.value)
            else:
                self.expr(node.elt, node.elt)
        finally:
            s.comprehension_scopes.pop()
            s.taint = saved

def _del_targets(node: cst.BaseExpression) -> Iterator[cst.BaseExpression]:
    if isinstance(node, (cst.Tuple, cst.List)):
        for el in node.elements:
            yield from _del_targets(el.value)
    else:
        yield node
