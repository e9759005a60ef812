"""CKP405 sac-cache-mutation: in-place op under ``allow_cache_entry_mutation=True``.

What: a checkpoint call whose ``context_fn`` builds selective-checkpoint
contexts with ``allow_cache_entry_mutation=True`` —
``context_fn=lambda: create_selective_checkpoint_contexts(policy, allow_cache_entry_mutation=True)``,
``context_fn=functools.partial(create_selective_checkpoint_contexts, policy, allow_cache_entry_mutation=True)``,
or a function / name in the same file that returns or holds one — while
the checkpointed callable (or a helper it calls) runs an in-place tensor op
on a value it computed itself: ``h.add_(...)``, ``h.mul_(...)``,
``torch.sigmoid_(h)``, ``h += ...`` / ``h *= ...`` on a local assigned from a
call. Conservative: the rule does not try to tell which ops the policy
saves, so every in-place op on a computed value counts, except idempotent
ones (``relu_``, ``clamp_``, ``fill_``, ``zero_``: replaying them on the
cached, already-mutated tensor gives the same value; measured).

Why it breaks checkpointing: selective checkpointing caches the outputs of
the ops its policy marks ``MUST_SAVE`` / ``PREFER_SAVE`` and hands the
*cached tensor* back to the recompute in backward, by call index. An
in-place op on such an output during the forward changes the cached
entry; the recompute then reads the mutated value, and the gradients of
everything computed from it are wrong. Without the flag torch raises
("a cached tensor was mutated", measured on 2.13); with
``allow_cache_entry_mutation=True`` it stays silent and yields garbage
gradients.

How to fix: use the out-of-place op (``h = h.add(1)``, ``h = torch.relu(h)``),
or drop ``allow_cache_entry_mutation=True`` so that torch reports the
mutation, or make the policy recompute (``PREFER_RECOMPUTE``) the op whose
output is mutated.

Example::

    ctx = partial(create_selective_checkpoint_contexts, policy, allow_cache_entry_mutation=True)
    checkpoint(block, x, use_reentrant=False, context_fn=ctx)
    # block: h = torch.mm(x, w); h.add_(b)        -> CKP405 at h.add_(b)
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.analysis.flow import CallEvent, WriteEvent
from ckptlint.analysis.walk import walk
from ckptlint.project import ModuleInfo, dotted_name
from ckptlint.rules._common import first_positional, inplace_method, inplace_torch_function, written
from ckptlint.rules.base import Hit, RuleContext, kwarg, literal

CODE = "CKP405"
NAME = "sac-cache-mutation"
MESSAGE = (
    "in-place {op} on '{name}' {where}, whose context_fn passes allow_cache_entry_mutation=True ({how}): "
    "a selective-checkpoint policy may cache this value and hand the mutated tensor to the recompute in "
    "backward, so the gradients are silently wrong; use the out-of-place op ({fix}), or drop "
    "allow_cache_entry_mutation=True so torch reports the mutation"
)
EVENT = "call"
EVENTS = ("call", "write")
_SAC = "create_selective_checkpoint_contexts"
# Applying these twice gives the same value, so replaying one on the cached, already-mutated tensor is
# harmless (measured: ``h = mm(x, w); h.relu_()`` under MUST_SAVE mm keeps the plain run's gradients).
_IDEMPOTENT = frozenset({"relu_", "clamp_", "clamp_min_", "clamp_max_", "clip_", "hardtanh_", "relu6_", "fill_", "zero_"})


def check(event: CallEvent | WriteEvent, ctx: RuleContext) -> Iterator[Hit]:
    checked = ctx.checked
    if checked is None or ctx.visit is None or _SAC not in checked.site_module.source:
        return
    found = _op(event, ctx)
    if found is None:
        return
    node, op, name, fix = found
    how = _mutation_allowed(checked.site_node, checked.site_module)
    if how is None:
        return
    yield Hit(node, MESSAGE.format(op=op, name=name, where=ctx.inside, how=how, fix=fix))


def _op(event: CallEvent | WriteEvent, ctx: RuleContext) -> tuple[cst.CSTNode, str, str, str] | None:
    """The in-place op on a value the function computed: (node, op, target, fix)."""
    if isinstance(event, CallEvent):
        if event.method in _IDEMPOTENT:
            return None
        if event.method is not None and inplace_method(event.method) and not event.qualnames:
            root = event.receiver
            if root is None or root.kind != "local":
                return None
            assert isinstance(event.call.func, cst.Attribute)
            name = written(event.call.func.value)
            return event.call, f"{event.method}()", name, f"{name} = {name}.{event.method[:-1]}(...)"
        fn = inplace_torch_function(event.qualnames)
        first = first_positional(event)
        if fn is None or fn in _IDEMPOTENT or first is None or first[1].kind != "local":
            return None
        name = written(first[0])
        return event.call, f"{fn}()", name, f"{name} = {written(event.call.func)[:-1]}(...)"
    if event.kind != "aug" or event.aug is None or event.root.kind != "local" or not isinstance(event.target, cst.Name):
        return None
    name = event.target.value
    fn = ctx.visit.ref.node if ctx.visit.ref is not None else None
    if fn is None or not _assigned_from_call(fn, name):
        return None  # a Python counter (``i += 1``), not a tensor
    op = event.aug.operator.__class__.__name__
    sym = {"AddAssign": "+=", "SubtractAssign": "-=", "MultiplyAssign": "*=", "DivideAssign": "/="}.get(op)
    if sym is None:
        return None
    return event.aug, sym, name, f"{name} = {name} {sym[0]} ..."


def _assigned_from_call(fn: cst.CSTNode, name: str) -> bool:
    """``name = <call>`` somewhere in ``fn`` (a tensor computed by an op or a module)."""
    for node in walk(fn, into_defs=False):
        if isinstance(node, cst.Assign) and isinstance(node.value, cst.Call):
            if any(isinstance(t.target, cst.Name) and t.target.value == name for t in node.targets):
                return True
    return False


def _mutation_allowed(site: cst.CSTNode, mod: ModuleInfo) -> str | None:
    """How the site's ``context_fn`` turns on ``allow_cache_entry_mutation``, else ``None``."""
    if not isinstance(site, cst.Call):
        return None
    arg = kwarg(site, "context_fn")
    if arg is None:
        return None
    return _builds_mutable(arg.value, mod, depth=0)


