"""CKP502 checkpoint-without-grad: a checkpoint call that only runs with gradients off.

What: ``checkpoint(...)`` (torch's, or ``checkpoint_sequential``) inside a
``with torch.no_grad():`` or ``with torch.inference_mode():`` block, or in a
function decorated ``@torch.no_grad()`` / ``@torch.inference_mode()``.

Why it only costs time: with gradients off autograd saves nothing for
backward, so there is nothing for checkpointing to free, and no backward
will ever recompute. The call still stashes the RNG state and, in the
non-reentrant variant, sets up its saved-tensor hooks on every forward (the
reentrant variant also warns that no input requires grad).

How to fix: call the function directly on this path — evaluation and
generation code rarely needs checkpointing; a model that checkpoints when
``self.training`` and ``torch.is_grad_enabled()`` skips it by itself.

Example::

    with torch.no_grad():
        out = checkpoint(self.block, x, use_reentrant=False)   # CKP502
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.discovery.sites import SiteCall
from ckptlint.rules._efficiency import GRAD_OFF, qualnames
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP502"
NAME = "checkpoint-without-grad"
MESSAGE = "{func}() runs only under {mode}: nothing is saved for backward there, so checkpointing frees nothing and only adds overhead; call the function directly on this path"
EVENT = "site"


def _grad_off(site: SiteCall, expr: cst.BaseExpression) -> str | None:
    target = expr.func if isinstance(expr, cst.Call) else expr
    quals = qualnames(site, target)
    if N.matches(quals, GRAD_OFF):
        return quals[0].rsplit(".", 1)[-1] + "()"
    return None


class _Finder(cst.CSTVisitor):
    """Is ``target`` lexically inside a grad-off ``with`` of this function (not a nested def)?"""

    def __init__(self, site: SiteCall) -> None:
        self.site = site
        self.stack: list[str | None] = []
        self.found: str | None = None
        self.depth = 0

    def visit_With(self, node: cst.With) -> None:
        modes = [m for m in (_grad_off(self.site, item.item) for item in node.items) if m]
        self.stack.append(modes[0] if modes else None)

    def leave_With(self, original_node: cst.With) -> None:
        self.stack.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self.depth += 1
        return self.depth == 1  # nested functions run when called, maybe elsewhere

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.depth -= 1

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False

    def visit_Call(self, node: cst.Call) -> None:
        if node is self.site.call and self.found is None:
            self.found = next((m for m in reversed(self.stack) if m), None)


def check(site: SiteCall, ctx: RuleContext) -> Iterator[Hit]:
    if not site.torch_api:
        return
    fn = site.ctx.fn
    if not isinstance(fn, cst.FunctionDef):
        return
    for deco in fn.decorators:
        mode = _grad_off(site, deco.decorator)
        if mode:
            yield Hit(site.call, MESSAGE.format(func=site.name, mode=f"@{mode}"))
            return
    finder = _Finder(site)
    fn.visit(finder)
    if finder.found:
        yield Hit(site.call, MESSAGE.format(func=site.name, mode=f"torch.{finder.found}"))


VALID = [
    """
import torch
from torch.utils.checkpoint import checkpoint

def block(x):
    return x * 2

def train_step(x):
    with torch.no_grad():
        scale = x.abs().max()
    return checkpoint(block, x / scale, use_reentrant=False)

def later(x):
    with torch.no_grad():
        def run(y):
            return checkpoint(block, y, use_reentrant=False)
    return run(x)
""",
]

INVALID = [
    """
import torch
from torch.utils.checkpoint import checkpoint, checkpoint_sequential

def block(x):
    return x * 2

def evaluate(x, seq):
    with torch.no_grad():
        y = checkpoint(block, x, use_reentrant=False)  # expect: CKP502
    with torch.inference_mode():
        return checkpoint_sequential(seq, 2, y, use_reentrant=False)  # expect: CKP502

@torch.no_grad()
def generate(x):
    return checkpoint(block, x, use_reentrant=False)  # expect: CKP502
""",
]
