"""CKP104 out-argument-is-input: ``out=`` writes a result into a checkpoint input.

What: a torch call with ``out=x`` where ``x`` is an input of a checkpointed
callable or an alias/view of one (``torch.add(a, b, out=x)``).

Why it breaks checkpointing: ``out=`` overwrites the caller's tensor. The
recompute in backward starts from the overwritten value, so it computes
something else than the first forward did (or autograd raises).

How to fix: drop ``out=`` and bind the result: ``x = torch.add(a, b)``.

Example::

    def forward(self, a, b, buf):
        torch.add(a, b, out=buf)   # CKP104
        buf = torch.add(a, b)      # fine
"""

from __future__ import annotations

from typing import Iterator

from ckptlint.analysis.flow import CallEvent
from ckptlint.rules._common import written
from ckptlint.rules.base import Hit, RuleContext, describe

CODE = "CKP104"
NAME = "out-argument-is-input"
MESSAGE = "out={name} writes into {subject} {where}: the recompute in backward reads the overwritten tensor; bind the result instead: {name} = {func}(...)"
EVENT = "call"


def check(event: CallEvent, ctx: RuleContext) -> Iterator[Hit]:
    for keyword, value, root, _ in event.args:
        if keyword == "out" and root.kind == "input":
            name = written(value)
            func = written(event.call.func)
            yield Hit(event.call, MESSAGE.format(name=name, subject=describe(root, name), where=ctx.where, func=func))


VALID = [
    """
import torch
from torch.utils.checkpoint import checkpoint

def block(a, b):
    buf = torch.empty_like(a)
    torch.add(a, b, out=buf)
    return buf

def run(a, b):
    return checkpoint(block, a, b, use_reentrant=False)
""",
]

INVALID = [
    """
import torch
from torch.utils.checkpoint import checkpoint

def block(a, b):
    torch.add(a, b, out=a)  # expect: CKP104
    return a

def run(a, b):
    return checkpoint(block, a, b, use_reentrant=False)
""",
]