def _builds_mutable(expr: cst.BaseExpression, mod: ModuleInfo, depth: int) -> str | None:
    if depth > 3:
        return None
    if isinstance(expr, cst.Lambda):
        return _builds_mutable(expr.body, mod, depth + 1)
    if isinstance(expr, cst.Call):
        callee = dotted_name(expr.func) or ""
        if callee.rsplit(".", 1)[-1] == _SAC:
            return "create_selective_checkpoint_contexts(...)" if _flag(expr) else None
        if callee.rsplit(".", 1)[-1] == "partial" and expr.args:
            inner = dotted_name(expr.args[0].value) or ""
            if inner.rsplit(".", 1)[-1] == _SAC and _flag(expr):
                return "functools.partial(create_selective_checkpoint_contexts, ...)"
            if inner:  # partial(make_ctx, ...): look at make_ctx
                return _builds_mutable(expr.args[0].value, mod, depth + 1)
        return None
    if isinstance(expr, cst.Name):
        for node in walk(mod.module):
            if isinstance(node, cst.FunctionDef) and node.name.value == expr.value:
                for ret in walk(node, into_defs=False):
                    if isinstance(ret, cst.Return) and ret.value is not None:
                        how = _builds_mutable(ret.value, mod, depth + 1)
                        if how is not None:
                            return f"{expr.value}() returns {how}"
            elif isinstance(node, cst.Assign) and any(
                isinstance(t.target, cst.Name) and t.target.value == expr.value for t in node.targets
            ):
                how = _builds_mutable(node.value, mod, depth + 1)
                if how is not None:
                    return f"'{expr.value}' is {how}"
    return None


def _flag(call: cst.Call) -> bool:
    arg = kwarg(call, "allow_cache_entry_mutation")
    return arg is not None and literal(arg.value) is True


VALID = [
    """
import functools
import torch
from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts, CheckpointPolicy

def policy(ctx, op, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if op == torch.ops.aten.mm.default else CheckpointPolicy.PREFER_RECOMPUTE

def block(x, w):
    h = torch.mm(x, w)
    h.relu_()
    return torch.relu(h)

def block_inplace(x, w):
    h = torch.mm(x, w)
    h.add_(1)
    return h

def run(x, w):
    ctx = functools.partial(create_selective_checkpoint_contexts, policy, allow_cache_entry_mutation=True)
    a = checkpoint(block, x, w, use_reentrant=False, context_fn=ctx)
    b = checkpoint(block_inplace, x, w, use_reentrant=False,
                   context_fn=functools.partial(create_selective_checkpoint_contexts, policy))
    return a + b
""",
]

INVALID = [
    """
import functools
import torch
from torch.utils.checkpoint import checkpoint, create_selective_checkpoint_contexts, CheckpointPolicy

def policy(ctx, op, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if op == torch.ops.aten.mm.default else CheckpointPolicy.PREFER_RECOMPUTE

def block(x, w):
    h = torch.mm(x, w)
    h.add_(1)  # expect: CKP405
    g = torch.mm(h, w)
    g += 1  # expect: CKP405
    return g

def make_ctx():
    return create_selective_checkpoint_contexts(policy, allow_cache_entry_mutation=True)

def run(x, w):
    return checkpoint(block, x, w, use_reentrant=False, context_fn=make_ctx)
""",
]
