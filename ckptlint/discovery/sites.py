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
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.analysis.params import gc_layer_nulled, input_params
from ckptlint.analysis.walk import iter_children, walk
from ckptlint.infer import Evaluator, Instance, literal_truth
from ckptlint.infer.resolver import CallableRef, Ctx, Resolver, first_param
from ckptlint.discovery.custom_functions import custom_checkpoint
from ckptlint.discovery.module_paths import instances_at_paths, path_strings
from ckptlint.discovery.patches import CheckpointPatch, find_patches
from ckptlint.project import ClassInfo, ModuleInfo, Project, dotted_name

__all__ = ["CheckedCallable", "Discovery", "SiteCall"]


@dataclass(eq=False)
class SiteCall:
    """A call that checkpoints something."""

    call: cst.Call
    module: ModuleInfo
    kind: str  # checkpoint | sequential | seq | gc_func | wrapper | apply | paths | partial
    torch_api: bool  # torch's own checkpoint/checkpoint_sequential: CKP4xx apply
    name: str  # the callee as written, for messages
    ctx: Ctx
    # Keyword arguments bound by ``self.<attr> = partial(checkpoint, ...)``.
    bound_kwargs: dict[str, cst.BaseExpression] = field(default_factory=dict)

    def option(self, name: str) -> cst.BaseExpression | None:
        """A checkpoint option passed at the call or bound in its partial."""
        value = _kwarg(self.call, name)
        return value if value is not None else self.bound_kwargs.get(name)


@dataclass(eq=False)
class CheckedCallable:
    """A function body that runs under checkpoint, with its input parameters.

    ``member`` instead names a library module (``nn.BatchNorm2d(8)``) placed
    directly in a checkpointed container: there is no body to walk, only the
    module call itself.
    """

    ref: CallableRef | None
    inputs: frozenset[str]
    site_module: ModuleInfo
    site_node: cst.CSTNode
    preserve_rng_state: bool = True
    via: str = "checkpoint"
    site_scope: str = ""  # short name of the function holding the site ("Model.forward")

    member: Instance | None = None
    label: str = ""  # for members: the checkpointed expression as written (``self.stem``)
    member_input: str = "input"  # for members: the checkpoint's input as written
    # For members: the site checkpoints this one module and nothing else (not
    # one member of a Sequential, not beside an in-tree block).
    member_alone: bool = False

    @property
    def name(self) -> str:
        if self.ref is not None:
            return self.ref.name
        return self.label or (self.member.short_name if self.member is not None else "?")


@dataclass
class _Spec:
    kind: str
    torch_api: bool
    fn_index: int = 0  # position of the checkpointed callable among the arguments
    name: str = "checkpoint"
    bound: dict[str, cst.BaseExpression] | None = None  # keywords bound by a partial(checkpoint, ...)
    skip: int = 0  # positional arguments between the callable and its inputs (megatron's flag)


_SITE_TRIGGER = re.compile(
    r"checkpoint|_gradient_checkpointing_func|apply_activation_checkpointing"
)


