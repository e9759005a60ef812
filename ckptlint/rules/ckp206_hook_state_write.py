"""CKP206 hook-state-write: a forward hook that writes state runs again on the recompute.

What: inside a checkpointed callable, a call of a submodule ``self.<attr>(...)``
on which the class registers a forward hook or pre-hook
(``self.<attr>.register_forward_hook(self._hook)`` /
``register_forward_pre_hook``) whose body writes state: ``+=`` on anything,
item assignment, ``self.x = ...``, ``.append``/``.extend``/``.add``/``.update``
on an outer object (MoE aux-loss trackers, activation statistics, call
counters). Hooks that only read (logging, assertions) are fine.

When a hook really runs twice (measured on torch 2.13/2.14): hooks of modules
*called inside* the checkpointed function run again on the recompute — with
``use_reentrant=True`` all of them; with the non-reentrant variant, early
stop ends the recompute at the last saved tensor, so a forward (post) hook
on the *last* submodule called does not rerun, while pre-hooks and hooks on
earlier submodules do. A wrapper that checkpoints ``forward`` rather than
``__call__`` (transformers 5.x ``GradientCheckpointingLayer``) keeps the
layer's *own* hooks outside the checkpoint; this rule only looks at
submodules called inside.

Why it breaks checkpointing: the hook's side effect happens once in the
forward and again in backward's recompute: an aux loss accumulated twice
(Megatron-LM#1330, #1478: "aux loss 2.2 vs 1.09"), statistics counted
twice, hook-driven state read by later code differs.

How to fix: make the hook idempotent (key what it stores by step/layer and
overwrite), skip it on the recompute (``torch.is_grad_enabled()`` is False
in the reentrant forward; compare a step counter), or register it on a
module outside the checkpointed region.

Example::

    self.router.register_forward_hook(self._track_aux_loss)   # in __init__
    def _track_aux_loss(self, module, inputs, output):
        self.aux_losses.append(output[1])                     # runs again on recompute
    def forward(self, x):
        return self.experts(self.router(x))                   # CKP206 at self.router(x)
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.analysis.flow import CallEvent
from ckptlint.analysis.walk import iter_children, walk
from ckptlint.project import ClassInfo, ModuleInfo
from ckptlint.rules._idempotent import code_of
from ckptlint.rules.base import Hit, RuleContext, literal

CODE = "CKP206"
NAME = "hook-state-write"
MESSAGE = (
    "{kind} '{hook}' on {module} writes state ({write}) and runs again when {where} is recomputed in "
    "backward{why}; make the hook idempotent or skip it on the recompute"
)
EVENT = "call"
_MUTATORS = frozenset({"append", "extend", "add", "add_", "update", "insert", "record", "log_aux_loss"})
_REGISTER = {"register_forward_hook": "forward hook", "register_forward_pre_hook": "forward pre-hook"}


def check(event: CallEvent, ctx: RuleContext) -> Iterator[Hit]:
    func = event.call.func
    visit = ctx.visit
    if visit is None or visit.ref is None or not isinstance(func, cst.Attribute) or not isinstance(func.value, cst.Name):
        return
    cls = visit.ref.cls
    if cls is None or func.value.value != _first_param(visit.ref.node):
        return
    if "register_forward" not in cls.module.source:
        return
    cache = ctx.project.cache.setdefault("ckp206_hooks", {}) if ctx.project is not None else {}
    key = (cls.qualname, func.attr.value)
    if key not in cache:
        cache[key] = _hooks_on(cls, func.attr.value)
    hooks = cache[key]
    if not hooks:
        return
    reentrant = _reentrant(ctx)
    last = _is_last_module_call(visit.ref.node, event.call) and len(visit.chain) <= 1
    for kind, hook, write in hooks:
        if kind == "forward hook" and last and not reentrant:
            continue  # non-reentrant early stop: the recompute ends before the last submodule's hook
        why = " (reentrant: every hook inside reruns)" if reentrant else ""
        yield Hit(event.call, MESSAGE.format(
            kind=kind, hook=hook, module=f"self.{func.attr.value}", write=write, where=ctx.where[3:], why=why,
        ))


def _first_param(node: cst.CSTNode) -> str | None:
    if isinstance(node, cst.FunctionDef) and node.params.params:
        return node.params.params[0].name.value
    return None


def _reentrant(ctx: RuleContext) -> bool:
    site = ctx.checked.site_node if ctx.checked is not None else None
    if not isinstance(site, cst.Call):
        return False
    for a in site.args:
        if a.keyword is not None and a.keyword.value == "use_reentrant":
            return literal(a.value) is True
    name = site.func.attr.value if isinstance(site.func, cst.Attribute) else site.func.value if isinstance(site.func, cst.Name) else ""
    return name in ("checkpoint", "checkpoint_sequential") and not any(a.star == "**" for a in site.args)


def _is_last_module_call(fn: cst.CSTNode, call: cst.Call) -> bool:
    """``call`` is the last ``self.<m>(...)`` call in ``fn`` (source order)."""
    self_name = _first_param(fn)
    calls = [n for n in _execution_order(fn) if isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute)
             and isinstance(n.func.value, cst.Name) and n.func.value.value == self_name]
    return bool(calls) and calls[-1] is call


def _execution_order(fn: cst.CSTNode) -> list[cst.CSTNode]:
    """Nodes in post-order (a call's arguments before the call), not entering nested defs."""
    out: list[cst.CSTNode] = []
    stack: list[tuple[cst.CSTNode, bool]] = [(fn, False)]
    while stack:
        node, done = stack.pop()
        if done:
            out.append(node)
            continue
        stack.append((node, True))
        if node is not fn and isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            continue
        stack.extend((child, False) for child in reversed(list(iter_children(node))))
    return out


def _hooks_on(cls: ClassInfo, attr: str) -> list[tuple[str, str, str]]:
    """(kind, hook name, what it writes) for state-writing hooks the class registers on ``self.<attr>``."""
    out: list[tuple[str, str, str]] = []
    for node in walk(cls.node):
        if not (isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in _REGISTER):
            continue
        owner = node.func.value
        if not (isinstance(owner, cst.Attribute) and owner.attr.value == attr and isinstance(owner.value, cst.Name)):
            continue
        if not node.args:
            continue
        body, name = _hook_body(cls, node.args[0].value)
        if body is None:
            continue
        write = _state_write(body)
        if write:
            out.append((_REGISTER[node.func.attr.value], name, write))
    return out


def _hook_body(cls: ClassInfo, expr: cst.BaseExpression) -> tuple[cst.FunctionDef | None, str]:
    if isinstance(expr, cst.Call) and expr.args and (getattr(expr.func, "value", None) == "partial" or getattr(getattr(expr.func, "attr", None), "value", None) == "partial"):
        expr = expr.args[0].value
    if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name):
        return cls.methods.get(expr.attr.value), expr.attr.value
    if isinstance(expr, cst.Name):
        found = _module_def(cls.module, expr.value)
        return found, expr.value
    return None, ""


