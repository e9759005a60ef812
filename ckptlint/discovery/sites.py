"""Checkpoint sites in one file and the callables they put under checkpoint.

A *site* is a call that checkpoints something (``checkpoint(fn, x)``,
``checkpoint_sequential(seq, 2, x)``, timm's ``checkpoint_seq(blocks, x)``,
``self._gradient_checkpointing_func(layer.__call__, ...)``, a team's own
wrapper around checkpoint, ``checkpoint_wrapper(Block(...))``,
``apply_activation_checkpointing(model, check_fn=...)``) or a class whose
``forward`` runs under checkpoint by inheritance (transformers'
``GradientCheckpointingLayer``). Each site yields :class:`CheckedCallable`
records: the function body that runs, and which of its parameters carry the
checkpoint's inputs.
"""

from __future__ import annotations

import re
from typing import Iterator, Sequence

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.analysis.params import gc_layer_nulled, input_params
from ckptlint.analysis.walk import iter_children
from ckptlint.infer import Evaluator, Instance, literal_truth
from ckptlint.infer.resolver import CallableRef, Ctx, Resolver, first_param
from ckptlint.discovery.containers import Containers
from ckptlint.discovery.module_paths import instances_at_paths, path_strings
from ckptlint.discovery.records import CheckedCallable, SiteCall, Spec, fn_arg, kwarg
from ckptlint.discovery.specs import CallKinds
from ckptlint.project import ClassInfo, ModuleInfo, Project, dotted_name

__all__ = ["CheckedCallable", "Discovery", "SiteCall"]

_SITE_TRIGGER = re.compile(
    r"checkpoint|_gradient_checkpointing_func|apply_activation_checkpointing"
)


