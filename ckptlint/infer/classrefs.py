"""What classes (or factory functions) an expression may name.

``norm_layer`` -> its default ``nn.BatchNorm2d``, the classes the file's model configs pass under
that keyword, or what the caller bound; ``partial(Block, ...)`` -> ``Block`` with the keywords it
fixed; ``layers.conv_norm_act`` -> the field of a layer-factory object; ``get_norm(name)`` -> what
the factory returns; ``BLOCKS.get("Basic")`` -> the registered class. A mixin of
:class:`ckptlint.infer.evaluator.Evaluator`, which supplies the instance queries it uses.
"""

from __future__ import annotations

from typing import Any

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.infer import known
from ckptlint.infer.lattice import ClassRef, Frame, Instance
from ckptlint.infer.memo import memoised
from ckptlint.infer.scope import Env, self_attr
from ckptlint.project import ClassInfo, FunctionInfo, ModuleInfo, dotted_name

__all__ = ["MAX_DEPTH", "ClassRefs"]

MAX_DEPTH = 40  # a recursion guard only; the cost bound is the budget


class ClassRefs:
    """Class-reference queries (mixin of the evaluator)."""

    project: Any
    _ref_memo: dict[tuple[int, int, int, int], tuple[cst.BaseExpression, list[ClassRef]]]
    _ref_active: set[tuple[int, int, int, int]]
    instances_in: Any
    sources: Any
    is_bound_local: Any
    init_env: Any
    subscript_sources: Any
    registry_classes: Any
    return_sources: Any
    keyword_values: Any

    def class_refs(
        self, expr: cst.BaseExpression, mod: ModuleInfo, env: Env | None, depth: int = 0, local_table: dict[str, list[str]] | None = None
    ) -> list[ClassRef]:
        """Classes/functions ``expr`` may name (``norm_layer`` -> its default ``nn.BatchNorm2d``)."""
        return self._class_refs(expr, Frame(mod, env, None), depth, local_table)

    def _class_refs(
        self, expr: cst.BaseExpression, fr: Frame, depth: int, local_table: dict[str, list[str]] | None = None
    ) -> list[ClassRef]:
        if depth > MAX_DEPTH:
            return []
        if local_table:
            return self._class_refs_uncached(expr, fr, depth, local_table)
        return memoised(self._ref_memo, self._ref_active, expr, fr, lambda: self._class_refs_uncached(expr, fr, depth, None))

    def _class_refs_uncached(
        self, expr: cst.BaseExpression, fr: Frame, depth: int, local_table: dict[str, list[str]] | None
    ) -> list[ClassRef]:
        env = fr.env
        if isinstance(expr, cst.Name) and env is not None and (self.is_bound_local(expr.value, env) or expr.value in env.params):
            out: list[ClassRef] = []
            for value, vfr in self.sources(expr.value, fr):
                if value is not expr:
                    out.extend(self._class_refs(value, vfr, depth + 1))
            if expr.value in env.params and expr.value not in env.bound:
                out.extend(self._param_flow(expr.value, fr, depth) if not out else self._config_flow(expr.value, fr, depth))
            return out
        if isinstance(expr, cst.Attribute) and fr.owner is not None and env is not None and self_attr(expr, env.self_name):
            # ``self.norm_layer`` (a class stored by ``__init__``, its arguments bound when known).
            found = self.init_env(fr.owner, fr.instance)
            if found is not None:
                init_cls, init_env = found
                init_fr = Frame(init_cls.module, init_env, fr.owner, fr.instance)
                refs: list[ClassRef] = []
                for value in init_env.self_attrs.get(expr.attr.value, ()):
                    refs.extend(self._class_refs(value, init_fr, depth + 1))
                if refs:
                    return refs
        if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and env is not None and (
            self.is_bound_local(expr.value.value, env) or expr.value.value in env.params
        ):
            # ``layers.conv_norm_act`` where ``layers = layers or LayerFn()``: a field of an object.
            refs = []
            for obj in self.instances_in(expr.value, fr, depth + 1):
                refs.extend(self._field_class_refs(obj, expr.attr.value, depth))
            if refs:
                return refs
        if isinstance(expr, (cst.Name, cst.Attribute)):
            dotted = dotted_name(expr)
            if dotted is None:
                return []
            if local_table and dotted.split(".")[0] in local_table:
                head, _, rest = dotted.partition(".")
                quals = [f"{q}.{rest}" if rest else q for q in local_table[head]]
            else:
                quals = self.project.resolve_expr(fr.module, expr)
            if not quals:
                return []
            cls: ClassInfo | None = None
            func: FunctionInfo | None = None
            for q in quals:
                found = self.project.lookup(q, fr.module)
                if isinstance(found, ClassInfo):
                    cls = found
                    break
                if isinstance(found, FunctionInfo):
                    func = found
                    break
            if cls is None and func is None and len(quals) == 1 and "." not in dotted:
                # A module-level constant: ``_NORM_MAP = dict(bn=nn.BatchNorm2d, ...)`` seen through.
                values = fr.module.assigns.get(dotted) if dotted in fr.module.assigns else None
                if values and not any(isinstance(v, (cst.Name, cst.Attribute)) for v in values):
                    out = []
                    for v in values:
                        out.extend(self._class_refs(v, Frame(fr.module, None), depth + 1))
                    if out:
                        return out
            return [ClassRef(tuple(quals), cls, func, frame=fr)]
        if isinstance(expr, cst.Call):
            return self._call_class_refs(expr, fr, depth)
        if isinstance(expr, cst.IfExp):
            return self._class_refs(expr.body, fr, depth + 1) + self._class_refs(expr.orelse, fr, depth + 1)
        if isinstance(expr, cst.BooleanOperation):
            return self._class_refs(expr.left, fr, depth + 1) + self._class_refs(expr.right, fr, depth + 1)
        if isinstance(expr, cst.Subscript):
            out = []
            for value, vfr in self.subscript_sources(expr, fr, depth + 1):
                out.extend(self._class_refs(value, vfr, depth + 1))
            return out
        return []

    def _field_class_refs(self, obj: Instance, attr: str, depth: int) -> list[ClassRef]:
        """Classes a field of an in-tree object holds: the keyword it was built with, else what its
        ``__init__`` stores, else the class-level default (a dataclass of layer factories)."""
        cls = obj.cls
        if cls is None or obj.is_container:
            return []
        fields = [n for n in cls.class_attrs if not n.startswith("_")]
        for name, value in obj.kwargs:
            if name == attr and obj.frame is not None and attr in fields:
                return self._class_refs(value, obj.frame, depth + 1)
        if attr in fields and obj.frame is not None and _is_dataclass(cls.node):
            i = fields.index(attr)
            if i < len(obj.args):
                return self._class_refs(obj.args[i], obj.frame, depth + 1)
        found = self.init_env(cls, obj)
        if found is not None and attr in found[1].self_attrs:
            init_cls, init_env = found
            init_fr = Frame(init_cls.module, init_env, cls, obj)
            return [r for v in init_env.self_attrs[attr] for r in self._class_refs(v, init_fr, depth + 1)]
        if attr in cls.class_attrs:
            return self._class_refs(cls.class_attrs[attr], Frame(cls.module, None), depth + 1)
        return []

    def _call_class_refs(self, call: cst.Call, fr: Frame, depth: int) -> list[ClassRef]:
        """Classes a call returns: ``partial(Block, ...)``, a factory function's return value."""
        registered = self.registry_classes(call, fr, depth)
        if registered is not None:  # ``BLOCKS.get("BasicBlock")``
            return registered
        inner = self._class_refs(call.func, fr, depth + 1)
        if any(N.matches(r.qualnames, N.PARTIAL) for r in inner) and call.args:
            kwargs = tuple((a.keyword.value, a.value) for a in call.args if a.keyword is not None)
            return [
                ClassRef(r.qualnames, r.cls, r.func, kwargs + r.kwargs, r.frame, r.preset + tuple((k, v, fr) for k, v in kwargs))
                for r in self._class_refs(call.args[0].value, fr, depth + 1)
            ]
        out: list[ClassRef] = []
        for ref in inner:
            if ref.func is not None:
                for ret, rfr in self.return_sources(ref.func, call, fr, depth):
                    out.extend(r for r in self._class_refs(ret, rfr, depth + 1) if r.cls is not None or r.func is None)
            elif ref.cls is None and ref.func is None:
                for q in known.factory_classes(ref.qualnames, call):
                    out.append(ClassRef((q,), None, None, frame=fr))
        return out

    def _param_flow(self, param: str, fr: Frame, depth: int) -> list[ClassRef]:
        """A constructor parameter without a default: the classes its module passes under that keyword.

        ``ResNet(block=...)`` is only ever built from ``dict(block=Bottleneck, layers=...)``
        model configs in the same file; every such keyword value is a candidate.
        """
        if fr.owner is None:
            return []
        out: list[ClassRef] = []
        for value in self.keyword_values(fr.owner.module, param):
            out.extend(r for r in self._class_refs(value, Frame(fr.owner.module, None), depth + 1) if r.cls is not None)
        return out

    def _config_flow(self, param: str, fr: Frame, depth: int) -> list[ClassRef]:
        """A defaulted constructor parameter of an object built where its arguments are not seen
        (``build_model_with_cfg(ResNetV2, **kwargs)``): the default, and the classes the file's model
        configs pass under that keyword (``model_args = dict(..., norm_layer=BatchNormAct2d)``)."""
        if fr.owner is None or fr.instance is not None:
            return []
        out: list[ClassRef] = []
        for value in self.keyword_values(fr.owner.module, param, configs_only=True):
            for r in self._class_refs(value, Frame(fr.owner.module, None), depth + 1):
                if r.cls is not None or known.known_class(r.qualnames) or any(q.startswith("torch.nn.") for q in r.qualnames):
                    out.append(r)
        return out


def _is_dataclass(node: cst.ClassDef) -> bool:
    return any(dotted_name(d.decorator.func if isinstance(d.decorator, cst.Call) else d.decorator) in ("dataclass", "dataclasses.dataclass") for d in node.decorators)
