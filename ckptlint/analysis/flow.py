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

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.infer.lattice import Instance, literal_truth
from ckptlint.analysis.walk import iter_children, walk
from ckptlint.infer.resolver import CallableRef, Ctx, Resolver, first_param
from ckptlint.project import ModuleInfo, dotted_name

__all__ = ["CallEvent", "Event", "FlowAnalyzer", "GlobalWriteEvent", "Root", "Visit", "WriteEvent"]


@dataclass(frozen=True)
class Root:
    """What the base variable of an expression is, seen from the function."""

    kind: str  # input | self | global | closure | outer | module | local | unknown
    name: str  # the variable as written
    origin: str | None = None  # for ``input``: the checkpoint input it aliases
    qualnames: tuple[str, ...] = ()  # for ``module``: qualified names of the whole expression
    through_attribute: bool = False  # reached via ``.attr`` (not a view attribute)
    # The expression is the function's own ``*args``/``**kwargs`` container:
    # built fresh for every call, so mutating the container itself is harmless.
    fresh_container: bool = False


LOCAL = Root("local", "")
UNKNOWN = Root("unknown", "")


@dataclass
class CallEvent:
    call: cst.Call
    stmt: cst.CSTNode
    qualnames: tuple[str, ...]
    method: str | None
    receiver: Root | None
    args: tuple[tuple[str | None, cst.BaseExpression, Root, str], ...]  # keyword, value, root, star
    instances: tuple[Instance, ...]
    is_statement: bool
    in_with: bool
    receiver_instances: tuple[Instance, ...] = ()  # objects a method is called on (``self.rng``)


@dataclass
class WriteEvent:
    target: cst.BaseExpression
    stmt: cst.CSTNode
    kind: str  # assign | aug | del
    root: Root
    aug: cst.AugAssign | None = None
    target_qualnames: tuple[str, ...] = ()
    # Inside ``if self.x is None: self.x = ...``-style fill-once blocks: the
    # recompute finds the state already filled and writes nothing new.
    memoized: bool = False


@dataclass
class GlobalWriteEvent:
    name: str
    target: cst.BaseExpression
    stmt: cst.CSTNode
    keyword: str  # global | nonlocal


Event = CallEvent | WriteEvent | GlobalWriteEvent


@dataclass
class Visit:
    """One analysed function body: where events come from."""

    ref: CallableRef
    module: ModuleInfo
    chain: tuple[str, ...]
    taint: dict[str, str]  # parameter -> checkpoint input it carries


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
        self._returns: dict[tuple[object, ...], _Returns] = {}
        self._stack: list[tuple[int, int | None]] = []
        # Parameter names the checkpoint wrapper sets to None for the whole call
        # tree (transformers' GradientCheckpointingLayer: cache, layer_past...).
        self.nulled: frozenset[str] = frozenset()

    # -- entry -------------------------------------------------------------------------

    def run(self, ref: CallableRef, inputs: frozenset[str], chain: tuple[str, ...] = (), depth: int = 0, memo_extra: object = None) -> None:
        taint = {name: name for name in inputs}
        self._run(ref, taint, (*chain, ref.name), depth, memo_extra)

    def _run(
        self, ref: CallableRef, taint: dict[str, str], chain: tuple[str, ...], depth: int, memo_extra: object,
        fresh: frozenset[str] = frozenset(), consts: frozenset[tuple[str, bool]] = frozenset(),
    ) -> _Returns | None:
        key = (ref.key, frozenset(taint.items()), memo_extra, id(ref.outer) if ref.outer else None, fresh, consts)
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
                closure=ref.closure, closure_refs=ref.closure_refs, outer=ref.outer,
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


@dataclass
class _Returns:
    """Which inputs a function's return value may alias (whole, or per tuple element)."""

    whole: str | None = None
    elements: list[str | None] | None = None

    def merge(self, other: _Returns) -> None:
        self.whole = self.whole or other.whole
        if other.elements is not None:
            if self.elements is None:
                self.elements = list(other.elements)
            elif len(self.elements) == len(other.elements):
                self.elements = [a or b for a, b in zip(self.elements, other.elements)]


