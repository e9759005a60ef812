"""CKP102 augmented-assignment-on-input: ``x += y`` on a checkpoint input.

What: an augmented assignment (``+=``, ``*=``, ``-=``, ...) whose target is an
input of a checkpointed callable or an alias/view of one. For tensors this is
an in-place operation on the caller's tensor.

Why it breaks checkpointing: the recompute in backward starts from the input
the first forward already changed. With ``use_reentrant=True`` and an input
without grad this silently produces wrong gradients; otherwise backward fails
with a version-counter error.

How to fix: ``x = x + y`` (a new tensor), or rebind to a fresh value before
accumulating (``hidden = self.mlp(hidden); hidden += residual`` is fine).

Autofix (unsafe): ``x += y`` -> ``x = x + y``; not offered where rebinding
would change what the function itself computes (the mutated tensor is used
after the update through another name, in a later statement, a later loop
iteration or a nested function, e.g. ``h = x; h += 1; return x * 3``), nor
inside a helper, whose caller still holds the tensor.

Example::

    def forward(self, hidden, residual):
        hidden += residual          # CKP102
        hidden = hidden + residual  # fine
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.analysis.flow import WriteEvent
from ckptlint.rules._rebind import rebinding_keeps_meaning
from ckptlint.rules.base import EditSpec, Hit, RuleContext, describe, edits_fix

CODE = "CKP102"
NAME = "augmented-assignment-on-input"
MESSAGE = "augmented assignment '{op}' on {subject} {where}: it mutates the tensor the recompute in backward starts from; use {name} = {name} {bop} ..."
EVENT = "write"

_OPS: dict[type, tuple[str, cst.BaseBinaryOp]] = {
    cst.AddAssign: ("+", cst.Add()),
    cst.SubtractAssign: ("-", cst.Subtract()),
    cst.MultiplyAssign: ("*", cst.Multiply()),
    cst.DivideAssign: ("/", cst.Divide()),
    cst.FloorDivideAssign: ("//", cst.FloorDivide()),
    cst.ModuloAssign: ("%", cst.Modulo()),
    cst.PowerAssign: ("**", cst.Power()),
    cst.MatrixMultiplyAssign: ("@", cst.MatrixMultiply()),
    cst.BitAndAssign: ("&", cst.BitAnd()),
    cst.BitOrAssign: ("|", cst.BitOr()),
    cst.BitXorAssign: ("^", cst.BitXor()),
    cst.LeftShiftAssign: ("<<", cst.LeftShift()),
    cst.RightShiftAssign: (">>", cst.RightShift()),
}
_ATOMS = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float, cst.SimpleString)


def check(event: WriteEvent, ctx: RuleContext) -> Iterator[Hit]:
    if event.kind != "aug" or event.aug is None or event.root.kind != "input":
        return
    if not isinstance(event.target, cst.Name):
        return  # ``x[i] += v`` is CKP103, ``x.attr += v`` CKP201
    if isinstance(event.aug.value, cst.Tuple):
        return  # ``history += (h,)``: tuples are immutable, this rebinds
    aug = event.aug
    bop_text, _ = _OPS.get(type(aug.operator), ("?", cst.Add()))
    name = event.target.value
    message = MESSAGE.format(
        op=bop_text + "=", subject=describe(event.root, name), where=ctx.where, name=name, bop=bop_text
    )
    right = aug.value
    # Replace the operator token and parenthesise a compound right-hand side:
    # ``x *= a + b`` -> ``x = x * (a + b)``; the layout around stays as written.
    specs: list[EditSpec] = [("replace", aug.operator, f"= {name} {bop_text}")]
    if not isinstance(right, _ATOMS) or right.lpar:
        if not right.lpar:
            specs += [("before", right, "("), ("after", right, ")")]
    if not rebinding_keeps_meaning(aug, event.root, ctx.visit):
        # ``h = x; h += 1; return x * 3``: rebinding h would change the result.
        yield Hit(aug, message, None)
        return
    fix = edits_fix(
        specs, f"rebind '{name}' instead of updating it in place (unsafe: callers holding the tensor no longer see the update)", "unsafe"
    )
    yield Hit(aug, message, fix)


VALID = [
    """
from torch.utils.checkpoint import checkpoint

def block(hidden, residual, n: int, scale=2):
    hidden = hidden * 2
    hidden += residual
    n += 1
    scale += 1
    return hidden

def run(h, r):
    return checkpoint(block, h, r, 3, use_reentrant=False)
""",
]

INVALID = [
    """
from torch.utils.checkpoint import checkpoint

def block(hidden, residual):
    hidden += residual  # expect: CKP102
    h = hidden
    h *= 2  # expect: CKP102
    return h

def run(h, r):
    return checkpoint(block, h, r, use_reentrant=False)
""",
]
