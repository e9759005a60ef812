"""What module objects an expression builds: ``self.bn = norm_layer(c)`` -> BatchNorm2d.

Modules are built in ``__init__`` and called in ``forward``, so the linter
needs a small abstract evaluation of constructor expressions: class
references through parameter defaults (timm's ``norm_layer=nn.BatchNorm2d``),
``functools.partial``, ``x or Default``, conditional expressions, container
modules (``nn.ModuleList([Block(d) for ...])``, ``nn.Sequential(*blocks)``
where ``blocks.append(Block(...))``), factory methods that return modules,
and ``checkpoint_wrapper(Block(...))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.project import ClassInfo, FunctionInfo, ModuleInfo, Project, dotted_name

__all__ = ["Env", "Evaluator", "Instance", "literal_truth", "scope_env"]

MAX_DEPTH = 10


@dataclass(frozen=True, eq=False)
class Instance:
    """A module object some expression may evaluate to."""

    qualnames: tuple[str, ...]
    cls: ClassInfo | None
    module: ModuleInfo
    call: cst.Call | None = None
    kwargs: tuple[tuple[str, cst.BaseExpression], ...] = ()
    args: tuple[cst.BaseExpression, ...] = ()
    elements: tuple[Instance, ...] = ()
    ordered: bool = False  # ``elements`` is exactly the container's sequence
    is_container: bool = False
    wrapped_by: cst.Call | None = None  # checkpoint_wrapper(...) around it
    wrapped_module: ModuleInfo | None = None
    prefix: int = 0  # leading elements whose positions are exact (``[First(...)]`` then appends)
    keys: tuple[str | None, ...] = ()  # ModuleDict literal keys, parallel to ``elements``
    attrs: tuple[tuple[str, tuple["Instance", ...]], ...] = ()  # set on a bare ``nn.Module()`` namespace

    def select(self, index: cst.BaseSlice) -> list[Instance]:
        """Elements ``container[index]`` may be."""
        els = list(self.elements)
        exact = len(els) if self.ordered else self.prefix
        if isinstance(index, cst.Index) and isinstance(index.value, cst.SimpleString) and self.keys:
            key = index.value.evaluated_value
            picked = [el for el, k in zip(els, self.keys) if k == key]
            return picked or [el for el, k in zip(els, self.keys) if k is None]
        if isinstance(index, cst.Index) and isinstance(index.value, cst.Integer):
            k = int(index.value.value, 0)
            if k < exact:
                return [els[k]]
            return els[exact:] if not self.ordered else []
        if isinstance(index, cst.Slice) and index.upper is None and index.step is None:
            lower = index.lower
            if isinstance(lower, cst.Integer):
                k = int(lower.value, 0)
                if k <= exact:
                    return els[k:]
                return els[exact:]
        return els

    @property
    def short_name(self) -> str:
        if self.cls is not None:
            return self.cls.short
        return self.qualnames[0].rsplit(".", 1)[-1] if self.qualnames else "?"

    def kwarg(self, name: str, position: int | None = None) -> cst.BaseExpression | None:
        for key, value in reversed(self.kwargs):
            if key == name:
                return value
        if position is not None and position < len(self.args):
            return self.args[position]
        return None


def literal_truth(expr: cst.BaseExpression | None) -> bool | None:
    """True/False for a literal (``True``, ``0``, ``None``...), None when unknown."""
    if expr is None:
        return None
    if isinstance(expr, cst.Name):
        if expr.value == "True":
            return True
        if expr.value in ("False", "None"):
            return False
        return None
    if isinstance(expr, cst.Integer):
        try:
            return int(expr.value, 0) != 0
        except ValueError:
            return None
    if isinstance(expr, cst.Float):
        return float(expr.value) != 0.0
    return None


@dataclass
class Env:
    """Local names of one function body: what each may hold."""

    values: dict[str, list[cst.BaseExpression]] = field(default_factory=dict)
    appended: dict[str, list[tuple[cst.BaseExpression, bool]]] = field(default_factory=dict)  # (expr, starred)
    loop_iters: dict[str, list[cst.BaseExpression]] = field(default_factory=dict)
    self_attrs: dict[str, list[cst.BaseExpression]] = field(default_factory=dict)
    self_appended: dict[str, list[cst.BaseExpression]] = field(default_factory=dict)
    obj_attrs: dict[str, dict[str, list[cst.BaseExpression]]] = field(default_factory=dict)
    returns: list[cst.BaseExpression] = field(default_factory=list)
    inner_defs: dict[str, cst.FunctionDef] = field(default_factory=dict)
    self_name: str | None = None


def _targets(node: cst.BaseExpression) -> Iterator[cst.BaseExpression]:
    if isinstance(node, (cst.Tuple, cst.List)):
        for el in node.elements:
            yield from _targets(el.value)
    elif isinstance(node, cst.StarredElement):
        yield from _targets(node.value)
    else:
        yield node


def _loop_bindings(target: cst.BaseExpression, it: cst.BaseExpression) -> Iterator[tuple[str, cst.BaseExpression]]:
    """``for a, b in zip(X, Y)`` binds a to X's items and b to Y's; enumerate's index to nothing."""
    if isinstance(target, (cst.Tuple, cst.List)) and isinstance(it, cst.Call):
        fname = dotted_name(it.func)
        elements = [el.value for el in target.elements]
        args = [a.value for a in it.args if a.keyword is None and not a.star]
        if fname == "zip" and len(args) == len(elements):
            for el, arg in zip(elements, args):
                yield from _loop_bindings(el, arg)
            return
        if fname == "enumerate" and len(elements) == 2 and args:
            yield from _loop_bindings(elements[1], args[0])
            return
    for t in _targets(target):
        if isinstance(t, cst.Name):
            yield t.value, it