class _Walker:
    def __init__(self, analyzer: FlowAnalyzer, state: _FunctionState, visit: Visit, depth: int, memo_extra: object) -> None:
        self.a = analyzer
        self.s = state
        self.visit = visit
        self.depth = depth
        self.memo_extra = memo_extra
        self.stmt: cst.CSTNode = state.ref.node
        self.in_with = False
        self.statement_expr: cst.BaseExpression | None = None
        self.returns = _Returns()
        self.memo_blocks = 0
        self.call_returns: dict[int, _Returns] = {}  # id(call) -> what the followed callee returned

    def record_return(self, value: cst.BaseExpression) -> None:
        if isinstance(value, cst.Tuple):
            r = _Returns(None, [self.alias_origin(el.value) if not isinstance(el, cst.StarredElement) else None for el in value.elements])
        else:
            r = _Returns(self.alias_origin(value))
        self.returns.merge(r)

    # -- classification -------------------------------------------------------------

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
                self.a.emit(GlobalWriteEvent(name, target, self.stmt, "global" if name in s.globals else "nonlocal"), self.visit)
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
            self.write(target, "assign")

    def write(self, target: cst.BaseExpression, kind: str, aug: cst.AugAssign | None = None) -> None:
        self.expr_children_of_target(target)
        r = self.root(target)
        if isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name) and self.root(target.value).fresh_container:
            r = Root(r.kind, r.name, r.origin, r.qualnames, r.through_attribute, True)
        quals: tuple[str, ...] = ()
        if isinstance(target, (cst.Attribute, cst.Name)):
            quals = tuple(self.a.resolver.qualnames(target, self.s.ctx)) if r.kind == "module" else ()
        self.a.emit(WriteEvent(target, self.stmt, kind, r, aug, quals, self.memo_blocks > 0), self.visit)

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
            try:
                if known is not False:
                    self.block(stmt.body.body)
            finally:
                self.memo_blocks -= memo
            if known is True:
                return
            orelse = stmt.orelse
            if isinstance(orelse, cst.If):
                self.statement(orelse)
            elif isinstance(orelse, cst.Else):
                self.block(orelse.body.body)
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
        if any(star for _, _, _, star in args):
            return out
        given: dict[str, cst.BaseExpression] = {}
        i = 0
        for keyword, value, _, _ in args:
            if keyword is None:
                if i < len(positional):
                    given[positional[i].name.value] = value
                i += 1
            else:
                given[keyword] = value
        for param in (*positional, *p.kwonly_params):
            name = param.name.value
            value = given.get(name, param.default)
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
        """``if self.pad is None: self.pad = ...`` / ``if k not in self.cache: self.cache[k] = ...``."""
        self_name = self.s.ctx.self_name
        if self_name is None:
            return False
        tested = _self_attrs(stmt.test, self_name)
        if not tested:
            return False
        for node in walk(stmt.body):
            targets: list[cst.BaseExpression] = []
            if isinstance(node, cst.Assign):
                targets = [t.target for t in node.targets]
            elif isinstance(node, (cst.AnnAssign, cst.AugAssign)):
                targets = [node.target]
            for t in targets:
                if _self_attrs(t, self_name) & tested:
                    return True
        return False

    def _iter_origin(self, it: cst.BaseExpression) -> str | None:
        if isinstance(it, cst.Call) and dotted_name(it.func) in ("enumerate", "zip", "reversed", "list", "tuple"):
            for a in it.args:
                o = self.alias_origin(a.value)
                if o:
                    return o
        return None

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
        if isinstance(node, cst.Lambda) or isinstance(node, (cst.SimpleString, cst.Integer, cst.Float, cst.Name)):
            return
        if isinstance(node, (cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp)):
            self.comprehension(node)
            return
        if isinstance(node, cst.NamedExpr):
            self.expr(node.value, top)
            self.bind(node.target, self.alias_origin(node.value), node.value)
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
        merged: _Returns | None = None
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
                    merged = _Returns()
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


def _self_attrs(node: cst.CSTNode, self_name: str) -> set[str]:
    out: set[str] = set()
    for n in walk(node):
        if isinstance(n, cst.Attribute) and isinstance(n.value, cst.Name) and n.value.value == self_name:
            out.add(n.attr.value)
    return out


def _del_targets(node: cst.BaseExpression) -> Iterator[cst.BaseExpression]:
    if isinstance(node, (cst.Tuple, cst.List)):
        for el in node.elements:
            yield from _del_targets(el.value)
    else:
        yield node