def _module_def(mod: ModuleInfo, name: str) -> cst.FunctionDef | None:
    try:
        node = mod.defs[name] if name in mod.defs else None
    except KeyError:
        return None
    return node if isinstance(node, cst.FunctionDef) else None


def _state_write(fn: cst.FunctionDef) -> str:
    """A short description of the first state write in a hook body ('' when it only reads)."""
    params = {p.name.value for p in fn.params.params}
    for node in walk(fn.body):
        if isinstance(node, cst.AugAssign):
            return code_of(node.target) + " " + code_of(node.operator).strip()
        if isinstance(node, cst.Assign):
            for t in node.targets:
                if isinstance(t.target, (cst.Attribute, cst.Subscript)):
                    return code_of(t.target) + " = ..."
        if isinstance(node, (cst.Global, cst.Nonlocal)):
            return "global " + ", ".join(n.name.value for n in node.names)
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in _MUTATORS:
            base = node.func.value
            root = base
            while isinstance(root, (cst.Attribute, cst.Subscript)):
                root = root.value
            # A write on the hook's own output/input tensors (``output.add_``) is CKP1xx territory.
            if isinstance(root, cst.Name) and root.value in params and root.value != _first_param(fn):
                continue
            return f"{code_of(base)}.{node.func.attr.value}(...)"
    return ""



VALID = [
    """
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.router = nn.Linear(4, 4)
        self.experts = nn.Linear(4, 4)
        self.aux = []
        self.router.register_forward_hook(self._log)
        self.experts.register_forward_hook(self._track)

    def _log(self, module, inputs, output):
        print(output.shape)

    def _track(self, module, inputs, output):
        self.aux.append(output.mean())

    def forward(self, x):
        return self.experts(self.router(x))

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
""",
]

INVALID = [
    """
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.router = nn.Linear(4, 4)
        self.experts = nn.Linear(4, 4)
        self.aux = []
        self.calls = 0
        self.router.register_forward_hook(self._track)
        self.experts.register_forward_pre_hook(self._count)

    def _track(self, module, inputs, output):
        self.aux.append(output.mean())

    def _count(self, module, inputs):
        self.calls += 1

    def forward(self, x):
        h = self.router(x)  # expect: CKP206
        return self.experts(h)  # expect: CKP206

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()

    def forward(self, x):
        return checkpoint(self.block, x, use_reentrant=False)
""",
]