class Discovery(CallKinds, Containers):
    """Finds sites and checked callables; shared by every file of one run."""

    def __init__(self, project: Project, checkpoint_functions: Sequence[str] = ()) -> None:
        self.project = project
        self.evaluator = Evaluator(project)
        self.resolver = Resolver(project, self.evaluator)
        self.extra = frozenset(checkpoint_functions)
        self._wrappers: dict[int, int | None] = {}
        self._wrapper_names: dict[str, frozenset[str]] = {}
        self._wrapper_stack: set[int] = set()


    # -- sites in a module -------------------------------------------------------------

    def discover(self, mod: ModuleInfo) -> tuple[list[SiteCall], list[CheckedCallable]]:
        """Every checkpoint site in ``mod`` and what each puts under checkpoint."""
        sites: list[SiteCall] = []
        checked: list[CheckedCallable] = []
        if mod.parse_error is not None:
            return sites, checked
        if "GradientCheckpointingLayer" in mod.source or any(mod.class_bases.values()):
            checked.extend(self._gc_layers(mod))
        if _SITE_TRIGGER.search(mod.source) or self.extra:
            for call, ctx, decorated in _calls_with_ctx(mod, self.evaluator, self._candidate_statements(mod)):
                spec = self.spec(call, ctx)
                if spec is None:
                    if isinstance(call.func, cst.Call) and fn_arg(call.func, 0) is None:
                        # Curried torch >= 2.14 form: checkpoint(use_reentrant=False)(fn).
                        inner = self.spec(call.func, ctx)
                        fn = fn_arg(call, 0)
                        if inner is not None and inner.kind == "checkpoint" and fn is not None:
                            site = SiteCall(call.func, mod, inner.kind, inner.torch_api, inner.name, ctx)
                            preserve = literal_truth(kwarg(call.func, "preserve_rng_state")) is not False
                            for ref in self.resolver.resolve(fn, ctx):
                                checked.append(CheckedCallable(ref, input_params(ref), mod, call, preserve, inner.name, ctx.qualname))
                    continue
                site = SiteCall(call, mod, spec.kind, spec.torch_api, spec.name, ctx)
                if spec.bound:
                    site.bound_kwargs = dict(spec.bound)
                if spec.kind == "gc_func" and ctx.cls is not None and isinstance(call.func, cst.Attribute):
                    site.bound_kwargs = self._checkpoint_attr(ctx.cls, call.func.attr.value) or {}
                if decorated is not None:
                    # ``@checkpoint(use_reentrant=False)`` on a def (torch >= 2.14).
                    if spec.kind == "checkpoint" and fn_arg(call, 0) is None:
                        sites.append(site)
                        is_method = ctx.cls is not None and ctx.fn is None
                        name = f"{ctx.cls.short}.{decorated.name.value}" if is_method and ctx.cls else decorated.name.value
                        ref = CallableRef(decorated, mod, ctx.cls, name, bound=is_method, outer=ctx if ctx.fn else None)
                        preserve = literal_truth(kwarg(call, "preserve_rng_state")) is not False
                        checked.append(CheckedCallable(ref, input_params(ref), mod, call, preserve, spec.name, ctx.qualname))
                    continue
                sites.append(site)
                self.resolver.externals = []
                try:
                    in_tree = list(self._callables(site, spec))
                    checked.extend(in_tree)
                    found = self.resolver.externals
                finally:
                    self.resolver.externals = None
                alone = not in_tree and len({id(inst.call) for inst, _ in found}) == 1
                preserve = literal_truth(site.option("preserve_rng_state")) is not False
                seen: set[int] = set()
                for inst, receives in found:
                    if id(inst.call) in seen:
                        continue
                    seen.add(id(inst.call))
                    target = fn_arg(call, spec.fn_index)
                    label = (dotted_name(target) if target is not None else None) or inst.short_name
                    data = fn_arg(call, spec.fn_index + (2 if spec.kind == "sequential" else 1))
                    data_name = dotted_name(data) if data is not None else None
                    checked.append(
                        CheckedCallable(None, frozenset({"input"} if receives else ()), mod, call, preserve,
                                        spec.name, ctx.qualname, member=inst, label=label,
                                        member_input=data_name or "input", member_alone=alone)
                    )
        return sites, checked

    def _candidate_statements(self, mod: ModuleInfo) -> list[cst.BaseStatement] | None:
        """Top-level statements whose text can hold a site (None: all of them).

        Walking every node of a large file costs about as much as parsing it;
        a site's first line always names checkpoint, an alias imported for it
        or a configured/derived wrapper, so only statements holding such a
        line are walked.
        """
        names = {
            "checkpoint", "checkpoint_sequential", "checkpoint_seq", "checkpoint_wrapper",
            N.GC_FUNC_ATTR, "apply_activation_checkpointing",
        }
        names.update(q.rsplit(".", 1)[-1] for q in self.extra)
        for local, quals in mod.imports.items():
            if any("checkpoint" in q for q in quals):
                names.add(local)
        names.update(mod.checkpoint_aliases)
        alt = "|".join(re.escape(n) for n in sorted(names))
        # A call (``ckpt(``), a decorator, a partial's argument or an alias
        # assignment; docstrings that merely say "checkpoint" do not match.
        # Policies name classes as keywords: ``FSDPStrategy(activation_checkpointing_policy={...})``.
        pattern = re.compile(
            rf"\b(?:{alt})\(|partial\([^)]*\b(?:{alt})\b|=\s*[\w.]*\b(?:{alt})\s*(?:#.*)?$"
            r"|\bactivation_checkpointing(?:_policy)?\s*="
        )
        starts = mod.starts
        if not starts:
            return None
        import bisect

        wanted: set[int] = set()
        for lineno, line in enumerate(mod.lines, 1):
            if pattern.search(line):
                wanted.add(max(bisect.bisect_right(starts, lineno) - 1, 0))
        return [mod.statement(i) for i in sorted(wanted)]

    def _gc_layers(self, mod: ModuleInfo) -> Iterator[CheckedCallable]:
        """Classes whose ``forward`` runs under checkpoint by inheriting GradientCheckpointingLayer."""
        for name in mod.class_bases:
            if not self._may_be_gc_layer(mod, name, set()):
                continue
            node = mod.defs[name]
            if not isinstance(node, cst.ClassDef):
                continue
            cls = self.project.class_info(mod, node, f"{mod.name}.{name}")
            if cls.qualname in N.GC_LAYER_BASES:
                continue
            bases = self.project.all_base_names(cls)
            if not (bases & N.GC_LAYER_BASES or any(b.endswith(".modeling_layers.GradientCheckpointingLayer") for b in bases)):
                continue
            method = self.project.find_method(cls, "forward")
            if method is None:
                continue
            ref = CallableRef(method.node, method.module, cls, f"{cls.short}.forward", bound=True)
            inputs = input_params(ref, extra_nulled=gc_layer_nulled(self.project, cls))
            yield CheckedCallable(ref, inputs, mod, node, True, "GradientCheckpointingLayer")

    def _may_be_gc_layer(self, mod: ModuleInfo, name: str, seen: set[tuple[str, str]]) -> bool:
        """Cheap text test before resolving a class's bases: can one reach GradientCheckpointingLayer?"""
        key = (mod.path, name)
        if key in seen:
            return False
        seen.add(key)
        for base in mod.class_bases.get(name, ()):
            if "GradientCheckpointingLayer" in base:
                return True
            head = base.split(".")[0].split("[")[0]
            if head in mod.class_bases and self._may_be_gc_layer(mod, head, seen):
                return True
            for q in mod.imports.get(head, ()):
                target = self.project.lookup_module_text(q, mod)
                if target is not None and "GradientCheckpointingLayer" in target:
                    return True
        return False

    def _callables(self, site: SiteCall, spec: Spec) -> list[CheckedCallable]:
        call, ctx, mod = site.call, site.ctx, site.module
        preserve = literal_truth(site.option("preserve_rng_state"))
        preserve_rng = preserve is not False
        out: list[CheckedCallable] = []
        try:
            if spec.kind in ("checkpoint", "gc_func"):
                fn = fn_arg(call, spec.fn_index)
                if fn is None:
                    return out
                positional: list[cst.BaseExpression] | None = []
                keywords: dict[str, cst.BaseExpression] = {}
                pos_index = 0
                for a in call.args:
                    if a.star:
                        positional = None
                        break
                    if a.keyword is not None:
                        if a.keyword.value not in N.CHECKPOINT_OWN_KWARGS:
                            keywords[a.keyword.value] = a.value
                        continue
                    if pos_index > spec.fn_index + spec.skip:
                        positional.append(a.value)
                    pos_index += 1
                for ref in self.resolver.resolve(fn, ctx):
                    targets, forwards_kwargs = self._see_through(ref)
                    if targets:
                        # The closure hands its arguments on unchanged: the target receives exactly the site's.
                        passed = (keywords if forwards_kwargs else {}) if positional is not None else None
                        for target in targets:
                            inputs = input_params(target, positional, passed)
                            out.append(CheckedCallable(target, inputs, mod, call, preserve_rng, spec.name, ctx.qualname))
                        continue
                    inputs = input_params(ref, positional, keywords if positional is not None else None)
                    out.append(CheckedCallable(ref, inputs, mod, call, preserve_rng, spec.name, ctx.qualname))
            elif spec.kind == "sequential":
                out.extend(self._sequential(site, preserve_rng))
            elif spec.kind == "seq":
                out.extend(self._seq(site, preserve_rng))
            elif spec.kind == "wrapper" and call.args:
                wrapped = call.args[0].value
                found = self.resolver.instances(wrapped, ctx)
                if (
                    not found and isinstance(wrapped, cst.Name) and ctx.cls is not None and ctx.env is not None
                    and ctx.fn is ctx.cls.methods.get("__init__") and wrapped.value in ctx.env.params
                ):
                    # ``self.inner = checkpoint_wrapper(module)`` in ``__init__``: what the file builds it with.
                    found = self.evaluator.constructed_with(ctx.cls, wrapped.value)
                for inst in found:
                    for ref in self.resolver.forward_refs(inst):
                        out.append(CheckedCallable(ref, input_params(ref), mod, call, True, "checkpoint_wrapper", ctx.qualname))
            elif spec.kind == "paths":
                paths = path_strings(fn_arg(call, 1) or kwarg(call, "modules"))
                for inst in instances_at_paths(self.project, self.evaluator, paths, mod):
                    for ref in self.resolver.forward_refs(inst):
                        out.append(CheckedCallable(ref, input_params(ref), mod, call, True, spec.name, ctx.qualname))
            elif spec.kind == "apply":
                check_fn = kwarg(call, "check_fn")
                classes = self._isinstance_classes(check_fn, ctx) if check_fn is not None else []
                policy = next((v for k in N.POLICY_KEYWORDS if (v := kwarg(call, k)) is not None), None)
                if policy is None and "set_activation_checkpointing" in spec.name:
                    policy = fn_arg(call, 1)
                if policy is not None:
                    classes.extend(self._policy_classes(policy, ctx))
                if classes:
                    for cls in classes:
                        inst = Instance((cls.qualname,), cls, cls.module)
                        for ref in self.resolver.forward_refs(inst):
                            out.append(CheckedCallable(ref, input_params(ref), mod, call, True, "apply_activation_checkpointing", ctx.qualname))
        except RecursionError:
            return out
        return out

    def _see_through(self, ref: CallableRef) -> tuple[list[CallableRef], bool]:
        """For a closure/lambda that only forwards its arguments (``custom_forward(*inputs):
        return module(*inputs)``), what it forwards to: that is the callable users know.
        Also whether it forwards its ``**kwargs``."""
        if ref.outer is None:
            return [], False
        node = ref.node
        if isinstance(node, cst.Lambda):
            body: cst.BaseExpression = node.body
        else:
            stmts = node.body.body if isinstance(node.body, cst.IndentedBlock) else ()
            if len(stmts) != 1 or not isinstance(stmts[0], cst.SimpleStatementLine):
                return [], False
            small = stmts[0].body[0]
            if not isinstance(small, cst.Return) or small.value is None:
                return [], False
            body = small.value
        if not isinstance(body, cst.Call):
            return [], False
        params = [p.name.value for p in (*node.params.posonly_params, *node.params.params)]
        star = node.params.star_arg.name.value if isinstance(node.params.star_arg, cst.Param) else None
        star_kw = node.params.star_kwarg.name.value if isinstance(node.params.star_kwarg, cst.Param) else None
        seen: list[str] = []
        forwards_kwargs = False
        for a in body.args:
            if not isinstance(a.value, cst.Name):
                return [], False
            name = a.value.value
            if a.star == "*" and name == star:
                seen.append("*")
            elif a.star == "**" and name == star_kw:
                forwards_kwargs = True
            elif not a.star and a.keyword is None and name in params:
                seen.append(name)
            else:
                return [], False
        if seen != [*params, *(["*"] if star else [])]:
            return [], False
        self_name = ref.outer.self_name
        env = self.evaluator.env_of(node, self_name)
        ctx = Ctx(ref.module, ref.cls, node, env, self_name, ref.name,
                  closure=ref.closure, closure_refs=ref.closure_refs, outer=ref.outer)
        return self.resolver.resolve(body.func, ctx), forwards_kwargs


