"""Python-level data flow under the evaluator: names, sequences, tuples, call results.

Stage builders pass modules around in plain Python values before any module
container sees them: ``blocks.append(block_fn(...))``, ``return stages,
feature_info`` then ``stage_modules, _ = make_blocks(...)``, ``for stage in
stage_modules: self.add_module(*stage)``. Rather than model every Python
value, this layer answers three questions about an expression in a scope,
each as a list of *(expression, scope)* pairs the evaluator then evaluates:
what a name may hold (:meth:`Sequences.sources`), what the items of an
iterable may be (:meth:`Sequences.element_sources`) and what position ``k``
of a tuple may be (:meth:`Sequences.position_sources`). Calls to in-tree
functions are followed with their arguments bound
(:meth:`Sequences.return_sources`), each bound call drawing on the budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.infer import known
from ckptlint.infer.lattice import Frame, Instance
from ckptlint.infer.scope import Env, bind, scope_env
from ckptlint.project import FunctionInfo, ModuleInfo, Project, dotted_name

if TYPE_CHECKING:
    from ckptlint.project import ClassInfo

__all__ = ["DEFAULT_BUDGET", "Sequences", "Source"]

DEFAULT_BUDGET = 128  # bound calls (helper bodies evaluated for one call site) per checkpoint site

Source = tuple[cst.BaseExpression, Frame]
_PASS_THROUGH = frozenset({"list", "tuple", "reversed", "iter", "sorted", "set", "frozenset"})
_MAX_SEQ_DEPTH = 40
_MAX_BLOCK_CHOICES = 12  # as for a registry built with a key not known statically


class Sequences:
    """Sources of names, items and tuple positions; bound calls under a budget."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._envs: dict[int, tuple[cst.CSTNode, Env]] = {}
        self._bound: dict[tuple[int, int, int], Env | None] = {}
        self._keywords: dict[tuple[str, str, bool], list[cst.BaseExpression]] = {}
        # Local names whose items/positions are being looked up: ``x = x if c else d`` refers back
        # to itself, and following it again would only repeat (exponentially) what is under way.
        self._active_names: set[tuple[str, int, int, int]] = set()
        self.budget = 0
        self.spent = 0  # bound calls evaluated so far (all sites)
        self.reset_budget()

    def reset_budget(self, budget: int | None = None) -> None:
        """Give the next query (one checkpoint site) ``budget`` bound calls to spend."""
        self.budget = DEFAULT_BUDGET if budget is None else budget

    def env_of(self, fn: cst.FunctionDef | cst.Lambda, self_name: str | None = None) -> Env:
        cached = self._envs.get(id(fn))
        if cached is not None and cached[0] is fn:
            return cached[1]
        env = scope_env(fn, self_name)
        self._envs[id(fn)] = (fn, env)
        return env

    # -- names ----------------------------------------------------------------------

    @staticmethod
    def is_bound_local(name: str, env: Env) -> bool:
        return (
            name in env.values
            or name in env.bound
            or name in env.unpacked
            or name in env.loop_iters
            or name in env.bound_star
        )

    def sources(self, name: str, fr: Frame, depth: int = 0) -> list[Source]:
        """Expressions (with their scopes) that the local ``name`` may hold."""
        env = fr.env
        if env is None or depth > _MAX_SEQ_DEPTH:
            return []
        out: list[Source] = []
        unpacked = env.unpacked.get(name, ())
        for value in env.values.get(name, ()):
            if not any(u is value for u, _ in unpacked):
                out.append((value, fr))
        for value, k in unpacked:
            out.extend(self.position_sources(value, fr, k, depth + 1))
        out.extend(env.bound.get(name, ()))
        if name in env.loop_iters and name not in env.values:
            positions = env.loop_unpacked.get(name, ())
            for it in env.loop_iters[name]:
                ks = [k for i, k in positions if i is it]
                for item, ifr in self.element_sources(it, fr, depth + 1):
                    if ks:
                        for k in ks:
                            out.extend(self.position_sources(item, ifr, k, depth + 1))
                    else:
                        out.append((item, ifr))
        return out

    def constant_strings(self, expr: cst.BaseExpression, fr: Frame, depth: int = 0) -> list[str] | None:
        """The strings ``expr`` may be (``for n in ('layer1', 'layer2')``), None when any is unknown."""
        if isinstance(expr, cst.SimpleString):
            value = expr.evaluated_value
            return [value] if isinstance(value, str) else None
        if fr.env is None or depth > _MAX_SEQ_DEPTH:
            return None
        if isinstance(expr, cst.Attribute) and fr.owner is not None and isinstance(expr.value, cst.Name) and expr.value.value == fr.env.self_name:
            init = self.init_env(fr.owner, fr.instance)  # type: ignore[attr-defined]
            if init is None:
                return None
            init_cls, init_env = init
            init_fr = Frame(init_cls.module, init_env, fr.owner, fr.instance)
            found = [(v, init_fr) for v in init_env.self_attrs.get(expr.attr.value, ())]
        elif isinstance(expr, cst.Name):
            found = self.sources(expr.value, fr, depth + 1)
        else:
            return None
        if not found:
            return None
        out: list[str] = []
        for value, vfr in found:
            if value is expr:
                return None
            strings = self.constant_strings(value, vfr, depth + 1)
            if strings is None:
                return None
            out.extend(strings)
        return out

    # -- sequences ---------------------------------------------------------------------

    def element_sources(self, expr: cst.BaseExpression, fr: Frame, depth: int = 0) -> list[Source]:
        """Expressions the items of the iterable ``expr`` may be."""
        if depth > _MAX_SEQ_DEPTH:
            return []
        if isinstance(expr, (cst.List, cst.Tuple, cst.Set)):
            out: list[Source] = []
            for el in expr.elements:
                if isinstance(el, cst.StarredElement):
                    out.extend(self.element_sources(el.value, fr, depth + 1))
                else:
                    out.append((el.value, fr))
            return out
        if isinstance(expr, (cst.ListComp, cst.GeneratorExp, cst.SetComp)):
            return [(expr.elt, fr)]
        if isinstance(expr, cst.Name) and fr.env is not None:
            env = fr.env

            def items() -> list[Source]:
                out: list[Source] = []
                for value, vfr in self.sources(expr.value, fr, depth + 1):
                    if value is not expr:
                        out.extend(self.element_sources(value, vfr, depth + 1))
                for value, star in env.appended.get(expr.value, ()):
                    out.extend(self.element_sources(value, fr, depth + 1) if star else [(value, fr)])
                out.extend(env.bound_star.get(expr.value, ()))
                return out

            return self._unless_under_way((expr.value, id(env), id(fr.instance), -1), items)
        if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, (cst.Add, cst.Multiply)):
            return self.element_sources(expr.left, fr, depth + 1) + self.element_sources(expr.right, fr, depth + 1)
        if isinstance(expr, cst.IfExp):
            return self.element_sources(expr.body, fr, depth + 1) + self.element_sources(expr.orelse, fr, depth + 1)
        if isinstance(expr, cst.Subscript) and all(isinstance(s.slice, cst.Slice) for s in expr.slice):
            return self.element_sources(expr.value, fr, depth + 1)
        if isinstance(expr, cst.Call):
            return self._call_elements(expr, fr, depth)
        return []

    def _call_elements(self, call: cst.Call, fr: Frame, depth: int) -> list[Source]:
        name = dotted_name(call.func) or ""
        args = [a.value for a in call.args if a.keyword is None and not a.star]
        if name in _PASS_THROUGH and args:
            return self.element_sources(args[0], fr, depth + 1)
        if name == "filter" and len(args) == 2:
            return self.element_sources(args[1], fr, depth + 1)
        if isinstance(call.func, cst.Call) and (dotted_name(call.func.func) or "").rsplit(".", 1)[-1].lstrip("_") in (
            "ntuple", "to_ntuple", "to_2tuple", "to_3tuple", "to_4tuple"
        ):
            return [(a, fr) for a in args]  # ``to_ntuple(n)(block)``: n copies of block
        if name.rsplit(".", 1)[-1] in ("to_2tuple", "to_3tuple", "to_4tuple", "to_ntuple") and args:
            return [(args[-1], fr)]
        if isinstance(call.func, cst.Attribute) and call.func.attr.value == "values" and not call.args:
            return [(v, vfr) for v, vfr in self.dict_value_sources(call.func.value, fr, None, depth + 1)]
        out: list[Source] = []
        for fn, bound_self, owner, obj in self.callees(call, fr):
            for ret, rfr in self.return_sources(fn, call, fr, depth, bound_self=bound_self, owner=owner, instance=obj):
                out.extend(self.element_sources(ret, rfr, depth + 1))
        return out

    def _unless_under_way(self, key: tuple[str, int, int, int], compute: Callable[[], list[Source]]) -> list[Source]:
        """``compute()``, or nothing when the same lookup (a local's items, or its position ``k``) is
        already under way: ``x = x if c else d`` refers back to itself."""
        if key in self._active_names:
            return []
        self._active_names.add(key)
        try:
            return compute()
        finally:
            self._active_names.discard(key)

    def position_sources(self, expr: cst.BaseExpression, fr: Frame, k: int, depth: int = 0) -> list[Source]:
        """Expressions position ``k`` of the tuple ``expr`` may be."""
        if depth > _MAX_SEQ_DEPTH:
            return []
        if isinstance(expr, (cst.Tuple, cst.List)):
            for i, el in enumerate(expr.elements):
                if isinstance(el, cst.StarredElement):
                    return []
                if i == k:
                    return [(el.value, fr)]
            return []
        if isinstance(expr, cst.Name) and fr.env is not None:
            return self._unless_under_way(
                (expr.value, id(fr.env), id(fr.instance), k),
                lambda: [
                    src for value, vfr in self.sources(expr.value, fr, depth + 1) if value is not expr
                    for src in self.position_sources(value, vfr, k, depth + 1)
                ],
            )
        if isinstance(expr, cst.IfExp):
            return self.position_sources(expr.body, fr, k, depth + 1) + self.position_sources(expr.orelse, fr, k, depth + 1)
        if isinstance(expr, (cst.ListComp, cst.GeneratorExp)):  # ``[x for _ in range(n)]``: x at every position
            return [(expr.elt, fr)]
        if isinstance(expr, cst.Call) and dotted_name(expr.func) in ("tuple", "list") and len(expr.args) == 1 and not expr.args[0].star:
            return self.position_sources(expr.args[0].value, fr, k, depth + 1)  # ``tuple(x)``
        if isinstance(expr, cst.Call):
            if self.cfg_factory_index(expr, fr) == k:  # ``name, norm = build_norm_layer(cfg, c)``: the module
                return [(expr, fr)]
            out = []
            for fn, bound_self, owner, obj in self.callees(expr, fr):
                for ret, rfr in self.return_sources(fn, expr, fr, depth, bound_self=bound_self, owner=owner, instance=obj):
                    out.extend(self.position_sources(ret, rfr, k, depth + 1))
            return out
        return []

    def dict_value_sources(
        self, expr: cst.BaseExpression, fr: Frame, key: str | None, depth: int = 0
    ) -> list[Source]:
        """Values of a dict-valued expression (only the one under ``key`` when it is a known constant)."""
        if depth > _MAX_SEQ_DEPTH:
            return []
        pairs: list[tuple[str | None, cst.BaseExpression]] = []
        if isinstance(expr, cst.Dict):
            for el in expr.elements:
                if isinstance(el, cst.DictElement):
                    k = el.key.evaluated_value if isinstance(el.key, cst.SimpleString) else None
                    pairs.append((k if isinstance(k, str) else None, el.value))
        elif isinstance(expr, cst.Call) and dotted_name(expr.func) == "dict":
            pairs = [(a.keyword.value, a.value) for a in expr.args if a.keyword is not None]
        elif isinstance(expr, cst.Name):
            targets: list[Source] = []
            if fr.env is not None and self.is_bound_local(expr.value, fr.env):
                targets = self.sources(expr.value, fr, depth + 1)
            elif expr.value in fr.module.assigns:
                targets = [(v, Frame(fr.module, None)) for v in fr.module.assigns[expr.value]]
            out: list[Source] = []
            for value, vfr in targets:
                if value is not expr:
                    out.extend(self.dict_value_sources(value, vfr, key, depth + 1))
            return out
        if key is not None:
            chosen = [v for k, v in pairs if k == key] or [v for k, v in pairs if k is None]
        else:
            chosen = [v for _, v in pairs]
        return [(v, fr) for v in chosen]

    def _is_dict_literal(self, expr: cst.BaseExpression, fr: Frame) -> bool:
        values = [v for v, _ in self.sources(expr.value, fr)] if isinstance(expr, cst.Name) and fr.env is not None and self.is_bound_local(expr.value, fr.env) else (
            list(fr.module.assigns.get(expr.value, ())) if isinstance(expr, cst.Name) and expr.value in fr.module.assigns else [expr]
        )
        return bool(values) and all(
            isinstance(v, cst.Dict) or (isinstance(v, cst.Call) and dotted_name(v.func) == "dict") for v in values
        )

    def _block_choices(self, values: list[Source]) -> bool:
        """Whether a table's values are 2-12 in-tree blocks: classes with a ``forward`` that derive
        from no library layer (a norm, an activation) but only from ``nn.Module``."""
        if not 2 <= len(values) <= _MAX_BLOCK_CHOICES:
            return False
        for value, vfr in values:
            refs = self._class_refs(value, vfr, 1)  # type: ignore[attr-defined]
            if len(refs) != 1 or refs[0].cls is None or self.project.find_method(refs[0].cls, "forward") is None:
                return False
            bases = self.project.all_base_names(refs[0].cls)
            if any(b.startswith("torch.nn.") and b not in N.PLAIN_MODULES for b in bases) or known.known_class(tuple(bases)):
                return False
        return True

    def subscript_sources(self, expr: cst.Subscript, fr: Frame, depth: int = 0) -> list[Source]:
        """``D['bn']`` / ``D[name]`` on a dict literal (module-level or local) / ``seq[i]`` on a list."""
        if len(expr.slice) != 1 or not isinstance(expr.slice[0].slice, cst.Index):
            return []
        index = expr.slice[0].slice.value
        keys = self.constant_strings(index, fr) if not isinstance(index, cst.Integer) else None
        if keys is None and not isinstance(index, cst.Integer) and self._is_dict_literal(expr.value, fr):
            # ``_NORM_MAP[name]`` with ``name`` computed at run time: every entry would be a guess
            # (timm reaches it only for string configs); the lookup resolves to nothing. A table of
            # blocks (``_block_registry[cfg.type](**kwargs)``) is another matter: whichever block the
            # key picks is checked as a whole, at its own lines, so every entry is a candidate.
            values = self.dict_value_sources(expr.value, fr, None, depth + 1)
            return values if self._block_choices(values) else []
        out: list[Source] = []
        for key in keys or [None]:
            out.extend(self.dict_value_sources(expr.value, fr, key, depth + 1))
        if out:
            return out
        if isinstance(index, cst.Integer):
            return self.position_sources(expr.value, fr, int(index.value, 0), depth + 1)
        return self.element_sources(expr.value, fr, depth + 1)

    # -- calls -------------------------------------------------------------------------

    def callees(self, call: cst.Call, fr: Frame) -> list[tuple[FunctionInfo, bool, ClassInfo | None, Instance | None]]:
        """In-tree functions a call runs (module functions, ``self.method(...)``, ``obj(...)``), with the object ``self`` is."""
        func = call.func
        env, owner = fr.env, fr.owner
        if (
            owner is not None and env is not None and isinstance(func, cst.Attribute)
            and isinstance(func.value, cst.Name) and func.value.value == env.self_name
        ):
            method = self.project.find_method(owner, func.attr.value)
            return [(method, True, owner, fr.instance)] if method is not None else []
        if not isinstance(func, (cst.Name, cst.Attribute)):
            return []
        if isinstance(func, cst.Name) and env is not None and self.is_bound_local(func.value, env):
            # ``builder(in_chs, args)``: a local in-tree object whose ``__call__`` builds things.
            out: list[tuple[FunctionInfo, bool, ClassInfo | None, Instance | None]] = []
            for obj in self.instances_in(func, fr):  # type: ignore[attr-defined]
                if obj.cls is None or self.project.find_method(obj.cls, "forward") is not None:
                    continue
                method = self.project.find_method(obj.cls, "__call__")
                if method is not None:
                    out.append((method, True, obj.cls, obj))
            return out
        for q in self.project.resolve_expr(fr.module, func):
            found = self.project.lookup(q, fr.module)
            if isinstance(found, FunctionInfo):
                return [(found, False, found.cls, None)]
            if found is not None:
                return []
        return []

    def return_sources(
        self, fn: FunctionInfo, call: cst.Call, caller: Frame, depth: int = 0,
        bound_self: bool = False, owner: ClassInfo | None = None, instance: Instance | None = None,
    ) -> list[Source]:
        """The return expressions of ``fn`` in a scope where ``call``'s arguments are bound."""
        self_name = fn.node.params.params[0].name.value if (bound_self or fn.cls is not None) and fn.node.params.params else None
        env = self.env_of(fn.node, self_name)
        key = (id(fn.node), id(call), id(caller.env))
        if key in self._bound:
            bound = self._bound[key]
        elif self.budget > 0:
            self.budget -= 1
            self.spent += 1
            bound = bind(env, fn.node, call, caller, skip_self=bound_self)
            self._bound[key] = bound
        else:
            bound = None
        use = bound if bound is not None else env
        frame = Frame(fn.module, use, owner if owner is not None else fn.cls, instance)
        return [(ret, frame) for ret in use.returns]

    def keyword_values(self, mod: ModuleInfo, keyword: str, configs_only: bool = False) -> list[cst.BaseExpression]:
        """Every class-like value passed as ``keyword=`` (or ``'keyword':``) anywhere in ``mod``;
        with ``configs_only``, only those of config dicts (``dict(keyword=...)``, ``{'keyword': ...}``)."""
        key = (mod.path, keyword, configs_only)
        cached = self._keywords.get(key)
        if cached is not None:
            return cached
        texts = (mod.keywords.configs if configs_only else mod.keywords.every).get(keyword, ())
        out = [cst.parse_expression(text) for text in texts]
        self._keywords[key] = out
        return out

    def list_items(self, value: cst.BaseExpression, fr: Frame, depth: int = 0) -> tuple[list[Instance], bool]:
        """Module objects among the items of ``value``, and whether they are exactly its sequence."""
        instances_in = self.instances_in  # type: ignore[attr-defined]
        if isinstance(value, (cst.List, cst.Tuple)):
            out: list[Instance] = []
            ordered = True
            for el in value.elements:
                if isinstance(el, cst.StarredElement):
                    items, _ = self.list_items(el.value, fr, depth + 1)
                    out.extend(items)
                    ordered = False
                else:
                    found = instances_in(el.value, fr, depth + 1)
                    out.extend(found)
                    ordered = ordered and len(found) == 1
            return out, ordered
        out = []
        for item, ifr in self.element_sources(value, fr, depth + 1):
            out.extend(instances_in(item, ifr, depth + 1))
        if not out and not isinstance(value, (cst.ListComp, cst.GeneratorExp)):
            for inst in instances_in(value, fr, depth + 1):
                out.extend(inst.elements if inst.is_container else (inst,))
        return out, False
