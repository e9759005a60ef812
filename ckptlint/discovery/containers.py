"""What a checkpointed container runs: ``checkpoint_sequential`` segments, timm's ``checkpoint_seq``
stages, the members of ``nn.Sequential``/``ModuleList`` built by the tree, and the classes a policy
(``isinstance`` check functions, ``ModuleWrapPolicy({Block})``) selects.

A mixin of :class:`ckptlint.discovery.sites.Discovery` (``project``, ``evaluator`` and ``resolver``
come from it).
"""

from __future__ import annotations

from typing import Any, Iterator

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.analysis.params import input_params
from ckptlint.discovery.records import CheckedCallable, SiteCall, calls_in, fn_arg, kwarg
from ckptlint.infer import Instance, literal_truth
from ckptlint.infer.resolver import Ctx
from ckptlint.project import ClassInfo, dotted_name

__all__ = ["Containers"]


class Containers:
    """Expands checkpointed containers and policies into what runs (mixin of ``Discovery``)."""

    project: Any
    evaluator: Any
    resolver: Any

    def _sequence(self, expr: cst.BaseExpression, ctx: Ctx) -> tuple[list[Instance], bool]:
        if isinstance(expr, (cst.List, cst.Tuple)):
            items: list[Instance] = []
            ordered = True
            for el in expr.elements:
                found = self.resolver.instances(el.value, ctx)
                if isinstance(el, cst.StarredElement) or len(found) != 1:
                    ordered = False
                for f in found:
                    if f.is_container and isinstance(el, cst.StarredElement):
                        items.extend(f.elements)
                    else:
                        items.append(f)
            return items, ordered
        items = []
        ordered = True
        found = self.resolver.instances(expr, ctx)
        if len(found) != 1:
            ordered = False
        for inst in found:
            if inst.is_container:
                items.extend(inst.elements)
                ordered = ordered and inst.ordered
            else:
                items.append(inst)
        return items, ordered

    def _sequential(self, site: SiteCall, preserve_rng: bool) -> Iterator[CheckedCallable]:
        call = site.call
        functions = fn_arg(call, 0)
        segments = kwarg(call, "segments")
        if segments is None:
            segments = fn_arg(call, 1)
        if functions is None:
            return
        items, ordered = self._sequence(functions, site.ctx)
        nseg: int | None = None
        if isinstance(segments, cst.Integer):
            nseg = int(segments.value, 0)
        if nseg is not None and nseg <= 1:
            return  # the last segment is never checkpointed
        if ordered and nseg is not None:
            # torch: segment_size = n // segments; segments 0..segments-2 are
            # checkpointed, i.e. modules [0, size * (segments - 1)).
            size = len(items) // nseg
            limit = size * (nseg - 1)
            chosen = [(i, inst, i % size == 0 if size else False) for i, inst in enumerate(items) if i < limit]
        else:
            chosen = [(i, inst, True) for i, inst in enumerate(items)]
        yield from self._members(site, chosen, preserve_rng, "checkpoint_sequential")

    def _seq(self, site: SiteCall, preserve_rng: bool) -> Iterator[CheckedCallable]:
        call = site.call
        functions = fn_arg(call, 0)
        if functions is None:
            return
        items, ordered = self._sequence(functions, site.ctx)
        every_expr = kwarg(call, "every") or fn_arg(call, 2)
        every = int(every_expr.value, 0) if isinstance(every_expr, cst.Integer) else 1
        skip_last = literal_truth(kwarg(call, "skip_last")) is True
        n = len(items)
        if ordered and skip_last:
            # timm: with skip_last the final chunk runs without checkpoint.
            last_start = ((n - 1) // max(every, 1)) * max(every, 1)
            items = items[:last_start]
            n = len(items)
        chosen = [(i, inst, (i % max(every, 1) == 0) if ordered else True) for i, inst in enumerate(items)]
        yield from self._members(site, chosen, preserve_rng, "checkpoint_seq")

    def _members(
        self, site: SiteCall, chosen: list[tuple[int, Instance, bool]], preserve_rng: bool, via: str
    ) -> Iterator[CheckedCallable]:
        seen: set[tuple[int, bool]] = set()
        for _, inst, starts in chosen:
            for ref in self.resolver.forward_refs(inst, receives_input=starts):
                key = (id(ref.node), starts)
                if key in seen:
                    continue
                seen.add(key)
                yield CheckedCallable(ref, input_params(ref), site.module, site.call, preserve_rng, via, site.ctx.qualname)

    def _isinstance_classes(self, check_fn: cst.BaseExpression, ctx: Ctx) -> list[ClassInfo]:
        bodies: list[cst.BaseExpression] = []
        if isinstance(check_fn, cst.Lambda):
            bodies.append(check_fn.body)
        else:
            for ref in self.resolver.resolve(check_fn, ctx):
                env = self.evaluator.env_of(ref.node)
                bodies.extend(env.returns)
        out: list[ClassInfo] = []
        for body in bodies:
            for call in calls_in(body):
                if dotted_name(call.func) == "isinstance" and len(call.args) == 2:
                    target = call.args[1].value
                    exprs = [el.value for el in target.elements] if isinstance(target, cst.Tuple) else [target]
                    for e in exprs:
                        for q in self.resolver.qualnames(e, ctx):
                            found = self.project.lookup(q, ctx.module)
                            if isinstance(found, ClassInfo):
                                out.append(found)
                                break
        return out

    def _policy_classes(self, policy: cst.BaseExpression, ctx: Ctx) -> list[ClassInfo]:
        """Classes a wrap policy names: ``ModuleWrapPolicy({Block})``, ``{Layer}``, ``[A, B]``, ``Block``."""
        if isinstance(policy, cst.Call) and N.matches(self.resolver.qualnames(policy.func, ctx), N.MODULE_WRAP_POLICY):
            inner = fn_arg(policy, 0) or kwarg(policy, "module_classes")
            return self._policy_classes(inner, ctx) if inner is not None else []
        if isinstance(policy, (cst.Set, cst.List, cst.Tuple)):
            exprs: list[cst.BaseExpression] = [el.value for el in policy.elements]
        elif isinstance(policy, cst.Call) and dotted_name(policy.func) in ("set", "frozenset", "list", "tuple") and policy.args:
            return self._policy_classes(policy.args[0].value, ctx)
        elif isinstance(policy, (cst.Name, cst.Attribute)):
            exprs = [policy]
        else:
            return []
        out: list[ClassInfo] = []
        for e in exprs:
            for ref in self.evaluator.class_refs(e, ctx.module, ctx.env):
                if ref.cls is not None and ref.cls not in out:
                    out.append(ref.cls)
        return out
