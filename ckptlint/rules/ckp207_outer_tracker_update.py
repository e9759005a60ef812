"""CKP207 outer-tracker-update: checkpointed code calls a method that updates a module-level tracker.

What: a call ``tracker.add(loss)`` / ``meter.update(v)`` inside a checkpointed
callable (or a helper it calls) where ``tracker`` is a module-level (or
closure-captured) object whose class, defined in the checked tree, writes
its own state in that method (``self.values.append(v)``, ``self.total += v``,
``self.store[k] = v``). Megatron's MoE aux-loss tracker and metric meters
are the common shape. Plain containers (``LOG.append``) are CKP203.

Why it breaks checkpointing: the recompute in backward runs the call again,
so the tracker records every value twice (Megatron-LM#1330, #1478: the
logged aux loss doubles with activation recompute) and anything computed
from it (averages, counts, auxiliary losses added to the objective) is off.

How to fix: record the value outside the checkpointed region (return it and
add it in the caller), or make the tracker idempotent (key entries by layer
and step, overwrite instead of append).

Example::

    aux_loss_tracker = AuxLossTracker()           # module level; add() appends
    def forward(self, x):                         # checkpointed
        aux_loss_tracker.add(self.router(x).mean())   # CKP207
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.analysis.flow import CallEvent
from ckptlint.analysis.walk import walk
from ckptlint.project import ClassInfo, ModuleInfo
from ckptlint.rules._idempotent import code_of, idempotent_update
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP207"
NAME = "outer-tracker-update"
MESSAGE = (
    "{call}() on {scope} '{name}' {where} writes the tracker's state ({write} in {cls}.{method}): the "
    "recompute in backward records it again; record the value outside the checkpointed region or key it by step"
)
EVENT = "call"
_OUTER = ("outer", "global", "closure", "module")


def check(event: CallEvent, ctx: RuleContext) -> Iterator[Hit]:
    r = event.receiver
    if r is None or r.kind not in _OUTER or r.through_attribute or event.method is None or ctx.visit is None:
        return
    func = event.call.func
    if not isinstance(func, cst.Attribute) or not isinstance(func.value, cst.Name) or ctx.project is None:
        return
    cls = _class_of(ctx.project, ctx.visit.module, func.value.value)
    if cls is None:
        return
    method = cls.methods.get(event.method)
    if method is None:
        return
    write = _self_write(method)
    if write:
        scope = "closure variable" if r.kind == "closure" else "module-level"
        yield Hit(event.call, MESSAGE.format(
            call=f"{func.value.value}.{event.method}", scope=scope, name=func.value.value, where=ctx.inside,
            write=write, cls=cls.short, method=event.method,
        ))


def _class_of(project, mod: ModuleInfo, name: str) -> ClassInfo | None:  # project: Project
    """The in-tree class of a module-level ``name = SomeClass(...)`` (one assignment)."""
    values = mod.assigns.get(name, []) if name in mod.assigns else []
    if len(values) != 1 or not isinstance(values[0], cst.Call):
        return None
    for q in project.resolve_expr(mod, values[0].func):
        found = project.lookup(q, mod)
        if isinstance(found, ClassInfo):
            return found
    return None


def _self_write(fn: cst.FunctionDef) -> str:
    """The first write to ``self`` state in a method ('' when it only reads)."""
    params = fn.params.params
    if not params:
        return ""
    me = params[0].name.value

    def on_self(node: cst.BaseExpression) -> bool:
        while isinstance(node, (cst.Attribute, cst.Subscript)):
            node = node.value
        return isinstance(node, cst.Name) and node.value == me

    for node in walk(fn.body):
        if isinstance(node, cst.AugAssign) and on_self(node.target):
            return f"{code_of(node.target)} {code_of(node.operator).strip()}"
        if isinstance(node, cst.Assign):
            for t in node.targets:
                if isinstance(t.target, (cst.Attribute, cst.Subscript)) and on_self(t.target):
                    return f"{code_of(t.target)} = ..."
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and on_self(node.func.value):
            if isinstance(node.func.value, cst.Attribute) and node.func.attr.value in ("append", "extend", "insert", "update", "add", "setdefault", "add_", "copy_"):
                if node.func.attr.value == "update" and idempotent_update(node):
                    continue
                return f"{code_of(node.func.value)}.{node.func.attr.value}(...)"
    return ""



VALID = [
    """
from torch import nn
from torch.utils.checkpoint import checkpoint

class Reader:
    def __init__(self):
        self.scale = 2.0
    def get(self, x):
        return x * self.scale

reader = Reader()

class Block(nn.Module):
    def forward(self, x):
        return reader.get(x)

def run(block, x):
    return checkpoint(block, x, use_reentrant=False)
""",
]

INVALID = [
    """
from torch import nn
from torch.utils.checkpoint import checkpoint

class AuxLossTracker:
    def __init__(self):
        self.values = []
        self.total = 0.0
    def add(self, v):
        self.values.append(v)
    def accumulate(self, v):
        self.total += v

aux_loss_tracker = AuxLossTracker()

class Router(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(4, 4)

    def forward(self, x):
        g = self.gate(x)
        aux_loss_tracker.add(g.mean())  # expect: CKP207
        aux_loss_tracker.accumulate(g.sum())  # expect: CKP207
        return g

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.router = Router()

    def forward(self, x):
        return checkpoint(self.router, x, use_reentrant=False)
""",
]