def _calls_with_ctx(
    mod: ModuleInfo, evaluator: Evaluator, statements: list[cst.BaseStatement] | None = None
) -> Iterator[tuple[cst.Call, Ctx, cst.FunctionDef | None]]:
    """Every call in ``mod`` with the function/class context it sits in.

    Iterative (an explicit stack), so generated code with very deep
    expressions cannot exhaust Python's recursion limit.
    """
    root: cst.CSTNode = mod.module if statements is None else cst.Module(body=statements)
    stack: list[tuple[cst.CSTNode, Ctx, ClassInfo | None, str]] = [(root, Ctx(mod), None, "")]
    while stack:
        node, ctx, cls, prefix = stack.pop()
        pending: list[tuple[cst.CSTNode, Ctx, ClassInfo | None, str]] = []
        for child in iter_children(node):
            if isinstance(child, cst.ClassDef):
                qual = f"{mod.name}.{prefix}{child.name.value}"
                info = evaluator.project.class_info(mod, child, qual)
                class_ctx = Ctx(mod, info, None, None, None, f"{prefix}{child.name.value}", outer=ctx if ctx.fn else None)
                pending.append((child, class_ctx, info, f"{prefix}{child.name.value}."))
                continue
            if isinstance(child, cst.FunctionDef):
                for dec in child.decorators:
                    if isinstance(dec.decorator, cst.Call):
                        yield dec.decorator, ctx, child
                is_method = cls is not None and ctx.fn is None
                self_name = first_param(child) if is_method else None
                env = evaluator.env_of(child, self_name)
                name = f"{prefix}{child.name.value}"
                inner = Ctx(mod, cls if is_method else ctx.cls, child, env, self_name if is_method else ctx.self_name, name,
                            outer=ctx if ctx.fn is not None else None)
                if not is_method and ctx.fn is not None:
                    inner.self_name = ctx.self_name
                for stmt in _local_imports(child):
                    mod.add_import(stmt, inner.local_imports)
                pending.append((child, inner, None, f"{name}.<locals>."))
                continue
            if isinstance(child, cst.Decorator):
                continue
            if isinstance(child, cst.Call):
                yield child, ctx, None
            pending.append((child, ctx, cls, prefix))
        stack.extend(reversed(pending))


def _local_imports(fn: cst.FunctionDef) -> Iterator[cst.Import | cst.ImportFrom]:
    body = fn.body.body if isinstance(fn.body, cst.IndentedBlock) else ()
    stack = list(body)
    while stack:
        stmt = stack.pop()
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                if isinstance(small, (cst.Import, cst.ImportFrom)):
                    yield small
        elif isinstance(stmt, (cst.If, cst.Try, cst.With, cst.For, cst.While)):
            inner = stmt.body.body if hasattr(stmt.body, "body") else ()
            stack.extend(inner)
            if isinstance(stmt, cst.Try):
                for h in stmt.handlers:
                    stack.extend(h.body.body)