def _attr_path(node: cst.BaseExpression, self_name: str | None) -> str | None:
    """``self.a.b`` -> ``"a.b"`` (at least two attributes below self)."""
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if self_name and isinstance(node, cst.Name) and node.value == self_name and len(parts) >= 2:
        return ".".join(reversed(parts))
    return None


def _self_attr(node: cst.BaseExpression, self_name: str | None) -> str | None:
    if (
        self_name
        and isinstance(node, cst.Attribute)
        and isinstance(node.value, cst.Name)
        and node.value.value == self_name
    ):
        return node.attr.value
    return None


def scope_env(fn: cst.FunctionDef | cst.Lambda, self_name: str | None = None) -> Env:
    """Collect assignments, appends, loops and returns of a function body."""
    env = Env(self_name=self_name)
    params = fn.params
    for p in (*params.posonly_params, *params.params, *params.kwonly_params):
        if p.default is not None:
            env.values.setdefault(p.name.value, []).append(p.default)
    if isinstance(fn, cst.Lambda):
        env.returns.append(fn.body)
        return env

    def record_assign(target: cst.BaseExpression, value: cst.BaseExpression) -> None:
        for t in _targets(target):
            if isinstance(t, cst.Name):
                env.values.setdefault(t.value, []).append(value)
            attr = _self_attr(t, self_name)
            if attr is not None:
                env.self_attrs.setdefault(attr, []).append(value)
            elif isinstance(t, cst.Attribute):
                # ``self.mid.block_1 = Block()`` / ``down.block = blocks`` on a bare
                # ``nn.Module()`` used as a namespace (taming-transformers VAEs).
                path = _attr_path(t, self_name)
                if path is not None:
                    env.self_attrs.setdefault(path, []).append(value)
                elif isinstance(t.value, cst.Name):
                    env.obj_attrs.setdefault(t.value.value, {}).setdefault(t.attr.value, []).append(value)

    def visit_call(call: cst.Call) -> None:
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value in ("append", "extend", "insert") and call.args:
            arg = call.args[-1].value
            star = func.attr.value == "extend"
            if isinstance(func.value, cst.Name):
                env.appended.setdefault(func.value.value, []).append((arg, star))
            attr = _self_attr(func.value, self_name)
            if attr is not None:
                env.self_appended.setdefault(attr, []).append(arg)
        elif (
            isinstance(func, cst.Attribute)
            and func.attr.value in ("add_module", "register_module")
            and _self_attr(func.value, self_name) is not None
            and len(call.args) >= 2
        ):
            # ``self.downs.add_module("down0", Down(c))``: one more element.
            container = _self_attr(func.value, self_name)
            assert container is not None
            env.self_appended.setdefault(container, []).append(call.args[1].value)
        elif (
            isinstance(func, cst.Attribute)
            and func.attr.value in ("add_module", "register_module")
            and isinstance(func.value, cst.Name)
            and func.value.value == self_name
            and len(call.args) >= 2
            and isinstance(call.args[0].value, cst.SimpleString)
        ):
            name = call.args[0].value.evaluated_value
            if isinstance(name, str):
                env.self_attrs.setdefault(name, []).append(call.args[1].value)

    def walk(body: Sequence[cst.CSTNode]) -> None:
        for stmt in body:
            if isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    if isinstance(small, cst.Assign):
                        for t in small.targets:
                            record_assign(t.target, small.value)
                    elif isinstance(small, cst.AnnAssign) and small.value is not None:
                        record_assign(small.target, small.value)
                    elif isinstance(small, cst.AugAssign) and isinstance(small.target, cst.Name):
                        if isinstance(small.operator, cst.AddAssign):
                            env.appended.setdefault(small.target.value, []).append((small.value, True))
                    elif isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
                        visit_call(small.value)
                    elif isinstance(small, cst.Expr) and isinstance(small.value, cst.Tuple):
                        # ``self.add_module('norm1', norm_layer(c)),`` (a stray trailing comma)
                        for el in small.value.elements:
                            if isinstance(el.value, cst.Call):
                                visit_call(el.value)
                    elif isinstance(small, cst.Return) and small.value is not None:
                        env.returns.append(small.value)
            elif isinstance(stmt, cst.FunctionDef):
                env.inner_defs[stmt.name.value] = stmt
            elif isinstance(stmt, cst.ClassDef):
                continue
            elif isinstance(stmt, (cst.For,)):
                for name, it in _loop_bindings(stmt.target, stmt.iter):
                    env.loop_iters.setdefault(name, []).append(it)
                walk(stmt.body.body)
                if stmt.orelse is not None:
                    walk(stmt.orelse.body.body)
            elif isinstance(stmt, (cst.If,)):
                walk(stmt.body.body)
                orelse = stmt.orelse
                while orelse is not None:
                    walk(orelse.body.body)
                    orelse = orelse.orelse if isinstance(orelse, cst.If) else None
            elif isinstance(stmt, (cst.While, cst.With)):
                walk(stmt.body.body)
            elif isinstance(stmt, cst.Try):
                walk(stmt.body.body)
                for h in stmt.handlers:
                    walk(h.body.body)
                if stmt.orelse is not None:
                    walk(stmt.orelse.body.body)
                if stmt.finalbody is not None:
                    walk(stmt.finalbody.body.body)

    if isinstance(fn.body, cst.IndentedBlock):
        walk(fn.body.body)
    else:
        walk([fn.body])
    return env


