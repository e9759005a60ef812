"""What module objects and classes an expression may evaluate to.

Modules are built in ``__init__`` and called in ``forward``, often through
helpers: ``blocks.append(block_fn(...))`` in a stage builder that returns
``nn.Sequential(*blocks)`` or ``[(name, stage)]`` lists registered with
``self.add_module(*stage)``; class references flowing in through parameter
defaults, ``partial``, ``to_ntuple``, ``x or Default``, constant-key dict
lookups and factory functions (``get_norm_act_layer``). The evaluator follows
them interprocedurally: a call to an in-tree function binds the caller's
arguments to its parameters (:func:`ckptlint.infer.scope.bind`) and evaluates
its return values in that bound scope. Results are memoised per (expression,
scope), and each site gets a budget of bound calls instead of a fixed depth,
so deep helper chains cost little more than shallow ones.

Python sequences (lists, tuples, zips, loop variables) are tracked as the
*expressions* they hold, with the scope each is evaluated in
(:mod:`ckptlint.infer.sequences`); only module objects become
:class:`Instance` values.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.infer import known
from ckptlint.infer.classrefs import MAX_DEPTH, ClassRefs
from ckptlint.infer.configs import Configs
from ckptlint.infer.lattice import ClassRef, Frame, Instance
from ckptlint.infer.memo import memoised
from ckptlint.infer.registries import Registries
from ckptlint.infer.scope import (
    Env,
    attr_path,
    getattr_key,
    names_from_a_parameter,
    self_attr,
)
from ckptlint.infer.sequences import DEFAULT_BUDGET
from ckptlint.infer.tables import Tables
from ckptlint.project import ClassInfo, ModuleInfo, Project, dotted_name

__all__ = ["DEFAULT_BUDGET", "Evaluator"]


class Evaluator(ClassRefs, Tables, Configs, Registries):
    """Abstract evaluation of module-building expressions, memoised per scope."""

    def __init__(self, project: Project) -> None:
        super().__init__(project)
        self._memo: dict[tuple[int, int, int, int], tuple[cst.BaseExpression, list[Instance]]] = {}
        self._active: set[tuple[int, int, int, int]] = set()
        self._ref_memo: dict[tuple[int, int, int, int], tuple[cst.BaseExpression, list[ClassRef]]] = {}
        self._ref_active: set[tuple[int, int, int, int]] = set()

    # -- instances -------------------------------------------------------------------

    def instances(
        self,
        expr: cst.BaseExpression,
        mod: ModuleInfo,
        env: Env | None,
        owner: ClassInfo | None = None,
        depth: int = 0,
        instance: Instance | None = None,
    ) -> list[Instance]:
        """Module objects ``expr`` may evaluate to, in the scope of ``env`` (``self`` being ``instance``)."""
        return self.instances_in(expr, Frame(mod, env, owner, instance), depth)

    def instances_in(self, expr: cst.BaseExpression, fr: Frame, depth: int = 0) -> list[Instance]:
        if depth > MAX_DEPTH:
            return []
        return memoised(self._memo, self._active, expr, fr, lambda: self._instances(expr, fr, depth))

    def _instances(self, expr: cst.BaseExpression, fr: Frame, depth: int) -> list[Instance]:
        env, owner = fr.env, fr.owner
        if isinstance(expr, cst.Call):
            return self._call_instances(expr, fr, depth)
        if isinstance(expr, cst.IfExp):
            return self.instances_in(expr.body, fr, depth + 1) + self.instances_in(expr.orelse, fr, depth + 1)
        if isinstance(expr, cst.BooleanOperation):
            return self.instances_in(expr.left, fr, depth + 1) + self.instances_in(expr.right, fr, depth + 1)
        if isinstance(expr, cst.Name) and env is not None:
            out: list[Instance] = []
            for value, vfr in self.sources(expr.value, fr):
                if value is not expr:
                    out.extend(self.instances_in(value, vfr, depth + 1))
            extra_attrs = env.obj_attrs.get(expr.value)
            appended = env.appended.get(expr.value)
            if extra_attrs or appended:
                out = [self._decorate(inst, extra_attrs, appended, fr, depth) for inst in out]
            return out
        if isinstance(expr, cst.Attribute) and owner is not None and env is not None:
            attr = self_attr(expr, env.self_name) or attr_path(expr, env.self_name)
            if attr is not None:
                found = self.self_attribute(owner, attr, depth, fr.instance)
                if found is not None:
                    return found
        if isinstance(expr, cst.Attribute):
            # ``<module object>.attr``: an attribute of a known class or namespace module.
            out = []
            for inst in self.instances_in(expr.value, fr, depth + 1):
                if inst.cls is not None:
                    out.extend(self.self_attribute(inst.cls, expr.attr.value, depth, inst) or ())
                else:
                    out.extend(dict(inst.attrs).get(expr.attr.value, ()))
            return out
        if isinstance(expr, cst.Subscript):
            out = []
            for inst in self.instances_in(expr.value, fr, depth + 1):
                if inst.is_container and len(expr.slice) == 1:
                    out.extend(inst.select(expr.slice[0].slice))
                else:
                    out.extend(inst.elements)
            if not out:
                for value, vfr in self.subscript_sources(expr, fr, depth + 1):
                    out.extend(self.instances_in(value, vfr, depth + 1))
            return out
        return []

    def _decorate(
        self,
        inst: Instance,
        attrs: dict[str, list[cst.BaseExpression]] | None,
        appended: list[tuple[cst.BaseExpression, bool]] | None,
        fr: Frame,
        depth: int,
    ) -> Instance:
        """A local module object plus what the function later attached/appended to it."""
        if inst.is_container and appended:
            extra: list[Instance] = []
            for value, star in appended:
                if star:
                    items, _ = self.list_items(value, fr, depth + 1)
                    extra.extend(items)
                else:
                    extra.extend(self.instances_in(value, fr, depth + 1))
            return replace(inst, elements=inst.elements + tuple(extra), ordered=False)
        if attrs and inst.cls is None and not inst.is_container:
            evaluated = tuple(
                (name, tuple(i for v in values for i in self.instances_in(v, fr, depth + 1)))
                for name, values in sorted(attrs.items())
            )
            return replace(inst, attrs=inst.attrs + evaluated)
        return inst

    def _call_instances(self, call: cst.Call, fr: Frame, depth: int) -> list[Instance]:
        func, env, owner = call.func, fr.env, fr.owner
        if owner is not None and env is not None and isinstance(func, cst.Attribute) and self_attr(func, env.self_name) is not None:
            name = func.attr.value
            if name in ("children", "modules", "values") and not call.args:
                return [self.all_children(owner, fr, call)]
            method = self.project.find_method(owner, name)
            if method is not None:
                # ``self._make_layer(...)``: what the factory method returns, its arguments bound.
                out: list[Instance] = []
                for ret, rfr in self.return_sources(method, call, fr, depth, bound_self=True, instance=fr.instance):
                    out.extend(self.instances_in(ret, rfr, depth + 1))
                return out
        if isinstance(func, cst.Name) and func.value == "getattr" and len(call.args) >= 2 and owner is not None and env is not None:
            if isinstance(call.args[0].value, cst.Name) and call.args[0].value.value == env.self_name:
                held = self_attr(call.args[1].value, env.self_name)
                if held is not None:  # ``getattr(self, self.norm1_name)``: what add_module put under that name
                    found = self.self_attribute(owner, getattr_key(held), depth, fr.instance)
                    if found:
                        return list(found)
                names = self.constant_strings(call.args[1].value, fr)
                if names is not None:
                    out = []
                    for name in names:
                        out.extend(self.self_attribute(owner, name, depth, fr.instance) or ())
                    return out
                if names_from_a_parameter(call.args[1].value, env):
                    # ``for name in plugin_names: getattr(self, name)``: names the caller chose, not evidence
                    # that any particular member runs here.
                    return []
                return list(self.all_children(owner, fr, call, unnamed_only=True).elements)
        built = self.registry_built(call, fr, depth)
        if built is not None:  # ``MODELS.build(cfg)``
            return built
        refs = self._class_refs(func, fr, depth + 1)
        out = []
        for ref in refs:
            if N.matches(ref.qualnames, N.CONTAINER_CLASSES) or known.is_container(ref.qualnames):
                elements, ordered, heads = self._elements(call.args, fr, depth)
                keys = self._dict_keys(call.args, fr, depth)
                qualnames = ref.qualnames if N.matches(ref.qualnames, N.CONTAINER_CLASSES) else known.container_kind(ref.qualnames)
                out.append(
                    Instance(qualnames, None, fr.module, call, elements=tuple(elements), ordered=ordered, heads=heads, is_container=True,
                             prefix=self._prefix(call.args, env), keys=keys if len(keys) == len(elements) else (), frame=fr)
                )
            elif N.matches(ref.qualnames, N.CHECKPOINT_WRAPPER) and call.args:
                for inner in self.instances_in(call.args[0].value, fr, depth + 1):
                    out.append(replace(inner, wrapped_by=call, wrapped_module=fr.module))
            elif ref.func is not None:
                for ret, rfr in self.return_sources(ref.func, call, fr, depth):
                    out.extend(self.instances_in(ret, rfr, depth + 1))
            elif (spec := known.cfg_factory(ref.qualnames)) is not None:
                out.extend(self._cfg_built(call, spec, fr, depth))
            else:
                kwargs = ref.kwargs + tuple((a.keyword.value, a.value) for a in call.args if a.keyword is not None)
                args = tuple(a.value for a in call.args if a.keyword is None and not a.star)
                if ref.cls is None:  # ``ConvModule(..., norm_cfg=norm_cfg)``: the config the name holds
                    kwargs = self.resolved_config_kwargs(ref.qualnames, kwargs, fr, depth)
                built = Instance(ref.qualnames, ref.cls, fr.module, call, kwargs, args, frame=fr, preset=ref.preset)
                out.append(self.as_sequential(built) if ref.cls is not None else built)
        if not refs:
            # ``builder(in_chs, block_args)``: an in-tree object whose ``__call__`` builds modules.
            for obj in self.instances_in(func, fr, depth + 1) if isinstance(func, (cst.Name, cst.Attribute)) else ():
                if obj.cls is None or self.project.find_method(obj.cls, "forward") is not None:
                    continue
                method = self.project.find_method(obj.cls, "__call__")
                if method is not None:
                    for ret, rfr in self.return_sources(method, call, fr, depth, bound_self=True, owner=obj.cls, instance=obj):
                        out.extend(self.instances_in(ret, rfr, depth + 1))
        return out

    def _elements(self, args: Sequence[cst.Arg], fr: Frame, depth: int) -> tuple[list[Instance], bool, int]:
        """A container's elements, whether they are exactly its sequence, and how many of the first
        ones are alternatives for its first slot (0: not known)."""
        out: list[Instance] = []
        ordered = True
        heads: int | None = None  # set by the first slot; 0 once the slots are not known

        def slot(found: list[Instance]) -> None:
            nonlocal heads
            if heads is None:
                heads = len(found)
            out.extend(found)

        for arg in args:
            if arg.keyword is not None:
                continue
            value = arg.value
            if isinstance(value, cst.Call) and dotted_name(value.func) in ("OrderedDict", "collections.OrderedDict", "dict"):
                ordered = False
                for sub in value.args:
                    pairs = _literal_pairs(sub.value) if sub.keyword is None else None
                    if pairs is not None:  # ``OrderedDict([("conv1", conv1), ...])``: one slot per pair
                        for v in pairs:
                            slot(self.instances_in(v, fr, depth + 1))
                        continue
                    items, _ = self.list_items(sub.value, fr, depth + 1)
                    if not items and sub.keyword is None:
                        for pair, pfr in self.element_sources(sub.value, fr, depth + 1):
                            for v, vfr in self.position_sources(pair, pfr, 1, depth + 1):
                                items.extend(self.instances_in(v, vfr, depth + 1))
                    heads = 0 if heads is None else heads
                    out.extend(items)
                continue
            if arg.star == "*" or isinstance(value, (cst.List, cst.Tuple)):
                items, ok = self.list_items(value, fr, depth + 1)
                out.extend(items)
                ordered = ordered and ok
            elif isinstance(value, (cst.ListComp, cst.GeneratorExp)):
                out.extend(self.instances_in(value.elt, fr, depth + 1))
                ordered = False
            elif isinstance(value, cst.Dict):
                for el in value.elements:
                    if isinstance(el, cst.DictElement):
                        out.extend(self.instances_in(el.value, fr, depth + 1))
                ordered = False
            elif isinstance(value, cst.DictComp):
                out.extend(self.instances_in(value.value, fr, depth + 1))
                ordered = False
            elif isinstance(value, cst.Name) and fr.env is not None and value.value in fr.env.appended:
                items, _ = self.list_items(value, fr, depth + 1)
                out.extend(items)
                ordered = False
            else:
                found = self.instances_in(value, fr, depth + 1)
                if not found:
                    items, _ = self.list_items(value, fr, depth + 1)
                    found = items
                    ordered = False
                    heads = 0 if heads is None else heads
                slot(found)
                ordered = ordered and len(found) == 1
            if heads is None:  # the first argument was not one slot
                heads = 0
        return out, ordered, heads or 0

    def _dict_keys(self, args: Sequence[cst.Arg], fr: Frame, depth: int) -> tuple[str | None, ...]:
        """Keys of ``nn.ModuleDict({"a": A(), ...})``, one per element found."""
        out: list[str | None] = []
        for arg in args:
            if arg.keyword is None and isinstance(arg.value, cst.Dict):
                for el in arg.value.elements:
                    if isinstance(el, cst.DictElement):
                        key = el.key.evaluated_value if isinstance(el.key, cst.SimpleString) else None
                        n = len(self.instances_in(el.value, fr, depth + 1))
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


def _literal_pairs(value: cst.BaseExpression) -> list[cst.BaseExpression] | None:
    """The second items of a literal list of 2-tuples (``[("conv", conv), ("bn", bn)]``), else None."""
    if not isinstance(value, (cst.List, cst.Tuple)):
        return None
    out: list[cst.BaseExpression] = []
    for el in value.elements:
        item = el.value
        if isinstance(el, cst.StarredElement) or not isinstance(item, cst.Tuple) or len(item.elements) != 2:
            return None
        if isinstance(item.elements[1], cst.StarredElement):
            return None
        out.append(item.elements[1].value)
    return out
