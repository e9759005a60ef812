"""CKP503 checkpointed-output-region: the region whose output is at once the model's output or loss.

What: torch's ``checkpoint(...)`` whose value goes straight into the
``return`` of

- a functional loss in the same expression, in any function:
  ``return F.cross_entropy(checkpoint(self.head, h, use_reentrant=False), y)``
  (also as an element of a returned tuple);
- the ``forward`` of the file's root model: ``return checkpoint(self.head, x,
  use_reentrant=False)`` (or ``return checkpoint(...), aux``) in a class the
  same file builds outside any class (``model = Net()``,
  ``DDP(Net())``; not from a function a class calls) and never inside another
  class nor subclasses.

Why it only costs time: the last region's activations are needed as soon as
backward starts, so checkpointing it frees them only for the instant between
the end of forward and the start of backward. The peak (the other regions'
kept inputs plus this region's activations, rebuilt by the recompute) is the
same, and backward pays one more forward of the region. torch's own
``checkpoint_sequential`` never checkpoints its last segment for this reason.

Why these two shapes only (on by default because each is certain): a
``forward`` that returns a checkpoint call is usually a block or a wrapper
(``CheckpointWrapper.forward`` is exactly ``return checkpoint(self.module,
...)``) whose caller goes on computing; only a loss, or a class the file
itself uses as the root model, shows that nothing follows. Not flagged: a
``return`` through a local variable, a loss built by a module
(``self.loss_fn(...)``), a root model built in another file, and the last
iteration of a checkpointed loop over blocks (the earlier blocks do save
memory).

How to fix: call the last region directly and checkpoint only the blocks
before it.

Example::

    for blk in self.blocks:
        x = checkpoint(blk, x, use_reentrant=False)          # fine
    return F.cross_entropy(checkpoint(self.head, x, use_reentrant=False), y)   # CKP503
"""

from __future__ import annotations

from typing import Iterator

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.discovery.sites import SiteCall
from ckptlint.project import ModuleInfo
from ckptlint.rules._efficiency import LOSS_FUNCTIONS, body_nodes, qualnames
from ckptlint.rules.base import Hit, RuleContext

CODE = "CKP503"
NAME = "checkpointed-output-region"
MESSAGE = "{func}() around the region whose output is {what}: its activations are needed as soon as backward starts, so checkpointing frees nothing at the peak and only adds a recompute; call it directly and checkpoint the blocks before it"
EVENT = "site"


def _returned(value: cst.BaseExpression | None) -> list[cst.BaseExpression]:
    """The expressions a ``return`` hands back: the value, or the elements of a returned tuple."""
    if value is None:
        return []
    if isinstance(value, cst.Tuple):
        return [el.value for el in value.elements if isinstance(el, cst.Element)]
    return [value]


def _is_loss_of(site: SiteCall, expr: cst.BaseExpression) -> bool:
    if not isinstance(expr, cst.Call) or not N.matches(qualnames(site, expr.func), LOSS_FUNCTIONS):
        return False
    return any(arg.value is site.call for arg in expr.args[:2] if arg.keyword is None and not arg.star)


class _Builds(cst.CSTVisitor):
    """Where the module builds or subclasses the class ``short``: outside any class, inside one.

    Outside, only a construction bound to a name (``model = Net()``) or handed to a call
    (``DistributedDataParallel(Net())``) counts (``return Net()`` may build a block for a caller
    elsewhere); one in a top-level function counts as inside when a class body calls that function.
    """

    def __init__(self, short: str) -> None:
        self.short = short
        self.depth = 0
        self.function: str | None = None
        self.builders: set[str | None] = set()  # top-level functions (None: module body) that build it
        self.called_in_classes: set[str] = set()
        self.inside = False

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        if any(isinstance(b.value, cst.Name) and b.value.value == self.short for b in node.bases):
            self.inside = True
        self.depth += 1

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self.depth -= 1

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        if not self.depth and self.function is None:
            self.function = node.name.value

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        if not self.depth and self.function == original_node.name.value:
            self.function = None

    def _builds(self, expr: cst.BaseExpression) -> bool:
        return isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name) and expr.func.value == self.short

    def visit_Assign(self, node: cst.Assign) -> None:
        if not self.depth and self._builds(node.value) and all(isinstance(t.target, cst.Name) for t in node.targets):
            self.builders.add(self.function)

    def visit_Call(self, node: cst.Call) -> None:
        if self.depth:
            if isinstance(node.func, cst.Name):
                self.called_in_classes.add(node.func.value)
            self.inside = self.inside or self._builds(node)
        elif any(self._builds(arg.value) for arg in node.args):
            self.builders.add(self.function)


def _root_model(mod: ModuleInfo, short: str) -> bool:
    builds = _Builds(short)
    mod.module.visit(builds)
    if builds.inside or not builds.builders:
        return False
    return not any(fn in builds.called_in_classes for fn in builds.builders if fn is not None)


def check(site: SiteCall, ctx: RuleContext) -> Iterator[Hit]:
    if site.kind != "checkpoint" or not site.torch_api:
        return
    fn = site.ctx.fn
    if not isinstance(fn, cst.FunctionDef):
        return
    for node in body_nodes(fn):
        if not isinstance(node, cst.Return):
            continue
        for expr in _returned(node.value):
            if _is_loss_of(site, expr):
                yield Hit(site.call, MESSAGE.format(func=site.name, what="the loss"))
                return
            cls = site.ctx.cls
            if expr is site.call and fn.name.value == "forward" and cls is not None and _root_model(site.module, cls.short):
                yield Hit(site.call, MESSAGE.format(func=site.name, what=f"the output of the model {cls.short}"))
                return


VALID = [
    """
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))

    def forward(self, x):
        return checkpoint(self.mlp, x, use_reentrant=False)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block() for _ in range(4)])
        self.head = nn.Linear(8, 2)

    def forward(self, x, y):
        for blk in self.blocks:
            x = checkpoint(blk, x, use_reentrant=False)
        return F.cross_entropy(self.head(x), y)

model = Net()
""",
    """
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Linear(8, 8)

    def forward(self, x):
        return checkpoint(self.mlp, x, use_reentrant=False)

def make_block():
    blk = Block()
    return blk

def make_stem():
    return Block()

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([make_block() for _ in range(2)])
""",
]

INVALID = [
    """
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(8, 8) for _ in range(4)])
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        for blk in self.blocks:
            x = checkpoint(blk, x, use_reentrant=False)
        return checkpoint(self.head, x, use_reentrant=False), x  # expect: CKP503

    def loss(self, x, y):
        return F.cross_entropy(checkpoint(self.head, x, use_reentrant=False), y)  # expect: CKP503

def train():
    model = Net()
    return model
""",
]