@dataclass(frozen=True)
class _ClassRef:
    qualnames: tuple[str, ...]
    cls: ClassInfo | None
    func: FunctionInfo | None
    kwargs: tuple[tuple[str, cst.BaseExpression], ...] = ()


class Evaluator:
    """Abstract evaluation of module-building expressions (cached per class)."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._attr_tables: dict[int, dict[str, list[Instance]]] = {}
        self._envs: dict[int, Env] = {}

    def env_of(self, fn: cst.FunctionDef | cst.Lambda, self_name: str | None = None) -> Env:
        key = id(fn)
        env = self._envs.get(key)
        if env is None:
            env = scope_env(fn, self_name)
            self._envs[key] = env
        return env

    # -- class references ----------------------------------------------------------

    def class_refs(
        self, expr: cst.BaseExpression, mod: ModuleInfo, env: Env | None, depth: int = 0, local_table: dict[str, list[str]] | None = None
    ) -> list[_ClassRef]:
        if depth > MAX_DEPTH:
            return []
        if isinstance(expr, cst.Name) and env is not None and expr.value in env.values:
            out: list[_ClassRef] = []
            for value in env.values[expr.value]:
                if value is expr:
                    continue
                out.extend(self.class_refs(value, mod, env, depth + 1))
            return out
        if isinstance(expr, (cst.Name, cst.Attribute)):
            dotted = dotted_name(expr)
            if dotted is None:
                return []
            if local_table and dotted.split(".")[0] in local_table:
                head, _, rest = dotted.partition(".")
                quals = [f"{q}.{rest}" if rest else q for q in local_table[head]]
            else:
                quals = self.project.resolve_expr(mod, expr)
            if not quals:
                return []
            cls: ClassInfo | None = None
            func: FunctionInfo | None = None
            for q in quals:
                found = self.project.lookup(q, mod)
                if isinstance(found, ClassInfo):
                    cls = found
                    break
                if isinstance(found, FunctionInfo):
                    func = found
                    break
            return [_ClassRef(tuple(quals), cls, func)]
        if isinstance(expr, cst.Call):
            inner = self.class_refs(expr.func, mod, env, depth + 1)
            if any(N.matches(r.qualnames, N.PARTIAL) for r in inner) and expr.args:
                kwargs = tuple((a.keyword.value, a.value) for a in expr.args if a.keyword is not None)
                return [
                    _ClassRef(r.qualnames, r.cls, r.func, kwargs + r.kwargs)
                    for r in self.class_refs(expr.args[0].value, mod, env, depth + 1)
                ]
            return []
        if isinstance(expr, cst.IfExp):
            return self.class_refs(expr.body, mod, env, depth + 1) + self.class_refs(expr.orelse, mod, env, depth + 1)
        if isinstance(expr, cst.BooleanOperation):
            return self.class_refs(expr.left, mod, env, depth + 1) + self.class_refs(expr.right, mod, env, depth + 1)
        return []

    # -- instances -------------------------------------------------------------------

    def instances(
        self,
        expr: cst.BaseExpression,
        mod: ModuleInfo,
        env: Env | None,
        owner: ClassInfo | None = None,
        depth: int = 0,
    ) -> list[Instance]:
        """Module objects ``expr`` may evaluate to, in the scope of ``env``."""
        if depth > MAX_DEPTH:
            return []
        if isinstance(expr, cst.Call):
            return self._call_instances(expr, mod, env, owner, depth)
        if isinstance(expr, cst.IfExp):
            return self.instances(expr.body, mod, env, owner, depth + 1) + self.instances(expr.orelse, mod, env, owner, depth + 1)
        if isinstance(expr, cst.BooleanOperation):
            return self.instances(expr.left, mod, env, owner, depth + 1) + self.instances(expr.right, mod, env, owner, depth + 1)
        if isinstance(expr, cst.Name) and env is not None:
            out: list[Instance] = []
            for value in env.values.get(expr.value, ()):
                if value is not expr:
                    out.extend(self.instances(value, mod, env, owner, depth + 1))
            extra_attrs = env.obj_attrs.get(expr.value)
            appended = env.appended.get(expr.value)
            if extra_attrs or appended:
                out = [self._decorate(inst, extra_attrs, appended, mod, env, owner, depth) for inst in out]
            return out
        if isinstance(expr, cst.Attribute) and owner is not None and env is not None:
            attr = _self_attr(expr, env.self_name) or _attr_path(expr, env.self_name)
            if attr is not None and attr in self.attr_table(owner):
                return list(self.attr_table(owner).get(attr, ()))
        if isinstance(expr, cst.Attribute):
            # ``<module object>.attr``: an attribute of a known class or namespace module.
            out = []
            for inst in self.instances(expr.value, mod, env, owner, depth + 1):
                if inst.cls is not None:
                    out.extend(self.attr_table(inst.cls).get(expr.attr.value, ()))
                else:
                    out.extend(dict(inst.attrs).get(expr.attr.value, ()))
            return out
        if isinstance(expr, cst.Subscript):
            out = []
            for inst in self.instances(expr.value, mod, env, owner, depth + 1):
                if inst.is_container and len(expr.slice) == 1:
                    out.extend(inst.select(expr.slice[0].slice))
                else:
                    out.extend(inst.elements)
            return out
        return []

    def _elements(
        self, args: Sequence[cst.Arg], mod: ModuleInfo, env: Env | None, owner: ClassInfo | None, depth: int
    ) -> tuple[list[Instance], bool]:
        out: list[Instance] = []
        ordered = True
        for arg in args:
            if arg.keyword is not None:
                continue
            value = arg.value
            if arg.star == "*":
                items, ok = self._list_items(value, mod, env, owner, depth + 1)
                out.extend(items)
                ordered = ordered and ok
            elif isinstance(value, (cst.List, cst.Tuple)):
                items, ok = self._list_items(value, mod, env, owner, depth + 1)
                out.extend(items)
                ordered = ordered and ok
            elif isinstance(value, (cst.ListComp, cst.GeneratorExp)):
                out.extend(self.instances(value.elt, mod, env, owner, depth + 1))
                ordered = False
            elif isinstance(value, cst.Dict):
                for el in value.elements:
                    if isinstance(el, cst.DictElement):
                        out.extend(self.instances(el.value, mod, env, owner, depth + 1))
                ordered = False
            elif isinstance(value, cst.DictComp):
                out.extend(self.instances(value.value, mod, env, owner, depth + 1))
                ordered = False
            elif isinstance(value, cst.Name) and env is not None and value.value in env.appended:
                items, _ = self._list_items(value, mod, env, owner, depth + 1)
                out.extend(items)
                ordered = False
            elif isinstance(value, cst.Call) and dotted_name(value.func) in ("OrderedDict", "collections.OrderedDict", "dict"):
                ordered = False
            else:
                found = self.instances(value, mod, env, owner, depth + 1)
                out.extend(found)
                ordered = ordered and len(found) == 1
        return out, ordered

    def _decorate(
        self,
        inst: Instance,
        attrs: dict[str, list[cst.BaseExpression]] | None,
        appended: list[tuple[cst.BaseExpression, bool]] | None,
        mod: ModuleInfo,
        env: Env,
        owner: ClassInfo | None,
        depth: int,
    ) -> Instance:
        """A local module object plus what the function later attached/appended to it."""
        from dataclasses import replace

        if inst.is_container and appended:
            extra: list[Instance] = []
            for value, star in appended:
                if star:
                    items, _ = self._list_items(value, mod, env, owner, depth + 1)
                    extra.extend(items)
                else:
                    extra.extend(self.instances(value, mod, env, owner, depth + 1))
            return replace(inst, elements=inst.elements + tuple(extra), ordered=False)
        if attrs and inst.cls is None and not inst.is_container:
            evaluated = tuple(
                (name, tuple(i for v in values for i in self.instances(v, mod, env, owner, depth + 1)))
                for name, values in sorted(attrs.items())
            )
            return replace(inst, attrs=inst.attrs + evaluated)
        return inst

    def _dict_keys(
        self, args: Sequence[cst.Arg], mod: ModuleInfo, env: Env | None, owner: ClassInfo | None, depth: int
    ) -> tuple[str | None, ...]:
        """Keys of ``nn.ModuleDict({"a": A(), ...})``, one per element found."""
        out: list[str | None] = []
        for arg in args:
            if arg.keyword is None and isinstance(arg.value, cst.Dict):
                for el in arg.value.elements:
                    if isinstance(el, cst.DictElement):
                        key = el.key.evaluated_value if isinstance(el.key, cst.SimpleString) else None
                        n = len(self.instances(el.value, mod, env, owner, depth + 1))
                        out.extend([key if isinstance(key, str) else None] * n)
        return tuple(out)

    def _prefix(self, args: Sequence[cst.Arg], env: Env | None) -> int:
        """Exact leading elements of ``nn.ModuleList(name)`` where ``name = [A(), B()]`` then appends."""
        positional = [a for a in args if a.keyword is None]
        if len(positional) != 1 or env is None:
            return 0
        value = positional[0].value
        if isinstance(value, cst.Name) and len(env.values.get(value.value, ())) == 1:
            literal = env.values[value.value][0]
            if isinstance(literal, (cst.List, cst.Tuple)) and all(
                not isinstance(el, cst.StarredElement) for el in literal.elements
            ):
                return len(literal.elements)
        return 0

    def _list_items(
        self, value: cst.BaseExpression, mod: ModuleInfo, env: Env | None, owner: ClassInfo | None, depth: int
    ) -> tuple[list[Instance], bool]:
        if depth > MAX_DEPTH:
            return [], False
        if isinstance(value, (cst.List, cst.Tuple)):
            out: list[Instance] = []
            ordered = True
            for el in value.elements:
                if isinstance(el, cst.StarredElement):
                    items, _ = self._list_items(el.value, mod, env, owner, depth + 1)
                    out.extend(items)
                    ordered = False
                else:
                    found = self.instances(el.value, mod, env, owner, depth + 1)
                    out.extend(found)
                    ordered = ordered and len(found) == 1
            return out, ordered
        if isinstance(value, (cst.ListComp, cst.GeneratorExp)):
            return self.instances(value.elt, mod, env, owner, depth + 1), False
        if isinstance(value, cst.Name) and env is not None:
            out = []
            for v in env.values.get(value.value, ()):
                items, _ = self._list_items(v, mod, env, owner, depth + 1)
                out.extend(items)
            for v, star in env.appended.get(value.value, ()):
                if star:
                    items, _ = self._list_items(v, mod, env, owner, depth + 1)
                    out.extend(items)
                else:
                    out.extend(self.instances(v, mod, env, owner, depth + 1))
            return out, False
        insts = self.instances(value, mod, env, owner, depth + 1)
        out = []
        for inst in insts:
            out.extend(inst.elements if inst.is_container else (inst,))
        return out, False

    def _call_instances(
        self, call: cst.Call, mod: ModuleInfo, env: Env | None, owner: ClassInfo | None, depth: int
    ) -> list[Instance]:
        # ``self._make_layer(...)``: what the factory method returns.
        func = call.func
        if owner is not None and env is not None and _self_attr(func, env.self_name) is not None:
            assert isinstance(func, cst.Attribute)
            method = self.project.find_method(owner, func.attr.value)
            if method is not None:
                return self._returns(method, depth)
        refs = self.class_refs(func, mod, env, depth + 1)
        out: list[Instance] = []
        for ref in refs:
            if N.matches(ref.qualnames, N.CONTAINER_CLASSES):
                elements, ordered = self._elements(call.args, mod, env, owner, depth)
                keys = self._dict_keys(call.args, mod, env, owner, depth)
                out.append(
                    Instance(ref.qualnames, None, mod, call, elements=tuple(elements), ordered=ordered, is_container=True,
                             prefix=self._prefix(call.args, env), keys=keys if len(keys) == len(elements) else ())
                )
            elif N.matches(ref.qualnames, N.CHECKPOINT_WRAPPER) and call.args:
                for inner in self.instances(call.args[0].value, mod, env, owner, depth + 1):
                    out.append(
                        Instance(
                            inner.qualnames, inner.cls, inner.module, inner.call, inner.kwargs, inner.args,
                            inner.elements, inner.ordered, inner.is_container, wrapped_by=call, wrapped_module=mod,
                        )
                    )
            elif ref.func is not None:
                out.extend(self._returns(ref.func, depth))
            else:
                kwargs = ref.kwargs + tuple((a.keyword.value, a.value) for a in call.args if a.keyword is not None)
                args = tuple(a.value for a in call.args if a.keyword is None and not a.star)
                out.append(Instance(ref.qualnames, ref.cls, mod, call, kwargs, args))
        return out

    def _returns(self, fn: FunctionInfo, depth: int) -> list[Instance]:
        if depth > MAX_DEPTH:
            return []
        self_name = _first_param(fn.node) if fn.cls is not None else None
        env = self.env_of(fn.node, self_name)
        out: list[Instance] = []
        for ret in env.returns:
            out.extend(self.instances(ret, fn.module, env, fn.cls, depth + 1))
        return out

    # -- per-class attribute tables ---------------------------------------------------

    def attr_table(self, cls: ClassInfo) -> dict[str, list[Instance]]:
        """``self.<attr>`` -> the module objects ``__init__`` puts there (bases first)."""
        key = id(cls.node)
        table = self._attr_tables.get(key)
        if table is not None:
            return table
        table = {}
        self._attr_tables[key] = table  # guards recursion through self-referencing classes
        for base in reversed(list(self.project.base_classes(cls))):
            for name, insts in self.attr_table(base).items():
                table[name] = list(insts)
        init = cls.methods.get("__init__")
        if init is not None:
            self_name = _first_param(init)
            env = self.env_of(init, self_name)
            for attr, exprs in env.self_attrs.items():
                found: list[Instance] = []
                for e in exprs:
                    found.extend(self.instances(e, cls.module, env, cls, 1))
                if found:
                    table[attr] = found
            for attr, exprs in env.self_appended.items():
                extra: list[Instance] = []
                for e in exprs:
                    extra.extend(self.instances(e, cls.module, env, cls, 1))
                if extra:
                    current = table.get(attr, [])
                    merged: list[Instance] = []
                    for inst in current:
                        if inst.is_container:
                            merged.append(
                                Instance(inst.qualnames, None, inst.module, inst.call,
                                         elements=inst.elements + tuple(extra), ordered=False, is_container=True)
                            )
                        else:
                            merged.append(inst)
                    table[attr] = merged or [
                        Instance(("torch.nn.ModuleList",), None, cls.module, None, elements=tuple(extra), is_container=True)
                    ]
        return table


def _first_param(fn: cst.FunctionDef) -> str | None:
    params = [*fn.params.posonly_params, *fn.params.params]
    return params[0].name.value if params else None
