"""What a call is: whether it checkpoints something, and how (``checkpoint``, ``checkpoint_sequential``,
timm's ``checkpoint_seq``, ``self._gradient_checkpointing_func``, a tree's own wrapper, a megatron or
custom ``autograd.Function`` checkpoint, policies and wrappers that switch it on).

A mixin of :class:`ckptlint.discovery.sites.Discovery` (``project``, ``evaluator``, ``resolver``,
``extra`` and the wrapper memos come from it).
"""

from __future__ import annotations

from typing import Any

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.discovery.custom_functions import custom_checkpoint
from ckptlint.discovery.patches import CheckpointPatch, find_patches
from ckptlint.discovery.records import Spec, calls_in, fn_arg
from ckptlint.infer.resolver import CallableRef, Ctx, first_param
from ckptlint.project import ClassInfo, ModuleInfo, dotted_name

__all__ = ["CallKinds"]


class CallKinds:
    """Classifies calls as checkpoint sites (mixin of ``Discovery``)."""

    project: Any
    evaluator: Any
    resolver: Any
    extra: frozenset[str]
    _wrappers: dict[int, int | None]
    _wrapper_names: dict[str, frozenset[str]]
    _wrapper_stack: set[int]

    # -- what a call is -------------------------------------------------------------

    def spec(self, call: cst.Call, ctx: Ctx) -> Spec | None:
        """Non-None when ``call`` checkpoints something."""
        func = call.func
        written = dotted_name(func) or ""
        if isinstance(func, cst.Attribute) and func.attr.value == N.GC_FUNC_ATTR:
            return Spec("gc_func", False, 0, written)
        if not isinstance(func, (cst.Name, cst.Attribute)):
            return None
        if ctx.cls is not None and isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value == ctx.self_name:
            if self._is_checkpoint_attr(ctx.cls, func.attr.value):
                return Spec("gc_func", False, 0, written)
        quals = self.resolver.qualnames(func, ctx)
        if isinstance(func, cst.Attribute) and func.attr.value == "apply":  # issue 9: checkpoint autograd.Functions
            custom = custom_checkpoint(self.project, quals)
            if custom is not None:
                return Spec("checkpoint", False, 0, written, custom.bound())
        if N.matches(quals, N.TORCH_CHECKPOINT_NAMES - N.CHECKPOINT_SEQUENTIAL):
            patch = self.patch(ctx.module) if isinstance(func, cst.Attribute) and func.attr.value == "checkpoint" else None
            if patch is not None:  # looked up on the module after ``torch.utils.checkpoint.checkpoint = ...``
                self.project.depends_on([patch.path])
                return Spec("checkpoint", patch.torch_api, 0, written, patch.bound if patch.torch_api else None)
            return Spec("checkpoint", True, 0, written)
        if N.matches(quals, N.MEGATRON_CHECKPOINT):
            return Spec("checkpoint", False, 0, written, skip=1)
        if isinstance(func, cst.Attribute) and func.attr.value == "checkpoint" and self._without_output(func.value, ctx):
            return Spec("checkpoint", False, 0, written)
        if N.matches(quals, N.CHECKPOINT_FUNCTIONS) or N.matches(quals, self.extra):
            return Spec("checkpoint", False, 0, written)
        if N.matches(quals, N.CHECKPOINT_SEQUENTIAL):
            return Spec("sequential", True, 0, written)
        if N.matches(quals, N.CHECKPOINT_SEQ) or any(q.endswith("._manipulate.checkpoint_seq") for q in quals):
            return Spec("seq", False, 0, written)
        if N.matches(quals, N.CHECKPOINT_WRAPPER):
            return Spec("wrapper", False, 0, written)
        if N.matches(quals, N.CHECKPOINT_BY_PATH):
            return Spec("paths", False, 0, written)
        if N.matches(quals, N.APPLY_ACTIVATION_CHECKPOINTING) or N.matches(quals, N.CHECKPOINT_POLICIES):
            return Spec("apply", False, 0, written)
        if N.matches(quals, N.PARTIAL) and call.args:
            inner = call.args[0].value
            if isinstance(inner, (cst.Name, cst.Attribute)):
                iq = self.resolver.qualnames(inner, ctx)
                if N.matches(iq, N.TORCH_CHECKPOINT_NAMES):
                    return Spec("partial", True, 0, dotted_name(inner) or "checkpoint")
            return None
        if isinstance(func, cst.Name) and func.value in ctx.module.assigns and ctx.env is not None and func.value not in ctx.env.values:
            for value in ctx.module.assigns[func.value]:
                if isinstance(value, cst.Call) and N.matches(self.resolver.qualnames(value.func, ctx), N.PARTIAL) and value.args:
                    iq = self.resolver.qualnames(value.args[0].value, ctx) if isinstance(value.args[0].value, (cst.Name, cst.Attribute)) else []
                    if N.matches(iq, N.CHECKPOINT_FUNCTIONS | N.TORCH_CHECKPOINT_NAMES) or N.matches(iq, self.extra):
                        bound = {a.keyword.value: a.value for a in value.args[1:] if a.keyword is not None}
                        return Spec("checkpoint", False, 0, written, bound)
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
                return Spec("checkpoint", False, 0, written)
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

    def _wrapper_spec(self, func: cst.BaseExpression, ctx: Ctx, written: str) -> Spec | None:
        try:
            refs = self.resolver.resolve(func, ctx, depth=3)
        except RecursionError:
            return None
        for ref in refs:
            if isinstance(ref.node, cst.FunctionDef):
                idx = self.wrapper_index(ref)
                if idx is not None:
                    return Spec("checkpoint", False, idx, written)
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
            for call in calls_in(node):
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
                first = fn_arg(call, 0)
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

    def is_checkpoint_call(self, call: cst.Call, ctx: Ctx) -> bool:
        try:
            return self.spec(call, ctx) is not None
        except RecursionError:
            return False

