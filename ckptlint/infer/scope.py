"""What each local name of one function body may hold (flow-insensitive).

:func:`scope_env` reads a function once and records, per name, every
expression assigned to it, appended to it, iterated into it or unpacked into
it, plus what ``__init__`` registers on ``self`` (attributes, ``add_module``,
``setattr``). The evaluator then turns these expressions into values; call
sites bind parameters through :func:`bind`, which returns a copy of the
callee's :class:`Env` with the caller's arguments attached.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import libcst as cst

from ckptlint.infer.lattice import Frame
from ckptlint.project import dotted_name

__all__ = ["GETATTR_KEY_PREFIX", "Env", "attr_path", "bind", "first_param", "getattr_key", "names_from_a_parameter", "scope_env", "self_attr"]


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
    # ``a, b = value``: (value, position) per name; ``for k, v in it``: (it, position).
    unpacked: dict[str, list[tuple[cst.BaseExpression, int]]] = field(default_factory=dict)
    loop_unpacked: dict[str, list[tuple[cst.BaseExpression, int]]] = field(default_factory=dict)
    # Modules registered on self under a name not known statically:
    # ``self.add_module(name, X)``, ``setattr(self, name, X)`` (False), ``self.add_module(*stage)`` (True).
    dynamic_attrs: list[tuple[cst.BaseExpression, bool]] = field(default_factory=list)
    params: tuple[str, ...] = ()
    # Call-site arguments bound to parameters (set by :func:`bind` on a copy).
    bound: dict[str, list[tuple[cst.BaseExpression, Frame]]] = field(default_factory=dict)
    bound_star: dict[str, list[tuple[cst.BaseExpression, Frame]]] = field(default_factory=dict)  # ``*args`` items


def first_param(fn: cst.FunctionDef | cst.Lambda) -> str | None:
    params = [*fn.params.posonly_params, *fn.params.params]
    return params[0].name.value if params else None


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


def _positional_targets(target: cst.BaseExpression) -> list[tuple[str, int]]:
    """``a, b`` -> [("a", 0), ("b", 1)] for a flat tuple target without stars."""
    if not isinstance(target, (cst.Tuple, cst.List)):
        return []
    out: list[tuple[str, int]] = []
    for i, el in enumerate(target.elements):
        if isinstance(el, cst.StarredElement):
            return []
        if isinstance(el.value, cst.Name):
            out.append((el.value.value, i))
    return out


def _attribute_positions(target: cst.BaseExpression) -> list[tuple[cst.Attribute, int]]:
    """``self.a, b, self.c`` -> [(self.a, 0), (self.c, 2)] for a flat tuple target without stars."""
    if not isinstance(target, (cst.Tuple, cst.List)) or any(isinstance(el, cst.StarredElement) for el in target.elements):
        return []
    return [(el.value, i) for i, el in enumerate(target.elements) if isinstance(el.value, cst.Attribute)]


def _item(value: cst.BaseExpression, k: int) -> cst.Subscript:
    """The expression ``value[k]`` (built once per assignment; the Env that holds it keeps it alive)."""
    return cst.Subscript(value, [cst.SubscriptElement(cst.Index(cst.Integer(str(k))))])


def attr_path(node: cst.BaseExpression, self_name: str | None) -> str | None:
    """``self.a.b`` -> ``"a.b"`` (at least two attributes below self)."""
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if self_name and isinstance(node, cst.Name) and node.value == self_name and len(parts) >= 2:
        return ".".join(reversed(parts))
    return None


def self_attr(node: cst.BaseExpression, self_name: str | None) -> str | None:
    if (
        self_name
        and isinstance(node, cst.Attribute)
        and isinstance(node.value, cst.Name)
        and node.value.value == self_name
    ):
        return node.attr.value
    return None


GETATTR_KEY_PREFIX = "getattr(self."


def getattr_key(attr: str) -> str:
    """The attribute-table key of a module registered under the name held in ``self.<attr>``."""
    return f"{GETATTR_KEY_PREFIX}{attr})"


def _const_str(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None


class _Collector:
    def __init__(self, env: Env, self_name: str | None) -> None:
        self.env = env
        self.self_name = self_name

    def assign(self, target: cst.BaseExpression, value: cst.BaseExpression) -> None:
        env, self_name = self.env, self.self_name
        if isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name):
            # ``blocks["conv1_1"] = ConvNormAct(...)`` then ``nn.Sequential(blocks)`` (timm DPN): one more item.
            env.appended.setdefault(target.value.value, []).append((value, False))
            return
        positional = _positional_targets(target)
        if positional and isinstance(value, (cst.Tuple, cst.List)) and len(value.elements) == len(target.elements):  # type: ignore[attr-defined]
            for (name, i) in positional:
                el = value.elements[i]
                if not isinstance(el, cst.StarredElement):
                    env.values.setdefault(name, []).append(el.value)
            for t, el in zip(target.elements, value.elements):  # type: ignore[attr-defined]
                if isinstance(t.value, cst.Attribute) and not isinstance(el, cst.StarredElement):
                    self.assign(t.value, el.value)  # ``self.a, self.b = A(), B()``
            return
        for name, i in positional:
            env.unpacked.setdefault(name, []).append((value, i))
        at = _attribute_positions(target)
        if at:
            # ``self.stages, info, size = create_stages(...)``: each attribute holds one position of
            # what the call returns, read as ``create_stages(...)[k]``.
            for t, i in at:
                self.assign(t, _item(value, i))
            target = cst.Tuple([el for el in target.elements if not isinstance(el.value, cst.Attribute)])  # type: ignore[attr-defined]
        for t in _targets(target):
            if isinstance(t, cst.Name):
                env.values.setdefault(t.value, []).append(value)
            attr = self_attr(t, self_name)
            if attr is not None:
                env.self_attrs.setdefault(attr, []).append(value)
            elif isinstance(t, cst.Attribute):
                # ``self.mid.block_1 = Block()`` / ``down.block = blocks`` on a bare
                # ``nn.Module()`` used as a namespace (taming-transformers VAEs).
                path = attr_path(t, self_name)
                if path is not None:
                    env.self_attrs.setdefault(path, []).append(value)
                elif isinstance(t.value, cst.Name):
                    env.obj_attrs.setdefault(t.value.value, {}).setdefault(t.attr.value, []).append(value)

    def call(self, call: cst.Call) -> None:
        env, self_name = self.env, self.self_name
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value in ("append", "extend", "insert") and call.args:
            arg = call.args[-1].value
            star = func.attr.value == "extend"
            if isinstance(func.value, cst.Name):
                env.appended.setdefault(func.value.value, []).append((arg, star))
            attr = self_attr(func.value, self_name)
            if attr is not None:
                env.self_appended.setdefault(attr, []).append(arg)
            return
        is_register = isinstance(func, cst.Attribute) and func.attr.value in ("add_module", "register_module")
        if is_register and _is_name(func.value, self_name):  # type: ignore[union-attr]
            if len(call.args) == 1 and call.args[0].star == "*":
                env.dynamic_attrs.append((call.args[0].value, True))  # ``self.add_module(*stage)``
            elif len(call.args) >= 2:
                name = _const_str(call.args[0].value)
                key_attr = self_attr(call.args[0].value, self_name)
                if name is not None:
                    env.self_attrs.setdefault(name, []).append(call.args[1].value)
                elif key_attr is not None:
                    # ``self.add_module(self.norm1_name, norm1)``, read back by ``getattr(self, self.norm1_name)``
                    env.self_attrs.setdefault(getattr_key(key_attr), []).append(call.args[1].value)
                else:
                    env.dynamic_attrs.append((call.args[1].value, False))
            return
        if is_register and self_attr(func.value, self_name) is not None and len(call.args) >= 2:  # type: ignore[union-attr]
            # ``self.downs.add_module("down0", Down(c))``: one more element.
            container = self_attr(func.value, self_name)  # type: ignore[union-attr]
            assert container is not None
            env.self_appended.setdefault(container, []).append(call.args[1].value)
            return
        if isinstance(func, cst.Name) and func.value == "setattr" and len(call.args) == 3 and _is_name(call.args[0].value, self_name):
            name = _const_str(call.args[1].value)
            if name is not None:
                env.self_attrs.setdefault(name, []).append(call.args[2].value)
            else:
                env.dynamic_attrs.append((call.args[2].value, False))

    def body(self, body: Sequence[cst.CSTNode]) -> None:
        env = self.env
        for stmt in body:
            if isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    self.small(small)
            elif isinstance(stmt, cst.FunctionDef):
                env.inner_defs[stmt.name.value] = stmt
            elif isinstance(stmt, cst.ClassDef):
                continue
            elif isinstance(stmt, cst.For):
                for name, it in _loop_bindings(stmt.target, stmt.iter):
                    env.loop_iters.setdefault(name, []).append(it)
                if not (isinstance(stmt.iter, cst.Call) and dotted_name(stmt.iter.func) in ("zip", "enumerate")):
                    for name, i in _positional_targets(stmt.target):
                        env.loop_unpacked.setdefault(name, []).append((stmt.iter, i))
                self.body(stmt.body.body)
                if stmt.orelse is not None:
                    self.body(stmt.orelse.body.body)
            elif isinstance(stmt, cst.If):
                self.body(stmt.body.body)
                orelse = stmt.orelse
                while orelse is not None:
                    self.body(orelse.body.body)
                    orelse = orelse.orelse if isinstance(orelse, cst.If) else None
            elif isinstance(stmt, (cst.While, cst.With)):
                self.body(stmt.body.body)
            elif isinstance(stmt, cst.Try):
                self.body(stmt.body.body)
                for h in stmt.handlers:
                    self.body(h.body.body)
                if stmt.orelse is not None:
                    self.body(stmt.orelse.body.body)
                if stmt.finalbody is not None:
                    self.body(stmt.finalbody.body.body)

    def small(self, small: cst.BaseSmallStatement) -> None:
        env = self.env
        if isinstance(small, cst.Assign):
            for t in small.targets:
                self.assign(t.target, small.value)
        elif isinstance(small, cst.AnnAssign) and small.value is not None:
            self.assign(small.target, small.value)
        elif isinstance(small, cst.AugAssign) and isinstance(small.target, cst.Name):
            if isinstance(small.operator, cst.AddAssign):
                env.appended.setdefault(small.target.value, []).append((small.value, True))
        elif isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
            self.call(small.value)
        elif isinstance(small, cst.Expr) and isinstance(small.value, cst.Tuple):
            # ``self.add_module('norm1', norm_layer(c)),`` (a stray trailing comma)
            for el in small.value.elements:
                if isinstance(el.value, cst.Call):
                    self.call(el.value)
        elif isinstance(small, cst.Return) and small.value is not None:
            env.returns.append(small.value)


def _is_name(node: cst.BaseExpression, name: str | None) -> bool:
    return name is not None and isinstance(node, cst.Name) and node.value == name


def scope_env(fn: cst.FunctionDef | cst.Lambda, self_name: str | None = None) -> Env:
    """Collect assignments, appends, loops, registrations and returns of a function body."""
    env = Env(self_name=self_name)
    params = fn.params
    env.params = tuple(p.name.value for p in (*params.posonly_params, *params.params, *params.kwonly_params))
    for p in (*params.posonly_params, *params.params, *params.kwonly_params):
        if p.default is not None:
            env.values.setdefault(p.name.value, []).append(p.default)
    if isinstance(fn, cst.Lambda):
        env.returns.append(fn.body)
        return env
    collector = _Collector(env, self_name)
    if isinstance(fn.body, cst.IndentedBlock):
        collector.body(fn.body.body)
    else:
        collector.body([fn.body])
    return env


def bind(
    env: Env, fn: cst.FunctionDef, call: cst.Call, caller: Frame, skip_self: bool,
    preset: tuple[tuple[str, cst.BaseExpression, Frame], ...] = (),
) -> Env | None:
    """A copy of ``env`` (the callee's) with the caller's arguments bound to its parameters.

    None when the call passes nothing the callee could use. A bound parameter
    loses its default: the caller's value replaces it. ``*args``/``**kwargs``
    at the call site leave the remaining parameters at their defaults. ``preset``
    holds keywords a ``partial`` fixed earlier (each in its own scope); the call's
    arguments override them.
    """
    params = [p.name.value for p in (*fn.params.posonly_params, *fn.params.params)]
    if skip_self:
        params = params[1:]
    kwonly = {p.name.value for p in fn.params.kwonly_params}
    star = fn.params.star_arg.name.value if isinstance(fn.params.star_arg, cst.Param) else None
    bound: dict[str, list[tuple[cst.BaseExpression, Frame]]] = {}
    bound_star: dict[str, list[tuple[cst.BaseExpression, Frame]]] = {}
    for name, value, frame in preset:
        if name in params or name in kwonly:
            bound[name] = [(value, frame)]
    pos = 0
    for arg in call.args:
        if arg.star:
            if arg.star == "*":
                pos = len(params)  # positions unknown from here on
            continue
        if arg.keyword is not None:
            name = arg.keyword.value
            if name in params or name in kwonly:
                bound[name] = [(arg.value, caller)]
            continue
        if pos < len(params):
            bound[params[pos]] = [(arg.value, caller)]
            pos += 1
        elif star is not None:
            bound_star.setdefault(star, []).append((arg.value, caller))
    if not bound and not bound_star:
        return None
    defaults = {p.name.value: p.default for p in (*fn.params.posonly_params, *fn.params.params, *fn.params.kwonly_params)}
    # A caller's own parameter passed through (``SeparableConv(norm_layer=norm_layer)``) may be
    # overridden by its caller's ``**kwargs``: the callee's default stays possible beside it.
    passed_through = {
        k for k, v in bound.items()
        if v[0][1].env is not None and isinstance(v[0][0], cst.Name) and v[0][0].value in v[0][1].env.params
    }
    values = {
        k: ([e for e in v if e is not defaults.get(k)] if k in bound and k not in passed_through else v)
        for k, v in env.values.items()
    }
    return replace(env, values=values, bound=bound, bound_star=bound_star)


def names_from_a_parameter(expr: cst.BaseExpression, env: Env) -> bool:
    """``name`` bound only by ``for name in <parameter>`` (with no call-site binding of that parameter)."""
    if not isinstance(expr, cst.Name) or expr.value in env.values:
        return False
    iters = env.loop_iters.get(expr.value)
    return bool(iters) and all(
        isinstance(it, cst.Name) and it.value in env.params and it.value not in env.bound for it in iters
    )