class Discovery:
    """Finds sites and checked callables; shared by every file of one run."""

    def __init__(self, project: Project, checkpoint_functions: Sequence[str] = ()) -> None:
        self.project = project
        self.evaluator = Evaluator(project)
        self.resolver = Resolver(project, self.evaluator)
        self.extra = frozenset(checkpoint_functions)
        self._wrappers: dict[int, int | None] = {}
        self._wrapper_names: dict[str, frozenset[str]] = {}
        self._wrapper_stack: set[int] = set()

    # -- what a call is -------------------------------------------------------------

    def spec(self, call: cst.Call, ctx: Ctx) -> _Spec | None:
        """Non-None when ``call`` checkpoints something."""
        func = call.func
        written = dotted_name(func) or ""
        if isinstance(func, cst.Attribute) and func.attr.value == N.GC_FUNC_ATTR:
            return _Spec("gc_func", False, 0, written)
        if not isinstance(func, (cst.Name, cst.Attribute)):
            return None
        if ctx.cls is not None and isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value == ctx.self_name:
            if self._is_checkpoint_attr(ctx.cls, func.attr.value):
                return _Spec("gc_func", False, 0, written)
        quals = self.resolver.qualnames(func, ctx)
        if isinstance(func, cst.Attribute) and func.attr.value == "apply":  # issue 9: checkpoint autograd.Functions
            custom = custom_checkpoint(self.project, quals)
            if custom is not None:
                return _Spec("checkpoint", False, 0, written, custom.bound())
        if N.matches(quals, N.TORCH_CHECKPOINT_NAMES - N.CHECKPOINT_SEQUENTIAL):
            patch = self.patch(ctx.module) if isinstance(func, cst.Attribute) and func.attr.value == "checkpoint" else None
            if patch is not None:  # looked up on the module after ``torch.utils.checkpoint.checkpoint = ...``
                self.project.depends_on([patch.path])
                return _Spec("checkpoint", patch.torch_api, 0, written, patch.bound if patch.torch_api else None)
            return _Spec("checkpoint", True, 0, written)
        if N.matches(quals, N.MEGATRON_CHECKPOINT):
            return _Spec("checkpoint", False, 0, written, skip=1)
        if isinstance(func, cst.Attribute) and func.attr.value == "checkpoint" and self._without_output(func.value, ctx):
            return _Spec("checkpoint", False, 0, written)
        if N.matches(quals, N.CHECKPOINT_FUNCTIONS) or N.matches(quals, self.extra):
            return _Spec("checkpoint", False, 0, written)
        if N.matches(quals, N.CHECKPOINT_SEQUENTIAL):
            return _Spec("sequential", True, 0, written)
        if N.matches(quals, N.CHECKPOINT_SEQ) or any(q.endswith("._manipulate.checkpoint_seq") for q in quals):
            return _Spec("seq", False, 0, written)
        if N.matches(quals, N.CHECKPOINT_WRAPPER):
            return _Spec("wrapper", False, 0, written)
        if N.matches(quals, N.CHECKPOINT_BY_PATH):
            return _Spec("paths", False, 0, written)
        if N.matches(quals, N.APPLY_ACTIVATION_CHECKPOINTING) or N.matches(quals, N.CHECKPOINT_POLICIES):
            return _Spec("apply", False, 0, written)
        if N.matches(quals, N.PARTIAL) and call.args:
            inner = call.args[0].value
            if isinstance(inner, (cst.Name, cst.Attribute)):
                iq = self.resolver.qualnames(inner, ctx)
                if N.matches(iq, N.TORCH_CHECKPOINT_NAMES):
                    return _Spec("partial", True, 0, dotted_name(inner) or "checkpoint")
            return None
        if isinstance(func, cst.Name) and func.value in ctx.module.assigns and ctx.env is not None and func.value not in ctx.env.values:
            for value in ctx.module.assigns[func.value]:
                if isinstance(value, cst.Call) and N.matches(self.resolver.qualnames(value.func, ctx), N.PARTIAL) and value.args:
                    iq = self.resolver.qualnames(value.args[0].value, ctx) if isinstance(value.args[0].value, (cst.Name, cst.Attribute)) else []
                    if N.matches(iq, N.CHECKPOINT_FUNCTIONS | N.TORCH_CHECKPOINT_NAMES) or N.matches(iq, self.extra):
                        bound = {a.keyword.value: a.value for a in value.args[1:] if a.keyword is not None}
                        return _Spec("checkpoint", False, 0, written, bound)
        if isinstance(func, cst.Name) and ctx.env is not None and func.value in ctx.env.inner_defs:
            spec = self._wrapper_spec(func, ctx, written)
            if spec is not None:
                return spec
        # A function of the checked tree that wraps checkpoint (found by name
        # first: resolving every call of a file would be far too slow).
        candidates = set(quals)
        if ctx.cls is not None and isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value == ctx.self_name:
            candidates.update(f"{c.qualname}.{func.attr.value}" for c in (ctx.cls, *self.project.base_classes(ctx.cls)))
        wrappers = self.wrapper_names(ctx.module) | self.extra
        if candidates & wrappers:
            spec = self._wrapper_spec(func, ctx, written)
            if spec is not None:
                return spec
            if candidates & self.extra:
                return _Spec("checkpoint", False, 0, written)
        return None

    def patch(self, mod: ModuleInfo) -> CheckpointPatch | None:
        """The monkeypatch of torch's checkpoint that reaches ``mod``'s calls (the tree is searched once per run)."""
        memo = self.project.cache.setdefault("checkpoint_patches", {})  # once per run, not per file
        if "all" not in memo:
            memo["all"] = find_patches(self.project)
        patches: list[CheckpointPatch] = memo["all"]  # type: ignore[assignment]
        return next((p for p in patches if mod.path in p.scope), None)

    def _without_output(self, receiver: cst.BaseExpression, ctx: Ctx) -> bool:
        """``receiver`` holds a megatron ``CheckpointWithoutOutput()``: built in ``__init__`` or in a local
        (what the resolver sees), or stored on ``self`` in this very function (Megatron's layers do)."""
        values: list[cst.BaseExpression] = []
        if isinstance(receiver, cst.Attribute) and isinstance(receiver.value, cst.Name) and ctx.env is not None:
            if receiver.value.value == ctx.self_name:
                values.extend(ctx.env.self_attrs.get(receiver.attr.value, ()))
        for value in values:
            if isinstance(value, cst.Call) and isinstance(value.func, (cst.Name, cst.Attribute)):
                if N.matches(self.resolver.qualnames(value.func, ctx), N.CHECKPOINT_WITHOUT_OUTPUT):
                    return True
        return any(N.matches(i.qualnames, N.CHECKPOINT_WITHOUT_OUTPUT) for i in self.resolver.instances(receiver, ctx))

    def wrapper_names(self, mod: ModuleInfo) -> frozenset[str]:
        """Qualified names of checkpoint wrappers defined in ``mod``."""
        cached = self._wrapper_names.get(mod.path)
        if cached is None:
            from ckptlint.discovery.wrappers import find_wrappers

            # Recorded as read so a cache keyed on dependencies stays correct.
            self.project.module(mod.path)
            cached = frozenset(find_wrappers(self.project, [mod.path], None))
            self._wrapper_names[mod.path] = cached
        return cached

    def _wrapper_spec(self, func: cst.BaseExpression, ctx: Ctx, written: str) -> _Spec | None:
        try:
            refs = self.resolver.resolve(func, ctx, depth=3)
        except RecursionError:
            return None
        for ref in refs:
            if isinstance(ref.node, cst.FunctionDef):
                idx = self.wrapper_index(ref)
                if idx is not None:
                    return _Spec("checkpoint", False, idx, written)
        return None

    def wrapper_index(self, ref: CallableRef) -> int | None:
        """Argument position of the callable if ``ref`` wraps checkpoint, else None."""
        node = ref.node
        key = id(node)
        if key in self._wrappers:
            return self._wrappers[key]
        if key in self._wrapper_stack or not isinstance(node, cst.FunctionDef):
            return None
        self._wrapper_stack.add(key)
        result: int | None = None
        try:
            params = [p.name.value for p in (*node.params.posonly_params, *node.params.params)]
            if ref.bound:
                params = params[1:]
            self_name = first_param(node) if ref.bound else None
            env = self.evaluator.env_of(node, self_name)
            ctx = Ctx(ref.module, ref.cls, node, env, self_name, ref.name)
            for call in _calls_in(node):
                func = call.func
                if not isinstance(func, (cst.Name, cst.Attribute)):
                    continue
                quals = self.resolver.qualnames(func, ctx)
                if not (
                    N.matches(quals, N.TORCH_CHECKPOINT_NAMES - N.CHECKPOINT_SEQUENTIAL)
                    or N.matches(quals, N.CHECKPOINT_FUNCTIONS)
                    or N.matches(quals, self.extra)
                ):
                    continue
                first = _fn_arg(call, 0)
                if isinstance(first, cst.Attribute) and first.attr.value in ("__call__", "forward"):
                    first = first.value
                if isinstance(first, cst.Name) and first.value in params:
                    result = params.index(first.value)
                    break
        finally:
            self._wrapper_stack.discard(key)
        self._wrappers[key] = result
        return result

    def _is_checkpoint_attr(self, cls: ClassInfo, attr: str) -> bool:
        """``self.<attr>`` holds checkpoint or ``partial(checkpoint, ...)``."""
        return self._checkpoint_attr(cls, attr) is not None

    def _checkpoint_attr(self, cls: ClassInfo, attr: str) -> dict[str, cst.BaseExpression] | None:
        """The keywords bound in ``self.<attr> = partial(checkpoint, ...)`` (None: not checkpoint)."""
        for c in (cls, *self.project.base_classes(cls)):
            init = c.methods.get("__init__")
            candidates: list[tuple[cst.BaseExpression, cst.FunctionDef | None]] = []
            if init is not None:
                env = self.evaluator.env_of(init, first_param(init))
                candidates.extend((v, init) for v in env.self_attrs.get(attr, ()))
            if attr in c.class_attrs:
                candidates.append((c.class_attrs[attr], None))
            for value, _ in candidates:
                ctx = Ctx(c.module)
                target = value
                bound: dict[str, cst.BaseExpression] = {}
                if isinstance(value, cst.Call) and N.matches(self.resolver.qualnames(value.func, ctx), N.PARTIAL) and value.args:
                    target = value.args[0].value
                    bound = {a.keyword.value: a.value for a in value.args[1:] if a.keyword is not None}
                if isinstance(target, (cst.Name, cst.Attribute)):
                    q = self.resolver.qualnames(target, ctx)
                    if N.matches(q, N.CHECKPOINT_FUNCTIONS | N.TORCH_CHECKPOINT_NAMES) or N.matches(q, self.extra):
                        return bound
        return None

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
                    if isinstance(call.func, cst.Call) and _fn_arg(call.func, 0) is None:
                        # Curried torch >= 2.14 form: checkpoint(use_reentrant=False)(fn).
                        inner = self.spec(call.func, ctx)
                        fn = _fn_arg(call, 0)
                        if inner is not None and inner.kind == "checkpoint" and fn is not None:
                            site = SiteCall(call.func, mod, inner.kind, inner.torch_api, inner.name, ctx)
                            preserve = literal_truth(_kwarg(call.func, "preserve_rng_state")) is not False
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
                    if spec.kind == "checkpoint" and _fn_arg(call, 0) is None:
                        sites.append(site)
                        is_method = ctx.cls is not None and ctx.fn is None
                        name = f"{ctx.cls.short}.{decorated.name.value}" if is_method and ctx.cls else decorated.name.value
                        ref = CallableRef(decorated, mod, ctx.cls, name, bound=is_method, outer=ctx if ctx.fn else None)
                        preserve = literal_truth(_kwarg(call, "preserve_rng_state")) is not False
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
                    target = _fn_arg(call, spec.fn_index)
                    label = (dotted_name(target) if target is not None else None) or inst.short_name
                    data = _fn_arg(call, spec.fn_index + (2 if spec.kind == "sequential" else 1))
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

    def _callables(self, site: SiteCall, spec: _Spec) -> list[CheckedCallable]:
        call, ctx, mod = site.call, site.ctx, site.module
        preserve = literal_truth(site.option("preserve_rng_state"))
        preserve_rng = preserve is not False
        out: list[CheckedCallable] = []
        try:
            if spec.kind in ("checkpoint", "gc_func"):
                fn = _fn_arg(call, spec.fn_index)
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
                paths = path_strings(_fn_arg(call, 1) or _kwarg(call, "modules"))
                for inst in instances_at_paths(self.project, self.evaluator, paths, mod):
                    for ref in self.resolver.forward_refs(inst):
                        out.append(CheckedCallable(ref, input_params(ref), mod, call, True, spec.name, ctx.qualname))
            elif spec.kind == "apply":
                check_fn = _kwarg(call, "check_fn")
                classes = self._isinstance_classes(check_fn, ctx) if check_fn is not None else []
                policy = next((v for k in N.POLICY_KEYWORDS if (v := _kwarg(call, k)) is not None), None)
                if policy is None and "set_activation_checkpointing" in spec.name:
                    policy = _fn_arg(call, 1)
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
        functions = _fn_arg(call, 0)
        segments = _kwarg(call, "segments")
        if segments is None:
            segments = _fn_arg(call, 1)
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
        functions = _fn_arg(call, 0)
        if functions is None:
            return
        items, ordered = self._sequence(functions, site.ctx)
        every_expr = _kwarg(call, "every") or _fn_arg(call, 2)
        every = int(every_expr.value, 0) if isinstance(every_expr, cst.Integer) else 1
        skip_last = literal_truth(_kwarg(call, "skip_last")) is True
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
            for call in _calls_in(body):
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
            inner = _fn_arg(policy, 0) or _kwarg(policy, "module_classes")
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

    def is_checkpoint_call(self, call: cst.Call, ctx: Ctx) -> bool:
        try:
            return self.spec(call, ctx) is not None
        except RecursionError:
            return False


def _kwarg(call: cst.Call, name: str) -> cst.BaseExpression | None:
    for a in call.args:
        if a.keyword is not None and a.keyword.value == name:
            return a.value
    return None


def _fn_arg(call: cst.Call, index: int) -> cst.BaseExpression | None:
    i = 0
    for a in call.args:
        if a.star:
            return None
        if a.keyword is None:
            if i == index:
                return a.value
            i += 1
    if index == 0:
        return _kwarg(call, "function") or _kwarg(call, "functions")
    return None


def _calls_in(node: cst.CSTNode) -> Iterator[cst.Call]:
    for n in walk(node, into_defs=False):
        if isinstance(n, cst.Call):
            yield n


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
