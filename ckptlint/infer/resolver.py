"""From an expression naming a callable to the function bodies it runs.

``checkpoint(self.layer, x)`` runs ``Block.forward`` when ``__init__`` did
``self.layer = Block(...)``; ``checkpoint(create_custom_forward(layer), x)``
runs the closure the factory returns, which calls ``layer``. This module
turns such expressions into :class:`CallableRef` records that the flow
analysis can walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.infer.evaluator import Evaluator
from ckptlint.infer.lattice import Instance
from ckptlint.infer.scope import Env, first_param
from ckptlint.project import ClassInfo, FunctionInfo, ModuleInfo, Project, dotted_name

__all__ = ["CallableRef", "Ctx", "Resolver", "first_param"]

MAX_DEPTH = 5


@dataclass
class Ctx:
    """Where an expression is evaluated: module, class of ``self``, local scope."""

    module: ModuleInfo
    cls: ClassInfo | None = None
    fn: cst.FunctionDef | cst.Lambda | None = None
    env: Env | None = None
    self_name: str | None = None
    qualname: str = "<module>"  # short name of the enclosing function ("Block.forward")
    closure: dict[str, list[Instance]] = field(default_factory=dict)
    closure_refs: dict[str, list[CallableRef]] = field(default_factory=dict)
    local_imports: dict[str, list[str]] = field(default_factory=dict)
    outer: Ctx | None = None  # enclosing function scope for closures/lambdas
    instance: Instance | None = None  # the object ``self`` is, when known


@dataclass
class CallableRef:
    """A function body that some call will execute."""

    node: cst.FunctionDef | cst.Lambda
    module: ModuleInfo
    cls: ClassInfo | None  # class of ``self`` inside the body
    name: str  # short display name: "Block.forward", "Model.forward.<lambda>"
    bound: bool = False  # first parameter is ``self`` (already bound)
    partial_positional: int = 0  # leading parameters bound by functools.partial
    nulled: frozenset[str] = frozenset()  # parameters fixed to None/False by the caller
    closure: dict[str, list[Instance]] = field(default_factory=dict)
    closure_refs: dict[str, list[CallableRef]] = field(default_factory=dict)
    outer: Ctx | None = None
    instance: Instance | None = None  # the module object when this is a module's forward
    receives_input: bool = True  # False for Sequential members after the first

    @property
    def key(self) -> tuple[int, int | None]:
        return (id(self.node), id(self.cls.node) if self.cls is not None else None)


class Resolver:
    """Resolves callables and the module objects calls land on."""

    def __init__(self, project: Project, evaluator: Evaluator) -> None:
        self.project = project
        self.evaluator = evaluator
        # While discovery resolves a site: library modules (nn.BatchNorm2d...)
        # met as direct members of a checkpointed container, with whether
        # they receive the checkpoint's input.
        self.externals: list[tuple[Instance, bool]] | None = None

    # -- helpers -------------------------------------------------------------------

    def qualnames(self, expr: cst.BaseExpression, ctx: Ctx) -> list[str]:
        """Qualified names of a Name/Attribute chain, honouring local imports."""
        dotted = dotted_name(expr)
        if dotted is None:
            return []
        head, _, rest = dotted.partition(".")
        c: Ctx | None = ctx
        while c is not None:
            if head in c.local_imports:
                return [f"{q}.{rest}" if rest else q for q in c.local_imports[head]]
            c = c.outer
        return self.project.resolve_expr(ctx.module, expr)

    def is_local(self, name: str, ctx: Ctx) -> bool:
        env = ctx.env
        if env is None:
            return False
        return name in env.values or name in env.loop_iters or name in env.inner_defs

    def _outer_self(self, expr: cst.Attribute, ctx: Ctx) -> bool:
        """``self.x`` in a nested function whose ``self`` is the enclosing method's, not its own parameter."""
        base = expr.value
        while isinstance(base, cst.Attribute):
            base = base.value
        if not (isinstance(base, cst.Name) and base.value == ctx.self_name) or self.is_local(base.value, ctx):
            return False
        return ctx.env is not None and base.value not in ctx.env.params

    def instances(self, expr: cst.BaseExpression, ctx: Ctx) -> list[Instance]:
        """Module objects an expression in a function body may be."""
        if isinstance(expr, cst.Name):
            if expr.value in ctx.closure and not self.is_local(expr.value, ctx):
                return list(ctx.closure[expr.value])
            env = ctx.env
            if env is not None and expr.value in env.loop_iters and expr.value not in env.values:
                out: list[Instance] = []
                for it in env.loop_iters[expr.value]:
                    out.extend(self._iter_items(it, ctx))
                return out
            if env is not None and expr.value not in env.values and ctx.outer is not None:
                return self.instances(expr, ctx.outer)
        if isinstance(expr, cst.Attribute) and expr.attr.value in ("__call__", "forward", "module", "_checkpoint_wrapped_module"):
            inner = self.instances(expr.value, ctx)
            if inner:
                return inner
        if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value != ctx.self_name:
            # ``layer.attn`` where ``layer`` is a known module: its attribute.
            out = []
            for inst in self.instances(expr.value, ctx):
                if inst.cls is not None:
                    out.extend(self.evaluator.self_attribute(inst.cls, expr.attr.value, 0, inst) or ())
            if out:
                return out
        if isinstance(expr, cst.Attribute) and ctx.outer is not None and (ctx.cls is None or self._outer_self(expr, ctx)):
            # A closure inside a method (mmcv's ``def _inner_forward(x)`` checkpointed in ``forward``):
            # its ``self.bn`` is the method's, resolved where ``self`` is a parameter.
            return self.instances(expr, ctx.outer)
        return self.evaluator.instances(expr, ctx.module, ctx.env, ctx.cls, instance=ctx.instance)

    def _iter_items(self, it: cst.BaseExpression, ctx: Ctx) -> list[Instance]:
        if isinstance(it, cst.Call) and dotted_name(it.func) in ("enumerate", "zip", "reversed", "list", "tuple", "iter"):
            out: list[Instance] = []
            for a in it.args:
                out.extend(self._iter_items(a.value, ctx))
            return out
        if isinstance(it, (cst.List, cst.Tuple)):
            out = []
            for el in it.elements:
                out.extend(self.instances(el.value, ctx))
            return out
        out = []
        if isinstance(it, cst.Subscript):
            return self.instances(it, ctx)
        for inst in self.instances(it, ctx):
            out.extend(inst.elements if inst.is_container else (inst,))
        if isinstance(it, cst.Call) and isinstance(it.func, cst.Attribute) and it.func.attr.value in ("children", "modules", "values", "items"):
            for inst in self.instances(it.func.value, ctx):
                out.extend(inst.elements)
        return out

    # -- callables ----------------------------------------------------------------

    def forward_refs(self, inst: Instance, receives_input: bool = True) -> list[CallableRef]:
        """What calling a module object runs: its class's ``forward``."""
        if inst.is_container:
            if not N.matches(inst.qualnames, N.SEQUENTIAL_CLASSES):
                return []
            out: list[CallableRef] = []
            for i, el in enumerate(inst.elements):
                first = i == 0 if inst.ordered else (i < inst.heads or not inst.heads)
                out.extend(self.forward_refs(el, receives_input and first))
            return out
        if inst.cls is None:
            if self.externals is not None and inst.call is not None:
                self.externals.append((inst, receives_input))
            return []
        method = self.project.find_method(inst.cls, "forward") or self.project.find_method(inst.cls, "__call__")
        if method is None:
            return []
        return [
            CallableRef(
                method.node, method.module, inst.cls, f"{inst.cls.short}.{method.node.name.value}",
                bound=True, instance=inst, receives_input=receives_input,
            )
        ]

    def function_ref(self, fi: FunctionInfo, bound: bool, cls: ClassInfo | None = None) -> CallableRef:
        return CallableRef(fi.node, fi.module, cls if cls is not None else fi.cls, fi.short if cls is None else f"{cls.short}.{fi.node.name.value}", bound=bound)

    def resolve(self, expr: cst.BaseExpression, ctx: Ctx, depth: int = 0) -> list[CallableRef]:
        """Function bodies that calling ``expr`` may run."""
        if depth > MAX_DEPTH:
            return []
        if isinstance(expr, cst.Lambda):
            return [CallableRef(expr, ctx.module, ctx.cls, f"{ctx.qualname}.<lambda>", outer=ctx, closure=ctx.closure)]
        if isinstance(expr, cst.Name):
            name = expr.value
            env = ctx.env
            if name in ctx.closure_refs and not self.is_local(name, ctx):
                return list(ctx.closure_refs[name])
            if env is not None:
                if name in env.inner_defs:
                    node = env.inner_defs[name]
                    return [CallableRef(node, ctx.module, ctx.cls, f"{ctx.qualname}.<locals>.{name}", outer=ctx, closure=ctx.closure)]
                if name in env.values:
                    out: list[CallableRef] = []
                    for value in env.values[name]:
                        # ``x = x`` style self-references resolve to nothing new.
                        if not (isinstance(value, cst.Name) and value.value == name):
                            out.extend(self.resolve(value, ctx, depth + 1))
                    if out:
                        return out
                if name in env.loop_iters or name in env.values or name in ctx.closure:
                    out = []
                    for inst in self.instances(expr, ctx):
                        out.extend(self.forward_refs(inst))
                    return out
                params = {p.name.value for p in (*ctx.fn.params.params, *ctx.fn.params.posonly_params, *ctx.fn.params.kwonly_params)} if ctx.fn is not None else set()
                if name in params:
                    return []
            if ctx.outer is not None and (env is None or name not in env.values):
                found = self.resolve(expr, ctx.outer, depth + 1)
                if found:
                    return found
            return self._global_refs(expr, ctx)
        if isinstance(expr, cst.Attribute):
            if expr.attr.value in ("__call__", "forward") :
                inner_insts = self.instances(expr.value, ctx)
                if inner_insts:
                    out = []
                    for inst in inner_insts:
                        out.extend(self.forward_refs(inst))
                    return out
                inner = self.resolve(expr.value, ctx, depth + 1)
                if inner:
                    return inner
            if isinstance(expr.value, cst.Name) and expr.value.value == ctx.self_name and ctx.cls is not None:
                method = self.project.find_method(ctx.cls, expr.attr.value)
                if method is not None:
                    return [CallableRef(method.node, method.module, ctx.cls, f"{ctx.cls.short}.{expr.attr.value}", bound=True)]
                out = []
                for inst in self.evaluator.self_attribute(ctx.cls, expr.attr.value, 0, ctx.instance) or ():
                    out.extend(self.forward_refs(inst))
                return out
            if (
                isinstance(expr.value, cst.Call)
                and dotted_name(expr.value.func) == "super"
                and ctx.cls is not None
            ):
                for base in self.project.base_classes(ctx.cls):
                    node = base.methods.get(expr.attr.value)
                    if node is not None:
                        return [CallableRef(node, base.module, ctx.cls, f"{base.short}.{expr.attr.value}", bound=True)]
                return []
            insts = self.instances(expr, ctx)
            if insts:
                out = []
                for inst in insts:
                    out.extend(self.forward_refs(inst))
                return out
            # ``layer.method`` on a known module object.
            if isinstance(expr.value, (cst.Name, cst.Attribute, cst.Subscript)):
                out = []
                for inst in self.instances(expr.value, ctx):
                    if inst.cls is not None:
                        m = self.project.find_method(inst.cls, expr.attr.value)
                        if m is not None:
                            out.append(CallableRef(m.node, m.module, inst.cls, f"{inst.cls.short}.{expr.attr.value}", bound=True, instance=inst))
                if out:
                    return out
            return self._global_refs(expr, ctx)
        if isinstance(expr, cst.Subscript):
            out = []
            for inst in self.instances(expr, ctx):
                out.extend(self.forward_refs(inst))
            return out
        if isinstance(expr, cst.IfExp):
            return self.resolve(expr.body, ctx, depth + 1) + self.resolve(expr.orelse, ctx, depth + 1)
        if isinstance(expr, cst.Call):
            return self._resolve_call_result(expr, ctx, depth)
        return []

    def _global_refs(self, expr: cst.BaseExpression, ctx: Ctx) -> list[CallableRef]:
        for q in self.qualnames(expr, ctx):
            found = self.project.lookup(q, ctx.module)
            if isinstance(found, FunctionInfo):
                return [CallableRef(found.node, found.module, found.cls, found.short, bound=False)]
        return []

    def _resolve_call_result(self, call: cst.Call, ctx: Ctx, depth: int) -> list[CallableRef]:
        """What a call evaluates to when that value is then called."""
        quals = self.qualnames(call.func, ctx)
        if N.matches(quals, N.PARTIAL) and call.args:
            refs = self.resolve(call.args[0].value, ctx, depth + 1)
            npos = sum(1 for a in call.args[1:] if a.keyword is None and not a.star)
            nulled = frozenset(
                a.keyword.value
                for a in call.args[1:]
                if a.keyword is not None and isinstance(a.value, cst.Name) and a.value.value in ("None", "False")
            )
            return [replace(r, partial_positional=r.partial_positional + npos, nulled=r.nulled | nulled) for r in refs]
        # A module built on the spot: ``checkpoint(Block(d), x)``.
        built = [inst for inst in self.evaluator.instances(call, ctx.module, ctx.env, ctx.cls) if inst.cls is not None]
        if built:
            out_refs: list[CallableRef] = []
            for inst in built:
                out_refs.extend(self.forward_refs(inst))
            if out_refs:
                return out_refs
        # A factory returning an inner function (``create_custom_forward(layer)``).
        factories = self.resolve(call.func, ctx, depth + 1)
        out: list[CallableRef] = []
        for fac in factories:
            if not isinstance(fac.node, cst.FunctionDef):
                continue
            env = self.evaluator.env_of(fac.node, first_param(fac.node) if fac.bound else None)
            returned = [r for r in env.returns if isinstance(r, cst.Name) and r.value in env.inner_defs]
            if not returned:
                continue
            closure, closure_refs = self._bind(fac, call, ctx)
            fac_ctx = Ctx(
                fac.module, fac.cls, fac.node, env, first_param(fac.node) if fac.bound else None,
                fac.name, closure=closure, closure_refs=closure_refs,
            )
            for r in returned:
                assert isinstance(r, cst.Name)
                node = env.inner_defs[r.value]
                out.append(
                    CallableRef(node, fac.module, fac.cls, f"{fac.name}.<locals>.{r.value}", outer=fac_ctx,
                                closure=closure, closure_refs=closure_refs)
                )
        return out

    def _bind(self, fac: CallableRef, call: cst.Call, ctx: Ctx) -> tuple[dict[str, list[Instance]], dict[str, list[CallableRef]]]:
        """Map a factory's parameters to what the caller passes (modules, functions)."""
        assert isinstance(fac.node, cst.FunctionDef)
        params = [p.name.value for p in (*fac.node.params.posonly_params, *fac.node.params.params)]
        if fac.bound:
            params = params[1:]
        closure: dict[str, list[Instance]] = {}
        refs: dict[str, list[CallableRef]] = {}
        pos = 0
        for arg in call.args:
            if arg.star:
                break
            if arg.keyword is not None:
                pname = arg.keyword.value
            elif pos < len(params):
                pname = params[pos]
                pos += 1
            else:
                continue
            insts = self.instances(arg.value, ctx)
            if insts:
                closure[pname] = insts
            else:
                r = self.resolve(arg.value, ctx, MAX_DEPTH - 1)
                if r:
                    refs[pname] = r
        return closure, refs
